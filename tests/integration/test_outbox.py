"""The transactional outbox and its relay, against a real nats-server and a real SQLite file.

A tiny "probe" service records decisions and emits ``BenchmarkApproved`` for each; nothing is
mocked: rows go to SQLite, events to the real APPROVALS stream, and the tests read both back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from sqlalchemy import Integer, MetaData, String, func, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from waiting import DEADLINE, eventually

from shared.broker import EmbeddedNats, ensure_streams
from shared.db import Database, UnitOfWork, messaging_tables
from shared.events import BenchmarkApproved
from shared.service import ServiceHost
from shared.settings import Settings

STREAM = "APPROVALS"


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "probe")


class Decision(Base):
    __tablename__ = "probe_decisions"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))


def approved(benchmark_id: int) -> BenchmarkApproved:
    return BenchmarkApproved(actor="alice", benchmark_id=benchmark_id, name=f"bench-{benchmark_id}")


async def stream_count(js: JetStreamContext, stream: str = STREAM) -> int:
    return (await js.stream_info(stream)).state.messages


async def count(db: Database, table: object) -> int:
    async with db.sessions() as session:
        return await session.scalar(select(func.count()).select_from(table))  # type: ignore[arg-type]


@pytest.fixture
def settings(nats_url: str, tmp_path: Path) -> Settings:
    return Settings(nats_url=nats_url, state_dir=tmp_path, max_deliveries=3)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture
async def host(settings: Settings) -> AsyncIterator[ServiceHost]:
    h = ServiceHost("probe", settings, Base.metadata, TABLES)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


async def test_rolled_back_unit_of_work_leaves_nothing_and_publishes_nothing(
    host: ServiceHost, js: JetStreamContext
) -> None:
    # Left without commit.
    async with host.uow() as uow:
        uow.session.add(Decision(benchmark_id=1, name="bench-1"))
        uow.emit(approved(1))
        await uow.session.flush()  # the row really reached the database inside the transaction

    # Left by an exception after the event was emitted.
    with pytest.raises(RuntimeError, match="handler blew up"):
        async with host.uow() as uow:
            uow.session.add(Decision(benchmark_id=2, name="bench-2"))
            uow.emit(approved(2))
            await uow.session.flush()
            raise RuntimeError("handler blew up")

    assert await count(host.db, Decision.__table__) == 0
    assert await count(host.db, TABLES.outbox) == 0
    assert await host.relay.publish_pending() == 0
    await asyncio.sleep(0.3)  # give a (wrongly) woken relay the time to publish something
    assert await stream_count(js) == 0


async def test_committed_unit_of_work_publishes_exactly_one_message_keyed_by_event_id(
    host: ServiceHost, js: JetStreamContext
) -> None:
    event = approved(7)
    async with host.uow() as uow:
        uow.session.add(Decision(benchmark_id=7, name="bench-7"))
        uow.emit(event)
        await uow.commit()

    async def published() -> bool:
        return await stream_count(js) >= 1

    await eventually(published, "the committed event on the APPROVALS stream")
    msg = await js.get_msg(STREAM, 1)
    assert msg.subject == "medperf.approvals.benchmark.approved"
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == str(event.event_id)
    assert BenchmarkApproved.model_validate_json(msg.data) == event

    async def marked() -> bool:
        async with host.db.sessions() as session:
            return (await session.scalar(select(TABLES.outbox.c.published_at))) is not None

    await eventually(marked, "the outbox row marked published")
    await asyncio.sleep(1.2)  # longer than the relay's sweep interval: no second publish
    assert await stream_count(js) == 1
    assert await count(host.db, Decision.__table__) == 1


async def test_steps_of_a_batch_commit_or_roll_back_alone(host: ServiceHost, js: JetStreamContext) -> None:
    """``UnitOfWork.step``: each step is a savepoint; a rolled-back step takes its rows, its events
    and its notes in ``session.info`` with it, and the others go out with the batch's commit."""
    async with host.uow() as batch:
        async with batch.step() as kept:
            kept.session.add(Decision(benchmark_id=1, name="bench-1"))
            kept.emit(approved(1))
            kept.session.info["note"] = "kept"
            await kept.commit()
        with pytest.raises(RuntimeError, match="second step blew up"):
            async with batch.step() as failed:
                failed.session.add(Decision(benchmark_id=2, name="bench-2"))
                failed.emit(approved(2))
                failed.session.info["note"] = "rolled back"
                await failed.session.flush()
                raise RuntimeError("second step blew up")
        async with batch.step() as abandoned:  # left without commit, as a handler skipping a duplicate is
            abandoned.session.add(Decision(benchmark_id=3, name="bench-3"))
            abandoned.emit(approved(3))
        assert batch.session.info["note"] == "kept"
        # The steps' events wait for the batch's commit (the process's other sessions queue behind it).
        assert await batch.session.scalar(select(func.count()).select_from(TABLES.outbox)) == 0
        await batch.commit()

    async with host.db.sessions() as session:
        assert list(await session.scalars(select(Decision.benchmark_id))) == [1]
    await eventually(lambda: _at_least(js, 1), "the kept step's event on the stream")
    await asyncio.sleep(0.3)
    msg = await js.get_msg(STREAM, 1)
    assert BenchmarkApproved.model_validate_json(msg.data).benchmark_id == 1
    assert await stream_count(js) == 1


async def _at_least(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js) >= n


async def test_rows_committed_without_a_relay_are_published_at_start_in_order(
    settings: Settings, js: JetStreamContext
) -> None:
    await ensure_streams(settings.nats_url or "")
    db = Database(settings.database_url_for("probe"))
    await db.create_all(Base.metadata)
    events = [approved(i) for i in (1, 2, 3)]
    try:
        async with UnitOfWork(db, TABLES, relay=None) as uow:  # the service "crashed" before relaying
            for e in events:
                uow.session.add(Decision(benchmark_id=e.benchmark_id, name=e.name))
                uow.emit(e)
            await uow.commit()
    finally:
        await db.dispose()
    await asyncio.sleep(0.2)
    assert await stream_count(js) == 0

    host = ServiceHost("probe", settings, Base.metadata, TABLES)
    await host.start()  # publish_pending runs before start returns
    try:
        assert await stream_count(js) == 3
        ids = [(await js.get_msg(STREAM, seq)).headers["Nats-Msg-Id"] for seq in (1, 2, 3)]  # type: ignore[index]
        assert ids == [str(e.event_id) for e in events]
        async with host.db.sessions() as session:
            unpublished = await session.scalar(
                select(func.count()).select_from(TABLES.outbox).where(TABLES.outbox.c.published_at.is_(None))
            )
        assert unpublished == 0
    finally:
        await host.stop()


async def test_running_relay_sweeps_rows_committed_by_a_writer_that_did_not_wake_it(
    host: ServiceHost, js: JetStreamContext
) -> None:
    async with UnitOfWork(host.db, TABLES, relay=None) as uow:
        uow.session.add(Decision(benchmark_id=5, name="bench-5"))
        uow.emit(approved(5))
        await uow.commit()

    async def published() -> bool:
        return await stream_count(js) == 1

    await eventually(published, "the periodic sweep to publish the row", timeout=5.0)


async def test_republishing_a_row_after_a_crash_before_the_mark_leaves_one_message(
    host: ServiceHost, js: JetStreamContext
) -> None:
    event = approved(9)
    async with host.uow() as uow:
        uow.emit(event)
        await uow.commit()

    async def marked() -> bool:
        async with host.db.sessions() as session:
            return (await session.scalar(select(TABLES.outbox.c.published_at))) is not None

    await eventually(marked, "the first publish")
    assert await stream_count(js) == 1

    # The crash: the publish went out but the mark was never committed.
    for _ in range(2):
        async with host.db.sessions() as session:
            await session.execute(update(TABLES.outbox).values(published_at=None))
            await session.commit()
        assert await host.relay.publish_pending() == 1

    info = await js.stream_info(STREAM)
    assert info.state.messages == 1
    assert info.state.last_seq == 1
    assert (await js.get_msg(STREAM, 1)).headers["Nats-Msg-Id"] == str(event.event_id)  # type: ignore[index]


async def test_outbox_row_for_a_subject_no_stream_captures_is_not_silently_lost(
    host: ServiceHost, js: JetStreamContext
) -> None:
    """A row the relay cannot route stays unpublished (and is retried), it is never marked done."""
    async with host.db.sessions() as session:
        await session.execute(
            TABLES.outbox.insert().values(
                event_id=str(uuid.uuid4()),
                subject="medperf.nowhere.thing",
                payload=json.dumps({"x": 1}),
                created_at=func.now(),
            )
        )
        await session.commit()
    with pytest.raises(ValueError, match="no stream captures"):
        await host.relay.publish_pending()
    async with host.db.sessions() as session:
        assert (await session.scalar(select(TABLES.outbox.c.published_at))) is None
        await session.execute(TABLES.outbox.delete())  # or every later sweep would stumble on it
        await session.commit()


async def test_publishes_sent_without_waiting_keep_the_outbox_order_and_stop_at_a_failure(
    host: ServiceHost, js: JetStreamContext
) -> None:
    """The relay sends a batch before the acknowledgements come back: the stream still holds the
    events in outbox order, and a row that cannot go out stops the batch there; what follows it
    is neither marked nor lost."""
    first, second = [approved(i) for i in range(1, 151)], [approved(i) for i in range(151, 301)]
    async with UnitOfWork(host.db, TABLES, relay=None) as uow:
        for event in first:
            uow.emit(event)
        await uow.commit()
    async with host.db.sessions() as session:
        await session.execute(
            TABLES.outbox.insert().values(
                event_id=str(uuid.uuid4()), subject="medperf.nowhere.thing", payload="{}", created_at=func.now()
            )
        )
        await session.commit()
    async with UnitOfWork(host.db, TABLES, relay=None) as uow:
        for event in second:
            uow.emit(event)
        await uow.commit()

    with pytest.raises(ValueError, match="no stream captures"):
        await host.relay.publish_pending()
    published = TABLES.outbox.c.published_at.is_not(None)
    async with host.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(TABLES.outbox).where(published)) == len(first)
        await session.execute(TABLES.outbox.delete().where(TABLES.outbox.c.subject == "medperf.nowhere.thing"))
        await session.commit()
    await host.relay.publish_pending()

    assert await stream_count(js) == len(first) + len(second)
    ids = [(await js.get_msg(STREAM, seq)).headers["Nats-Msg-Id"] for seq in range(1, 301)]  # type: ignore[index]
    assert ids == [str(e.event_id) for e in first + second]


async def test_rows_handed_to_the_relay_fall_back_to_the_table_after_a_failure(
    host: ServiceHost, js: JetStreamContext
) -> None:
    """A unit of work hands its committed rows to the relay, which publishes them without reading
    them back; when one cannot go out, what follows it waits in the table and goes out after it."""
    first, second = approved(1), approved(2)
    async with host.uow() as uow:
        uow.emit(first)
        await uow.commit()
    await eventually(lambda: _at_least(js, 1), "the first event, handed over at its commit")

    bad = {"event_id": str(uuid.uuid4()), "subject": "medperf.nowhere.thing", "payload": "{}"}
    async with host.db.sessions() as session:
        await session.execute(TABLES.outbox.insert().values(**bad, created_at=func.now()))
        await session.commit()
    host.relay.wake([bad])  # as if committed by this process just before the next one
    async with host.uow() as uow:
        uow.emit(second)
        await uow.commit()
    await asyncio.sleep(1.5)  # the failed hand-over, then a sweep that stops at the same row
    assert await stream_count(js) == 1

    async with host.db.sessions() as session:
        await session.execute(TABLES.outbox.delete().where(TABLES.outbox.c.event_id == bad["event_id"]))
        await session.commit()
    await eventually(lambda: _at_least(js, 2), "the second event, from the table")
    ids = [(await js.get_msg(STREAM, seq)).headers["Nats-Msg-Id"] for seq in (1, 2)]  # type: ignore[index]
    assert ids == [str(first.event_id), str(second.event_id)]


async def test_stop_closes_the_broker_even_when_the_final_flush_cannot_publish(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "own-nats")
    url = server.start()
    host = ServiceHost("probe", Settings(nats_url=url, state_dir=tmp_path, max_deliveries=3), Base.metadata, TABLES)
    await host.start()
    connection = host.broker.connection
    try:
        server.stop()  # the broker goes away ...
        async with UnitOfWork(host.db, TABLES, relay=None) as uow:  # ... with an event still to relay
            uow.emit(approved(3))
            await uow.commit()
        try:
            await asyncio.wait_for(host.stop(), timeout=DEADLINE)
        finally:
            # The event is kept for the next start, whatever stop() did.
            async with host.db.sessions() as session:
                assert (await session.scalar(select(TABLES.outbox.c.published_at))) is None
        assert not host.broker.running
        assert connection.is_closed
    finally:
        if not connection.is_closed:
            await connection.close()
        await host.db.dispose()
        server.stop()


async def test_timestamps_come_back_timezone_aware(tmp_path: Path) -> None:
    """SQLite keeps no zone; read-back values are compared with event times, which are aware."""
    from services.aggregator.store import Base as AggregatorBase
    from services.aggregator.store import Result
    from shared.db import Database
    from shared.events import utcnow

    db = Database(f"sqlite:///{tmp_path / 'tz.db'}")
    await db.create_all(AggregatorBase.metadata)
    written = utcnow()
    async with db.sessions() as session:
        session.add(
            Result(
                benchmark_id=1,
                model_id=1,
                dataset_id=1,
                site="s",
                metrics={},
                container_digests={},
                dataset_hash="h",
                event_id="e",
                reported_at=written,
                revision=1,
            )
        )
        await session.commit()
    async with db.sessions() as session:
        read = (await session.get(Result, (1, 1, 1))).reported_at
    await db.dispose()
    assert read.tzinfo is not None and read == written
    assert read <= utcnow()  # comparing with an aware time does not raise
