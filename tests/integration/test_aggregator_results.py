"""The aggregator's result path over a real nats-server and SQLite: results are taken in batches
(one transaction each), yet every message is settled on its own: the good ones applied once, a
malformed or incomplete one dead-lettered with its reason, one that arrives early retried. The
boards are kept in memory and follow the database's clock, including edits that turn results
stale."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from history import stream_messages
from nats.js import JetStreamContext
from waiting import eventually

from services.aggregator.app import create_service
from shared.broker import ensure_streams
from shared.commands import GetLeaderboard
from shared.containers import ContainerSpec, HostedFile
from shared.events import (
    BenchmarkApproved,
    BenchmarkSubmitted,
    ContainerRegistered,
    DatasetRegistered,
    DeadLetter,
    EntityEdited,
    Event,
    FieldChange,
    MetricSpec,
    ModelRegistered,
    ResultReported,
    SiteKeyRegistered,
)
from shared.service import ServiceHost
from shared.settings import Settings
from shared.signing import SiteKey

OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64
COMMITTEE = "committee"
#: Each site's signing key (the agent's, in real life); setup registers them all.
KEYS = {d: SiteKey.generate() for d in (10, 11, 12)}


def spec(digest: str) -> ContainerSpec:
    return ContainerSpec.model_validate(
        {"image": "localhost/metrics:1", "image_digest": digest, "tasks": {"evaluate": {"command": ["run"]}}}
    )


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    await ensure_streams(nats_url)
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture
async def aggregator(nats_url: str, tmp_path: Path) -> AsyncIterator[ServiceHost]:
    host = create_service(Settings(nats_url=nats_url, state_dir=tmp_path, max_deliveries=3))
    await host.start()
    try:
        yield host
    finally:
        await host.stop()


async def publish(js: JetStreamContext, *events: Event) -> None:
    for event in events:
        await js.publish(event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)})


def sign(event: ResultReported) -> ResultReported:
    """Signed by the key of the site (site-<dataset>) that produced it."""
    return KEYS[event.dataset_id].sign_result(event)


def result(model: int, dataset: int, auc: float, digest: str = OLD, **extra: object) -> ResultReported:
    return sign(
        ResultReported(
            actor=f"site-{dataset}",
            site=f"site-{dataset}",
            benchmark_id=1,
            model_id=model,
            dataset_id=dataset,
            metrics={"auc": auc, **extra},
            container_digests={"model": "sha256:" + "9" * 64, "metrics": digest},
            dataset_hash=f"p{dataset}",
        )
    )


async def setup(js: JetStreamContext) -> None:
    await publish(js, *setup_events())


def setup_events() -> list[Event]:
    """Two metrics containers, the benchmark, models 1 and 2, the datasets of sites 10..12 and their keys."""
    return [
        ContainerRegistered(actor=COMMITTEE, container_id=2, name="metrics", owner=COMMITTEE, spec=spec(OLD)),
        ContainerRegistered(actor=COMMITTEE, container_id=3, name="metrics-v2", owner=COMMITTEE, spec=spec(NEW)),
        BenchmarkSubmitted(
            actor=COMMITTEE,
            benchmark_id=1,
            name="bench",
            description="",
            owner=COMMITTEE,
            data_preparator_id=1,
            reference_model_id=1,
            metrics_container_id=2,
            demo_dataset=HostedFile(source="https://example.org/demo.tgz", sha256="c" * 64),
            metrics=[MetricSpec(name="auc")],
            primary_metric="auc",
        ),
        BenchmarkApproved(actor="admin", benchmark_id=1, name="bench"),  # shown beyond its committee
        *(ModelRegistered(actor="owner", model_id=m, name=f"model-{m}", owner="owner", container_id=4) for m in (1, 2)),
        *(
            DatasetRegistered(
                actor=f"site-{d}",
                dataset_id=d,
                name="data",
                owner=f"site-{d}",
                site=f"site-{d}",
                data_preparator_id=1,
                input_hash=f"i{d}",
                prepared_hash=f"p{d}",
                statistics={"cases": 50},
            )
            for d in (10, 11, 12)
        ),
        *(
            SiteKeyRegistered(
                actor=f"site-{d}", site=f"site-{d}", key_id=k.key_id, public_key=k.public_key, owner=f"site-{d}"
            )
            for d, k in KEYS.items()
        ),
    ]


async def board(aggregator: ServiceHost, **query: object) -> dict:
    from shared.service import ask

    outcome = await ask(aggregator.broker, GetLeaderboard(actor=COMMITTEE, benchmark_id=1, **query), 5.0)
    assert outcome.ok, outcome
    return outcome.data


async def dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(m.data) for m in await stream_messages(js, "DEADLETTER")]


def cells(shown: dict) -> dict[tuple[str, str], float]:
    return {
        (row["model"], site): value
        for row in shown["rows"]
        for site, value in row["per_dataset"].items()
        if value is not None
    }


async def test_a_burst_of_results_is_settled_message_by_message(aggregator: ServiceHost, js: JetStreamContext) -> None:
    await setup(js)
    newer = result(1, 10, 0.91)
    older = newer.model_copy(update={"event_id": uuid.uuid4(), "metrics": {"auc": 0.10}})
    older = sign(older.model_copy(update={"occurred_at": newer.occurred_at.replace(year=newer.occurred_at.year - 1)}))
    good = [newer, result(1, 11, 0.81), result(2, 10, 0.70), result(2, 11, 0.72), result(2, 12, 0.74)]
    await publish(js, *good)
    await publish(js, older)  # arrives after the newer result for the same cell: must not replace it
    # The same event again under another message id (past JetStream's dedupe): applied once.
    await js.publish(newer.subject, newer.model_dump_json().encode(), headers={"Nats-Msg-Id": "again"})
    await js.publish("medperf.site.site-12.result.reported", b"{not json", headers={"Nats-Msg-Id": "broken"})
    await publish(js, sign(result(1, 12, 0.5).model_copy(update={"metrics": {"f1": 0.5}})))  # lacks the declared auc
    nan = json.loads(result(1, 12, 0.5).model_dump_json())
    nan["metrics"]["auc"] = "NaN"
    await js.publish("medperf.site.site-12.result.reported", json.dumps(nan).encode(), headers={"Nats-Msg-Id": "nan"})

    async def settled() -> bool:
        info = await js.consumer_info("SITES", "aggregator-result-reported")
        return info.num_pending == 0 and info.num_ack_pending == 0 and len(await dead_letters(js)) >= 3

    await eventually(settled, "every result acknowledged or dead-lettered")
    shown = await board(aggregator)
    assert cells(shown) == {
        ("model-1", "site-10"): 0.91,
        ("model-1", "site-11"): 0.81,
        ("model-2", "site-10"): 0.70,
        ("model-2", "site-11"): 0.72,
        ("model-2", "site-12"): 0.74,
    }
    reasons = sorted(letter.reason for letter in await dead_letters(js))
    assert len(reasons) == 3, reasons
    assert any("lacks the benchmark's declared metric(s) auc" in r for r in reasons)
    assert any("only finite numbers" in r for r in reasons)
    assert any("malformed message" in r or "JSON" in r for r in reasons)
    assert all(r.startswith("rejected: ") for r in reasons)  # refused at once, not after retries


async def test_a_result_before_its_benchmark_waits_for_it(aggregator: ServiceHost, js: JetStreamContext) -> None:
    early = result(1, 10, 0.9)
    await publish(js, early)
    await setup(js)

    async def shown() -> bool:
        try:
            return cells(await board(aggregator)) == {("model-1", "site-10"): 0.9}
        except AssertionError:  # the benchmark itself may not be known yet
            return False

    await eventually(shown, "the early result on the board once its benchmark is known")
    assert await dead_letters(js) == []


async def test_results_of_a_replaced_metrics_container_are_stale_until_scored_again(
    aggregator: ServiceHost, js: JetStreamContext
) -> None:
    await setup(js)
    await publish(js, result(1, 10, 0.9), result(2, 10, 0.8))
    await eventually(lambda: _count(aggregator, 2), "two results")
    before = await board(aggregator)
    assert before["metrics_container_digest"] == OLD
    assert [row["stale"] for row in before["rows"]] == [False, False]

    change = {"metrics_container_id": FieldChange(old=2, new=3)}
    await publish(js, EntityEdited(actor=COMMITTEE, entity="benchmark", entity_id=1, changes=change))

    async def stale() -> bool:
        shown = await board(aggregator)
        return shown.get("metrics_container_digest") == NEW and all(row["stale"] for row in shown["rows"])

    await eventually(stale, "both results stale under the new metrics container")
    await publish(js, result(1, 10, 0.95, digest=NEW))  # the site scores model 1 again

    async def rescored() -> bool:
        rows = {row["model"]: row for row in (await board(aggregator))["rows"]}
        return not rows["model-1"]["stale"] and rows["model-2"]["stale"]

    await eventually(rescored, "model 1 current again, model 2 still stale")


async def test_pages_of_a_board(aggregator: ServiceHost, js: JetStreamContext) -> None:
    await setup(js)
    await publish(
        js, *(ModelRegistered(actor="o", model_id=m, name=f"model-{m}", owner="o", container_id=4) for m in range(3, 8))
    )
    await publish(js, *(result(m, 10, m / 10) for m in range(1, 8)))
    await eventually(lambda: _count(aggregator, 7), "seven results")
    first = await board(aggregator, limit=3)
    second = await board(aggregator, limit=3, offset=3)
    last = await board(aggregator, limit=3, offset=6)
    assert first["total_rows"] == second["total_rows"] == last["total_rows"] == 7
    ranks = [row["rank"] for page in (first, second, last) for row in page["rows"]]
    assert ranks == list(range(1, 8))
    assert [row["model"] for row in first["rows"]] == ["model-7", "model-6", "model-5"]


async def _count(aggregator: ServiceHost, n: int) -> bool:
    try:
        return len(cells(await board(aggregator))) == n
    except AssertionError:
        return False


async def test_results_that_trickle_in_are_all_applied_without_waiting_for_redelivery(
    aggregator: ServiceHost, js: JetStreamContext
) -> None:
    """A lone result waits for no batch to fill, and none is dropped by the pull loop between
    fetches (they would only come back after the 60 s ack wait)."""
    await setup(js)
    for i in range(120):
        await publish(js, result(1 + i % 2, 10 + i % 3, i / 1000))
        await asyncio.sleep(0.005)

    async def settled() -> bool:
        info = await js.consumer_info("SITES", "aggregator-result-reported")
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(settled, "every trickled result acknowledged", timeout=20)
    assert (await js.consumer_info("SITES", "aggregator-result-reported")).num_redelivered == 0
    assert len(cells(await board(aggregator))) == 6
