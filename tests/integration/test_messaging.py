"""Consumer and command plumbing (``shared.messaging``, ``shared.service``, ``shared.broker``)
against a real nats-server with JetStream and a real SQLite file.

A tiny "probe" service consumes the real ``BenchmarkApproved`` events from the real APPROVALS
stream; what its handler does (succeed, fail for a while, always fail, crash after committing) is
chosen per benchmark id. Its effects and inbox are rows in SQLite, read back by the tests. Every
consumer test runs twice: with a transaction per message, and with the same handler applied in
batches (``ServiceHost.projects``: a transaction per batch, a savepoint per event).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from faststream.nats import NatsRouter
from history import stream_messages
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from sqlalchemy import Integer, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from waiting import DEADLINE, eventually

from shared.answering import Answers
from shared.broker import ensure_streams
from shared.commands import Command, Outcome
from shared.db import UnitOfWork, messaging_tables
from shared.events import BenchmarkApproved, DeadLetter
from shared.messaging import PermanentFailure, consume
from shared.service import ServiceHost, ask
from shared.settings import Settings
from shared.streams import ALL_STREAMS, deadletter_subject

MAX_DELIVERIES = 3
SUBJECT = BenchmarkApproved.subscription()
DURABLE = "probe-benchmark-approved"


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "probe")


class Effect(Base):
    """One row per applied event; a duplicate effect would be a second row for the same event."""

    __tablename__ = "probe_effects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    benchmark_id: Mapped[int] = mapped_column(Integer)


class Ping(Command):
    SERVICE, NAME = "probe", "ping"
    count: int
    explode: bool = False


@dataclass
class Probe:
    host: ServiceHost
    #: benchmark id -> what the handler does with that event
    modes: dict[int, str] = field(default_factory=dict)
    #: event id -> handler invocations
    calls: Counter[str] = field(default_factory=Counter)
    pings: int = 0

    async def effects(self) -> list[tuple[str, int]]:
        async with self.host.db.sessions() as session:
            rows = await session.execute(select(Effect.event_id, Effect.benchmark_id).order_by(Effect.id))
            return [(r.event_id, r.benchmark_id) for r in rows]

    async def inbox(self) -> set[str]:
        async with self.host.db.sessions() as session:
            return set(await session.scalars(select(TABLES.inbox.c.event_id)))


def create_probe(settings: Settings, batched: bool = False) -> Probe:
    host = ServiceHost("probe", settings, Base.metadata, TABLES)
    probe = Probe(host)
    router = NatsRouter()

    async def apply(event: BenchmarkApproved, uow: UnitOfWork) -> None:
        key = str(event.event_id)
        probe.calls[key] += 1
        attempt = probe.calls[key]
        mode = probe.modes.get(event.benchmark_id, "ok")
        async with uow:
            if not await uow.claim(event):
                return
            uow.session.add(Effect(event_id=key, benchmark_id=event.benchmark_id))
            await uow.session.flush()  # the effect is in the transaction when the failure strikes
            if mode == "fail-twice" and attempt <= 2:
                raise RuntimeError(f"transient failure #{attempt}")
            if mode == "always-fail":
                raise RuntimeError(f"boom #{attempt}")
            if mode == "permanent":
                raise PermanentFailure(f"benchmark {event.benchmark_id} is unknown here")
            await uow.commit()
        if mode == "crash-after-commit" and attempt == 1:
            raise RuntimeError("lost the ack after the commit")

    if batched:
        host.projects(router, BenchmarkApproved, apply)
    else:

        @router.subscriber(**consume(host.name, BenchmarkApproved))
        async def on_approved(event: BenchmarkApproved) -> None:
            await apply(event, host.uow())

    @host.answers(Ping)
    async def ping(command: Ping) -> Outcome:
        probe.pings += 1
        if command.explode:
            raise RuntimeError("the database is on fire")
        return Outcome.accepted(data={"count": command.count, "actor": command.actor})

    host.include(router)
    return probe


@pytest.fixture
def settings(nats_url: str, tmp_path: Path) -> Settings:
    return Settings(nats_url=nats_url, state_dir=tmp_path, max_deliveries=MAX_DELIVERIES)


@pytest.fixture
def js(nc: nats.NATS) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture(params=[False, True], ids=["one-by-one", "batched"])
def batched(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def probe(settings: Settings, batched: bool) -> AsyncIterator[Probe]:
    p = create_probe(settings, batched)
    await p.host.start()
    try:
        yield p
    finally:
        await p.host.stop()


def approved(benchmark_id: int) -> BenchmarkApproved:
    return BenchmarkApproved(actor="alice", benchmark_id=benchmark_id, name=f"bench-{benchmark_id}")


async def publish(js: JetStreamContext, body: bytes, msg_id: str | None = None) -> int:
    """Publish raw bytes on the real subject, as another service would; returns the stream sequence."""
    ack = await js.publish(SUBJECT, body, headers={"Nats-Msg-Id": msg_id or str(uuid.uuid4())})
    assert not ack.duplicate
    return ack.seq


async def drained(js: JetStreamContext) -> bool:
    """The probe's consumer has seen every message and holds none unacknowledged."""
    stream = await js.stream_info("APPROVALS")
    info = await js.consumer_info("APPROVALS", DURABLE)
    return (
        info.num_pending == 0
        and info.num_ack_pending == 0
        and info.ack_floor is not None
        and info.ack_floor.stream_seq == stream.state.last_seq
    )


async def dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    letters = []
    for msg in await stream_messages(js, "DEADLETTER"):
        assert msg.subject == deadletter_subject("probe")
        letters.append(DeadLetter.model_validate_json(msg.data))
    return letters


async def wait_dead_letters(js: JetStreamContext, n: int) -> list[DeadLetter]:
    async def enough() -> bool:
        return (await js.stream_info("DEADLETTER")).state.messages >= n

    await eventually(enough, f"{n} dead letter(s)")
    return await dead_letters(js)


# --- idempotent consumer ----------------------------------------------------------------------


async def test_same_event_delivered_twice_is_applied_once(probe: Probe, js: JetStreamContext) -> None:
    event = approved(1)
    body = event.model_dump_json().encode()
    # Different Nats-Msg-Id headers get past the stream's duplicate window: two real deliveries.
    await publish(js, body, msg_id="first")
    await publish(js, body, msg_id="second")

    async def both_handled() -> bool:
        return probe.calls[str(event.event_id)] >= 2 and await drained(js)

    await eventually(both_handled, "both copies handled and acknowledged")
    assert await probe.effects() == [(str(event.event_id), 1)]
    assert await probe.inbox() == {str(event.event_id)}
    assert await dead_letters(js) == []


async def test_duplicates_handled_concurrently_in_one_batch_are_applied_once(
    settings: Settings, js: JetStreamContext, batched: bool
) -> None:
    """Both copies are published before the consumer starts, so they arrive in one fetched batch,
    whose messages FastStream handles concurrently: the inbox claims race, and one must lose."""
    await ensure_streams(settings.nats_url or "")
    events = [approved(200 + i) for i in range(8)]
    for event in events:
        for copy in ("a", "b"):
            await publish(js, event.model_dump_json().encode(), msg_id=f"{event.event_id}-{copy}")

    probe = create_probe(settings, batched)
    await probe.host.start()
    try:
        await eventually(lambda: drained(js), "every copy handled and acknowledged")
        assert sorted(await probe.effects(), key=lambda e: e[1]) == [(str(e.event_id), e.benchmark_id) for e in events]
        assert await dead_letters(js) == []
    finally:
        await probe.host.stop()


async def test_same_nats_msg_id_is_dropped_by_the_stream(probe: Probe, js: JetStreamContext) -> None:
    event = approved(2)
    body = event.model_dump_json().encode()
    first = await js.publish(SUBJECT, body, headers={"Nats-Msg-Id": str(event.event_id)})
    again = await js.publish(SUBJECT, body, headers={"Nats-Msg-Id": str(event.event_id)})
    assert again.duplicate and again.seq == first.seq
    await eventually(lambda: drained(js), "the consumer to drain")
    assert probe.calls[str(event.event_id)] == 1
    assert await probe.effects() == [(str(event.event_id), 2)]


async def test_events_published_while_the_consumer_is_down_are_handled_after_restart(
    settings: Settings, js: JetStreamContext, batched: bool
) -> None:
    first = create_probe(settings, batched)
    await first.host.start()
    before = approved(20)
    await publish(js, before.model_dump_json().encode())
    await eventually(lambda: drained(js), "the first event handled")
    await first.host.stop()

    during = [approved(21), approved(22)]
    for event in during:
        await publish(js, event.model_dump_json().encode())
    await publish(js, before.model_dump_json().encode())  # and an old one, redelivered by its producer

    second = create_probe(settings, batched)
    await second.host.start()
    try:
        await eventually(lambda: drained(js), "the durable consumer to catch up")
        # A fetched batch is handled concurrently, so only the set is promised, not the order.
        assert sorted(await second.effects(), key=lambda e: e[1]) == [
            (str(e.event_id), e.benchmark_id) for e in (before, *during)
        ]
        assert second.calls[str(before.event_id)] == 1  # seen, and skipped by the inbox
    finally:
        await second.host.stop()


async def test_replicas_sharing_a_consumer_and_a_database_apply_each_event_once(
    settings: Settings, js: JetStreamContext, batched: bool
) -> None:
    replicas = [create_probe(settings, batched) for _ in range(2)]
    for replica in replicas:  # one after the other: create_all is not meant to race
        await replica.host.start()
    try:
        events = [approved(100 + i) for i in range(25)]
        for copy in ("a", "b"):
            for event in events:
                await publish(js, event.model_dump_json().encode(), msg_id=f"{event.event_id}-{copy}")

        async def all_handled() -> bool:
            return await drained(js) and len(await replicas[0].effects()) >= len(events)

        await eventually(all_handled, "both copies of every event handled")
        effects = await replicas[0].effects()
        assert sorted(effects, key=lambda e: e[1]) == [(str(e.event_id), e.benchmark_id) for e in events]
        assert await dead_letters(js) == []
        assert sum(sum(r.calls.values()) for r in replicas) >= 2 * len(events)
    finally:
        for replica in replicas:
            await replica.host.stop()


# --- malformed events -------------------------------------------------------------------------


async def test_malformed_events_are_dead_lettered_at_once_and_the_consumer_goes_on(
    probe: Probe, js: JetStreamContext, batched: bool
) -> None:
    not_json = b'{"type": "benchmark.approved", "actor": '
    missing = b'{"type": "benchmark.approved", "actor": "alice", "name": "bench-3"}'  # no benchmark_id
    valid = approved(4)
    seq_not_json = await publish(js, not_json)
    seq_missing = await publish(js, missing)
    await publish(js, valid.model_dump_json().encode())

    letters = await wait_dead_letters(js, 2)
    await eventually(lambda: drained(js), "the consumer to drain")

    by_seq = {letter.stream_sequence: letter for letter in letters}
    assert set(by_seq) == {seq_not_json, seq_missing}
    for letter, body in ((by_seq[seq_not_json], not_json), (by_seq[seq_missing], missing)):
        assert letter.service == "probe"
        assert letter.consumer == DURABLE
        assert letter.subject == SUBJECT
        assert letter.deliveries == 1  # dead-lettered at once, not retried
        assert letter.payload == body.decode()
        assert letter.reason.startswith("rejected: malformed message: ")
    # FastStream hands undecodable bytes to the handler as-is, so pydantic reports a non-object
    # body; a batch decodes each payload as JSON itself.
    assert ("Invalid JSON" if batched else "valid dictionary") in by_seq[seq_not_json].reason
    assert "benchmark_id" in by_seq[seq_missing].reason
    assert "Field required" in by_seq[seq_missing].reason

    # The handler never saw the malformed ones; only the valid event left any trace.
    assert sum(probe.calls.values()) == 1
    assert await probe.effects() == [(str(valid.event_id), 4)]
    assert await probe.inbox() == {str(valid.event_id)}


async def test_event_that_can_never_succeed_is_dead_lettered_without_retries(
    probe: Probe, js: JetStreamContext
) -> None:
    event = approved(5)
    probe.modes[5] = "permanent"
    await publish(js, event.model_dump_json().encode())
    [letter] = await wait_dead_letters(js, 1)
    await eventually(lambda: drained(js), "the consumer to drain")
    assert letter.deliveries == 1
    assert "PermanentFailure" in letter.reason and "benchmark 5 is unknown here" in letter.reason
    assert probe.calls[str(event.event_id)] == 1
    assert await probe.effects() == []  # the flushed effect was rolled back
    assert await probe.inbox() == set()


# --- retries ----------------------------------------------------------------------------------


async def test_failures_are_retried_then_applied_once_or_dead_lettered(probe: Probe, js: JetStreamContext) -> None:
    flaky, doomed, crashy = approved(10), approved(11), approved(12)
    probe.modes.update({10: "fail-twice", 11: "always-fail", 12: "crash-after-commit"})
    for event in (flaky, doomed, crashy):
        await publish(js, event.model_dump_json().encode())

    [letter] = await wait_dead_letters(js, 1)

    async def settled() -> bool:
        return probe.calls[str(flaky.event_id)] == 3 and probe.calls[str(crashy.event_id)] == 2 and await drained(js)

    await eventually(settled, "the flaky and crashing events to be redelivered and acknowledged")

    # fail-twice: the two failed attempts left nothing; the third applied once and was acked.
    # crash-after-commit: the redelivery found the event in the inbox and did not apply it again.
    effects = await probe.effects()
    assert sorted(effects, key=lambda e: e[1]) == [(str(flaky.event_id), 10), (str(crashy.event_id), 12)]
    assert await probe.inbox() == {str(flaky.event_id), str(crashy.event_id)}

    # always-fail: dead-lettered after exactly max_deliveries, with the last error.
    assert letter.stream_sequence == 2
    assert letter.deliveries == MAX_DELIVERIES
    assert f"failed {MAX_DELIVERIES} times" in letter.reason
    assert f"boom #{MAX_DELIVERIES}" in letter.reason
    assert letter.payload == doomed.model_dump_json()

    # ... and terminated: not redelivered afterwards (the next backoff would have been 2 s).
    await asyncio.sleep(2.5)
    assert probe.calls[str(doomed.event_id)] == MAX_DELIVERIES
    assert await drained(js)
    assert len(await dead_letters(js)) == 1


async def test_an_event_failing_in_a_batch_is_refused_alone(settings: Settings, js: JetStreamContext) -> None:
    """Published before the consumer starts, the events arrive in one batch, one transaction: the
    failing ones roll back to their own savepoints, and the others' effects commit all the same."""
    await ensure_streams(settings.nats_url or "")
    events = [approved(40 + i) for i in range(6)]
    for event in events:
        await publish(js, event.model_dump_json().encode())
    await publish(js, events[0].model_dump_json().encode())  # a redelivery within the batch
    probe = create_probe(settings, batched=True)
    probe.modes.update({41: "permanent", 43: "fail-twice"})
    await probe.host.start()
    try:
        [letter] = await wait_dead_letters(js, 1)

        async def settled() -> bool:
            return probe.calls[str(events[3].event_id)] == 3 and await drained(js)

        await eventually(settled, "the flaky event retried until applied")
        applied = [e for e in events if e.benchmark_id != 41]
        assert sorted(await probe.effects(), key=lambda e: e[1]) == [(str(e.event_id), e.benchmark_id) for e in applied]
        assert await probe.inbox() == {str(e.event_id) for e in applied}
        assert "benchmark 41 is unknown here" in letter.reason and letter.deliveries == 1
        assert probe.calls[str(events[0].event_id)] == 2  # the second copy met the first one's inbox row
    finally:
        await probe.host.stop()


async def test_message_whose_earlier_deliveries_never_answered_is_dead_lettered_unhandled(
    settings: Settings, js: JetStreamContext, batched: bool
) -> None:
    """Deliveries that never came back (a worker died mid-handling) count too: a message arriving
    for the (max_deliveries + 1)-th time is parked without running the handler again."""
    first = create_probe(settings, batched)
    await first.host.start()  # creates the durable consumer
    await first.host.stop()

    event = approved(30)
    await publish(js, event.model_dump_json().encode())
    lost_worker = await js.pull_subscribe_bind(durable=DURABLE, stream="APPROVALS")
    for _ in range(MAX_DELIVERIES):  # each delivery taken and given back unanswered
        [msg] = await lost_worker.fetch(1, timeout=DEADLINE)
        await msg.nak()
    await lost_worker.unsubscribe()

    second = create_probe(settings, batched)
    await second.host.start()
    try:
        [letter] = await wait_dead_letters(js, 1)
        await eventually(lambda: drained(js), "the consumer to drain")
        assert letter.deliveries == MAX_DELIVERIES + 1
        assert letter.reason == f"gave up after {MAX_DELIVERIES} deliveries without an answer"
        assert second.calls[str(event.event_id)] == 0
        assert await second.effects() == []
    finally:
        await second.host.stop()


# --- commands ---------------------------------------------------------------------------------


async def test_commands_are_always_answered(probe: Probe, nc: nats.NATS) -> None:
    subject = Ping.subject()

    ok = await ask(probe.host.broker, Ping(actor="alice", count=3), timeout=DEADLINE)
    assert ok == Outcome.accepted(data={"count": 3, "actor": "alice"})

    # Missing field: refused as invalid, naming the field.
    reply = await nc.request(subject, b'{"actor": "alice"}', timeout=DEADLINE)
    missing = Outcome.model_validate_json(reply.data)
    assert not missing.ok and missing.code == "invalid"
    assert missing.reason is not None and "count" in missing.reason

    # Wrong type: refused as invalid, naming the field.
    reply = await nc.request(subject, b'{"actor": "alice", "count": "many"}', timeout=DEADLINE)
    wrong = Outcome.model_validate_json(reply.data)
    assert not wrong.ok and wrong.code == "invalid"
    assert wrong.reason is not None and "count" in wrong.reason

    # Not JSON at all: refused as invalid.
    reply = await nc.request(subject, b"{not json", timeout=DEADLINE)
    garbage = Outcome.model_validate_json(reply.data)
    assert not garbage.ok and garbage.code == "invalid"

    # The handler crashes: answered as an internal fault (HTTP 500), promptly, instead of a timeout.
    started = time.monotonic()
    crashed = await ask(probe.host.broker, Ping(actor="alice", count=1, explode=True), timeout=DEADLINE)
    assert time.monotonic() - started < 2.0
    assert not crashed.ok and crashed.code == "internal"
    assert crashed.reason is not None and "fire" not in crashed.reason  # internals stay in the log

    # And the service still answers afterwards.
    assert (await ask(probe.host.broker, Ping(actor="bob", count=4), timeout=DEADLINE)).ok


async def test_answers_with_workers_handle_commands_at_once_and_finish_them_before_stopping(nc: nats.NATS) -> None:
    """With several workers (PostgreSQL), commands are answered concurrently; stopping takes no
    new command but answers the ones already taken."""
    answers = Answers("probe", workers=3)
    in_flight, release = asyncio.Semaphore(0), asyncio.Event()

    @answers(Ping)
    async def slow(command: Ping) -> Outcome:
        in_flight.release()
        await release.wait()
        return Outcome.accepted(data={"count": command.count})

    await answers.start(nc)
    asks = [
        asyncio.create_task(
            nc.request(Ping.subject(), Ping(actor="a", count=i).model_dump_json().encode(), timeout=DEADLINE)
        )
        for i in range(3)
    ]
    for _ in range(3):  # all three are being handled at the same time
        await asyncio.wait_for(in_flight.acquire(), DEADLINE)
    stopping = asyncio.create_task(answers.stop())
    await asyncio.sleep(0.1)
    assert not stopping.done()  # it waits for the three it took
    release.set()
    await asyncio.wait_for(stopping, DEADLINE)
    replies = [Outcome.model_validate_json((await a).data) for a in asks]
    assert sorted(r.data["count"] for r in replies) == [0, 1, 2]
    with pytest.raises(nats.errors.NoRespondersError):  # and it took no more
        await nc.request(Ping.subject(), Ping(actor="a", count=9).model_dump_json().encode(), timeout=1)


# --- streams ----------------------------------------------------------------------------------


def _comparable(config: StreamConfig) -> dict[str, object]:
    return {k: v for k, v in config.as_dict().items() if k not in {"created"}}


async def test_ensure_streams_creates_every_stream_and_is_idempotent(nats_url: str, js: JetStreamContext) -> None:
    await ensure_streams(nats_url)
    first = {s.name: _comparable((await js.stream_info(s.name)).config) for s in ALL_STREAMS}
    assert set(first) == {s.name for s in ALL_STREAMS}
    assert {info.config.name for info in await js.streams_info()} == set(first)
    for stream in ALL_STREAMS:
        config = (await js.stream_info(stream.name)).config
        assert (config.subjects or []) == list(stream.subjects)  # FEED captures none: it copies sources
        assert config.duplicate_window == 120.0
        assert RetentionPolicy(config.retention) is RetentionPolicy.LIMITS
        assert StorageType(config.storage) is StorageType.FILE

    ack = await js.publish("medperf.approvals.benchmark.approved", b"{}")
    await ensure_streams(nats_url)
    second = {s.name: _comparable((await js.stream_info(s.name)).config) for s in ALL_STREAMS}
    assert second == first
    assert (await js.stream_info("APPROVALS")).state.messages == 1  # re-declaring keeps the history
    assert ack.seq == 1


async def test_ensure_streams_converges_a_drifted_stream(nats_url: str, js: JetStreamContext) -> None:
    await ensure_streams(nats_url)
    declared = _comparable((await js.stream_info("SITES")).config)
    drifted = (await js.stream_info("SITES")).config
    drifted.description = "edited by hand"
    drifted.duplicate_window = 5.0
    await js.update_stream(drifted)
    assert (await js.stream_info("SITES")).config.duplicate_window == 5.0

    await ensure_streams(nats_url)
    assert _comparable((await js.stream_info("SITES")).config) == declared
