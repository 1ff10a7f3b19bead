"""Failed runs on the boards, over a real nats-server and SQLite: a site's final JobFailed marks its
model x dataset cell failed (whose fault, a short reason, never the log tail) in every view, a
model that failed everywhere still appears, a later result replaces the failure, ``complete``
counts the benchmark's approved datasets only, and a rebuild from the streams gives the same boards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from test_aggregator_results import COMMITTEE, dead_letters, js, publish, result, setup_events
from waiting import eventually

from services.aggregator.app import create_service
from services.aggregator.boards import Boards
from services.aggregator.handlers import get_leaderboard
from services.aggregator.rebuild import rebuild
from services.aggregator.store import TABLES
from shared.commands import GetLeaderboard, SetSharingPolicy
from shared.db import Database, UnitOfWork
from shared.events import AssociationApproved, AssociationRejected, Event, JobFailed, ModelRegistered, SharingPolicy
from shared.service import ServiceHost, ask
from shared.settings import Settings

__all__ = ["js"]  # the fixture, shared with test_aggregator_results

SECRET = "PATIENT 4711 Jane Doe"  # what a log tail may hold: it must never reach a board
MODELER = "modeler"


@pytest.fixture
async def aggregator(nats_url: str, tmp_path: Path) -> AsyncIterator[ServiceHost]:
    host = create_service(Settings(nats_url=nats_url, state_dir=tmp_path, max_deliveries=3))
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


def failed(model: int, dataset: int, fault: str = "model", *, will_retry: bool = False, job: int = 1) -> JobFailed:
    return JobFailed(
        actor=f"site-{dataset}",
        site=f"site-{dataset}",
        job_id=job,
        kind="run",
        benchmark_id=1,
        model_id=model,
        dataset_id=dataset,
        failure=fault,
        will_retry=will_retry,
        reason="infer failed: exited with 1",
        log_tail=SECRET,
    )


def approved(kind: str, component: int) -> AssociationApproved:
    return AssociationApproved(
        actor=COMMITTEE, association_id=component, benchmark_id=1, kind=kind, component_id=component
    )


async def start(js: JetStreamContext, aggregator: ServiceHost, *extra: Event) -> None:
    """The benchmark (sites 10..12), models 3 and 4 of the modeler, everything approved, committee-only."""
    models = [
        ModelRegistered(actor=MODELER, model_id=m, name=f"model-{m}", owner=MODELER, container_id=4) for m in (3, 4)
    ]
    await publish(js, *setup_events(), *models, *extra)
    await publish(js, *(approved("dataset", d) for d in (10, 11, 12)), *(approved("model", m) for m in (2, 3, 4)))
    policy = SharingPolicy(visibility="committee")

    async def set_policy() -> bool:
        outcome = await ask(aggregator.broker, SetSharingPolicy(actor=COMMITTEE, benchmark_id=1, policy=policy), 5.0)
        return outcome.ok

    await eventually(set_policy, "the benchmark known, its policy set")


async def view(aggregator: ServiceHost, actor: str = COMMITTEE, is_admin: bool = False) -> dict:
    outcome = await ask(aggregator.broker, GetLeaderboard(actor=actor, benchmark_id=1, is_admin=is_admin), 5.0)
    assert outcome.ok, outcome
    return outcome.data


def rows(shown: dict) -> dict[str, dict]:
    return {row["model"]: row for row in shown.get("rows", [])}


async def settled(js: JetStreamContext) -> bool:
    for durable in ("aggregator-result-reported", "aggregator-job-failed", "aggregator-association-approved"):
        info = await js.consumer_info("SITES" if "approved" not in durable else "APPROVALS", durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def test_a_crash_at_one_site_shows_failed_and_incomplete_in_the_owners_view(
    aggregator: ServiceHost, js: JetStreamContext
) -> None:
    await start(js, aggregator)
    await publish(js, result(3, 10, 0.8), result(3, 11, 0.7), failed(3, 12))
    await publish(js, failed(2, 12, "infrastructure", will_retry=True))  # not final: nothing to show

    async def shown() -> bool:
        outcome = await ask(aggregator.broker, GetLeaderboard(actor=MODELER, benchmark_id=1), 5.0)
        yours = (outcome.data or {}).get("yours") or {}  # refused until a result of theirs is in
        return "model-3" in rows(yours) and bool(rows(yours)["model-3"].get("failed"))

    await eventually(shown, "the crash in the model owner's own view")
    await eventually(lambda: settled(js), "every event settled")
    own = await view(aggregator, MODELER)
    assert own["scope"] == "own"
    mine = rows(own["yours"])["model-3"]
    assert mine["complete"] is False
    assert mine["failed"] == {"site-12": {"fault": "model", "reason": "infer failed: exited with 1"}}
    assert mine["sites_failed"] == 1
    assert mine["per_dataset"] == {"site-10": 0.8, "site-11": 0.7, "site-12": None}

    committee = rows(await view(aggregator))
    assert committee["model-3"]["failed"]["site-12"]["fault"] == "model"
    assert committee["model-3"]["complete"] is False
    assert committee.get("model-2", {}).get("failed", {}) == {}  # a failure to be retried is not shown

    site_12 = rows((await view(aggregator, "site-12"))["yours"])  # the data owner's own view: its site only
    assert site_12["model-3"]["failed"] == {"site-12": {"fault": "model", "reason": "infer failed: exited with 1"}}
    assert site_12["model-3"]["complete"] is False

    for viewer in (COMMITTEE, MODELER, "site-12"):
        assert SECRET not in json.dumps(await view(aggregator, viewer))

    # Site 10 claiming a failure at site 11 (on its own subject): refused, never shown.
    forged = failed(2, 11)
    await js.publish("medperf.site.site-10.job.failed", forged.model_dump_json().encode())

    async def refused() -> bool:
        return any("published on 'site-10'" in letter.reason for letter in await dead_letters(js))

    await eventually(refused, "the forged failure dead-lettered")
    assert "model-2" not in rows(await view(aggregator))


async def test_a_model_that_failed_everywhere_appears_last_with_its_failed_cells(
    aggregator: ServiceHost, js: JetStreamContext
) -> None:
    await start(js, aggregator)
    await publish(js, result(1, 10, 0.5), result(3, 10, 0.9), result(3, 11, 0.6))
    await publish(js, *(failed(4, d, "metrics" if d == 12 else "model", job=d) for d in (10, 11, 12)))

    async def shown() -> bool:
        return len(rows(await view(aggregator)).get("model-4", {}).get("failed", {})) == 3

    await eventually(shown, "the model that failed everywhere on the committee's board")
    await eventually(lambda: settled(js), "every event settled")
    board = await view(aggregator)
    assert [row["model"] for row in board["rows"]] == ["model-3", "model-1", "model-4"]
    last = board["rows"][-1]
    assert last["rank"] is None and last["complete"] is False and last["sites_failed"] == 3
    assert last["metrics"]["auc"]["value"] is None
    assert last["failed"]["site-12"]["fault"] == "metrics"
    assert "withheld" not in last  # it has no value to withhold

    own = rows((await view(aggregator, MODELER))["yours"])
    assert own["model-4"]["sites_failed"] == 3 and own["model-4"]["rank"] is None

    # Shared with everyone as one number per model: the failures are counted, the sites not named.
    policy = SharingPolicy(visibility="public", granularity="aggregate")
    assert (await ask(aggregator.broker, SetSharingPolicy(actor=COMMITTEE, benchmark_id=1, policy=policy), 5.0)).ok
    public = rows(await view(aggregator, "stranger"))
    assert public["model-4"]["sites_failed"] == 3 and public["model-4"]["failed"] == {}
    assert public["model-3"]["sites_failed"] == 0
    # Per-site letters: the fault is shown, the reason in general words (it may name the site's data).
    policy = SharingPolicy(visibility="public", granularity="sites")
    assert (await ask(aggregator.broker, SetSharingPolicy(actor=COMMITTEE, benchmark_id=1, policy=policy), 5.0)).ok
    public = rows(await view(aggregator, "stranger"))
    assert set(public["model-4"]["failed"]) == {"Site A", "Site B", "Site C"}
    assert public["model-4"]["failed"]["Site C"] == {"fault": "metrics", "reason": "the metrics container failed"}


async def test_a_later_result_replaces_the_failure_and_a_revoked_dataset_no_longer_counts(
    aggregator: ServiceHost, js: JetStreamContext, nats_url: str, tmp_path: Path
) -> None:
    await start(js, aggregator)
    await publish(js, failed(3, 10), result(3, 11, 0.7), result(3, 12, 0.75))
    await eventually(lambda: _failed_at(aggregator, "model-3", {"site-10"}), "the failure shown")
    await publish(js, result(3, 10, 0.8))  # the site ran it again, and it worked
    await eventually(lambda: _failed_at(aggregator, "model-3", set()), "the failure replaced by the result")
    await eventually(lambda: settled(js), "every event settled")
    assert rows(await view(aggregator))["model-3"]["complete"] is True
    # A final failure of a later run does not take back a result the site signed: the result stays.
    await publish(js, failed(3, 11, job=9))
    await publish(js, result(1, 10, 0.6))
    await eventually(lambda: _count_rows(aggregator, 2), "model 1 on the board")
    await eventually(lambda: settled(js), "every event settled")
    assert rows(await view(aggregator))["model-3"]["per_dataset"]["site-11"] == 0.7
    assert await _failed_at(aggregator, "model-3", set())

    # Model 1 reported at site 10 only: incomplete while sites 11 and 12 are approved ...
    assert rows(await view(aggregator))["model-1"]["complete"] is False
    reject = [
        AssociationRejected(actor=COMMITTEE, association_id=d, benchmark_id=1, kind="dataset", component_id=d)
        for d in (11, 12)
    ]
    await publish(js, *reject)

    async def complete() -> bool:
        return rows(await view(aggregator))["model-1"]["complete"] is True

    await eventually(complete, "complete once the other datasets' approvals are revoked")

    # The streams alone give the same boards, for every role.
    await publish(js, failed(4, 10), failed(4, 11, "data", job=2))
    await eventually(lambda: _count_rows(aggregator, 3), "model 4 on the board")
    await eventually(lambda: settled(js), "every event settled")
    rebuilt_db = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    await rebuild(nats_url, rebuilt_db)
    db = Database(rebuilt_db)
    try:
        for actor, is_admin in ((COMMITTEE, False), (MODELER, False), ("site-10", False), ("root", True)):
            query = GetLeaderboard(actor=actor, is_admin=is_admin, benchmark_id=1)
            rebuilt = (await get_leaderboard(query, UnitOfWork(db, TABLES), Boards())).data
            assert rebuilt == await view(aggregator, actor, is_admin), actor
    finally:
        await db.dispose()


async def _failed_at(aggregator: ServiceHost, model: str, sites: set[str]) -> bool:
    return set(rows(await view(aggregator)).get(model, {}).get("failed", {})) == sites


async def _count_rows(aggregator: ServiceHost, n: int) -> bool:
    return len((await view(aggregator))["rows"]) == n
