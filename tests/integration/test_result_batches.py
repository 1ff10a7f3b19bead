"""A batch of results through the aggregator's handler on a real SQLite database, with the
signatures checked in the aggregator's worker process: each message is judged on its own, a
forged copy claiming a genuine result's event id cannot shut the genuine one out, and an
encoded leaderboard answer is kept only until the board changes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from test_aggregator_results import COMMITTEE, cells, result, setup_events

from services.aggregator import handlers, trust
from services.aggregator.boards import Boards
from services.aggregator.store import TABLES, Base
from shared.commands import GetLeaderboard, Outcome
from shared.db import Database, UnitOfWork
from shared.events import ResultReported


@pytest.fixture
async def uow(tmp_path: Path) -> AsyncIterator[Callable[[], UnitOfWork]]:
    db = Database(f"sqlite:///{tmp_path / 'aggregator.db'}")
    await db.create_all(Base.metadata)
    try:
        for event in setup_events():
            await handlers.PROJECTIONS[type(event)](event, UnitOfWork(db, TABLES))
        yield lambda: UnitOfWork(db, TABLES)
    finally:
        await db.dispose()


@pytest.fixture
async def signatures() -> AsyncIterator[trust.Signatures]:
    checker = trust.Signatures()
    try:
        yield checker
    finally:
        await checker.stop()


def delivered(*events: ResultReported) -> list[tuple[str, bytes]]:
    return [(event.subject, event.model_dump_json().encode()) for event in events]


async def test_each_result_in_a_batch_is_judged_alone(
    uow: Callable[[], UnitOfWork], signatures: trust.Signatures
) -> None:
    genuine = result(1, 10, 0.91)
    forged = genuine.model_copy(update={"metrics": {"auc": 0.99}})  # its id, changed after signing
    other = result(2, 11, 0.42)
    wrong_subject = result(1, 12, 0.5)
    batch = delivered(forged, genuine, genuine, other, wrong_subject)
    batch[4] = (other.subject, batch[4][1])  # site 12's result on site 11's subject

    refused = await handlers.record_results(batch, uow(), signatures)

    assert sorted(refused) == [0, 4], refused
    assert "bad signature" in str(refused[0]) and "published on 'site-11'" in str(refused[4])
    shown = await handlers.get_leaderboard(GetLeaderboard(actor=COMMITTEE, benchmark_id=1), uow(), Boards())
    assert cells(shown.data) == {("model-1", "site-10"): 0.91, ("model-2", "site-11"): 0.42}
    # The same batch again (a redelivery): an id applied before has no effect, forged or not.
    assert sorted(await handlers.record_results(batch, uow(), signatures)) == [4]
    shown = await handlers.get_leaderboard(GetLeaderboard(actor=COMMITTEE, benchmark_id=1), uow(), Boards())
    assert cells(shown.data) == {("model-1", "site-10"): 0.91, ("model-2", "site-11"): 0.42}


async def test_an_encoded_answer_is_kept_until_the_board_changes(
    uow: Callable[[], UnitOfWork], signatures: trust.Signatures
) -> None:
    boards = Boards()
    query = GetLeaderboard(actor=COMMITTEE, benchmark_id=1)
    assert not await handlers.record_results(delivered(result(1, 10, 0.91)), uow(), signatures)
    first = await handlers.leaderboard_reply(query, uow(), boards)
    assert await handlers.leaderboard_reply(query, uow(), boards) is first  # kept, not encoded again

    stranger = Outcome.model_validate_json(
        await handlers.leaderboard_reply(query.model_copy(update={"actor": "stranger"}), uow(), boards)
    )
    assert stranger.code == "forbidden"  # another viewer gets their own answer, not the committee's

    assert not await handlers.record_results(delivered(result(2, 11, 0.42)), uow(), signatures)
    again = Outcome.model_validate_json(await handlers.leaderboard_reply(query, uow(), boards))
    assert cells(again.data) == {("model-1", "site-10"): 0.91, ("model-2", "site-11"): 0.42}
