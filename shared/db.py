"""Database plumbing: engines, the transactional outbox, the idempotency inbox, the unit of work.

Every service owns its tables (prefixed with the service name) and never reads another's. A state
change and the events describing it are written in one transaction: the event rows go to the
service's outbox table, and the ``OutboxRelay`` publishes them to JetStream after the commit.
A consumer records each handled event id in its inbox table in the same transaction as its effect,
so a redelivered event is recognised and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import pydantic_core
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql import Executable

from shared.events import Event, utcnow
from shared.limits import check_event_size
from shared.sqlite import InlineSession, InlineSessions, Params, Synchronous, sqlite_engine


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC; SQLite drops the zone on storage,
    and comparing a naive value read back with an aware one from an event would fail."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Database:
    def __init__(self, url: str, synchronous: Synchronous = "FULL") -> None:
        """``synchronous``: on SQLite, what a COMMIT waits for (``shared.sqlite.Synchronous``)."""
        self.url = url
        # SQLite has one writer at a time, and every transaction here takes the write lock at BEGIN;
        # its statements run inline (shared/sqlite.py), so a session waiting on SQLite's busy handler
        # would block the very event loop the holder needs to finish. Every session of this process
        # therefore queues on one asyncio lock (also much faster than colliding and retrying).
        self.serialize = url.startswith("sqlite")
        self.lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None
        self._sync_engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._inline_sessions: InlineSessions | None = None
        if self.serialize:
            self._sync_engine = sqlite_engine(make_url(url), json_serializer=_json, synchronous=synchronous)
            self._inline_sessions = InlineSessions(self._sync_engine)
            # An InlineSession stands in for an AsyncSession (shared/sqlite.py).
            self._sessionmaker: Callable[[], AsyncSession] = self._inline_sessions  # type: ignore[assignment]
        else:
            self._async_engine = create_async_engine(url, pool_pre_ping=True, json_serializer=_json)
            self._sessionmaker = async_sessionmaker(self._async_engine, expire_on_commit=False)

    async def create_all(self, metadata: MetaData) -> None:
        if self._sync_engine is not None:
            metadata.create_all(self._sync_engine)
            return
        assert self._async_engine is not None
        async with self._async_engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Replicas of a service start together on one database; without the lock two
                # CREATE TABLEs of the same table race and one fails on PostgreSQL's catalog.
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263)")
            await conn.run_sync(metadata.create_all)

    @contextlib.asynccontextmanager
    async def sessions(self) -> AsyncIterator[AsyncSession]:
        """A session, queued behind this process's other sessions on SQLite; commit it yourself."""
        async with self._exclusive(), self._sessionmaker() as session:
            yield session

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A short transaction, committed on success, queued behind this process's other sessions."""
        async with self.sessions() as session:
            yield session
            await session.commit()

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        if not self.serialize:
            yield
            return
        task = asyncio.current_task()
        if self._holder is task:
            # It would wait for itself forever, e.g. a command handler opening a session of its
            # own inside a command group (ServiceHost.together) instead of using host.uow().
            raise RuntimeError("this task already holds the database: use its unit of work, or a step of it")
        async with self.lock:
            self._holder = task
            try:
                yield
            finally:
                self._holder = None

    async def dispose(self) -> None:
        if self._inline_sessions is not None:
            self._inline_sessions.close()
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()


def _json(value: Any) -> str:
    # JSON columns are written by the thousand (a result's metrics and digests): pydantic's
    # encoder is several times faster than the standard library's.
    return pydantic_core.to_json(value).decode()


class Relay(Protocol):
    def wake(self, committed: list[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    inbox: Table


def messaging_tables(metadata: MetaData, service: str) -> MessagingTables:
    outbox = Table(
        f"{service}_outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
        Column("published_at", UtcDateTime(), nullable=True, index=True),
    )
    # One consumer per event type in a service, so the event id alone identifies a handling.
    inbox = Table(
        f"{service}_inbox",
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("event_type", String(64), nullable=False),
        Column("handled_at", UtcDateTime(), nullable=False),
    )
    return MessagingTables(outbox, inbox)


@functools.cache
def insert_unless_exists(dialect: str, table: Table, *unique: str) -> Any:
    """``INSERT .. ON CONFLICT (unique) DO NOTHING`` for ``dialect`` (sqlite or postgresql); with
    ``RETURNING``, no row comes back when the values were taken already. Execute it with the values
    as parameters: built once, the statement keeps its cache key, which SQLAlchemy otherwise
    computes afresh for every statement built with its values inline (~10% of a short transaction)."""
    return _INSERTS[dialect](table).on_conflict_do_nothing(index_elements=list(unique) or None)


_INSERTS: dict[str, Any] = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}


@functools.cache
def insert_into(table: Table) -> Any:
    """A plain ``INSERT`` into ``table``, built once (for ``execute_prebuilt``)."""
    return insert(table)


class Executed(Protocol):
    """What ``execute_prebuilt`` answers: the part of SQLAlchemy's ``CursorResult`` callers use."""

    @property
    def rowcount(self) -> int: ...

    def scalar(self) -> Any: ...


async def execute_prebuilt(session: AsyncSession, statement: Executable, params: Params) -> Executed:
    """Execute a Core statement built once (at import, or by a ``functools.cache`` function) with
    one row's ``params``, or with each of several rows' (no RETURNING then, and the rowcount is
    whatever the driver makes of it: asyncpg's is -1).

    On SQLite the statement is compiled once and runs straight on the session's DB-API connection,
    in its transaction: SQLAlchemy's machinery around each statement (session dispatch, cache key,
    execution context, result) costs 2-5 times SQLite's own work on a one-row statement, and the
    hottest paths run several per transaction. Elsewhere it is ``session.execute``."""
    if isinstance(session, InlineSession):
        return session.execute_prebuilt(statement, params)
    return cast(Executed, await session.execute(statement, params))


class UnitOfWork:
    """One transaction: state changes, the events that describe them, and the inbox mark.

    Use as ``async with uow: ...; await uow.commit()``; leaving without commit rolls back.
    """

    def __init__(self, db: Database, tables: MessagingTables, relay: Relay | None = None) -> None:
        self._db = db
        self._tables = tables
        self._relay = relay
        self.session: AsyncSession

    async def __aenter__(self) -> UnitOfWork:
        self._exclusive = self._db._exclusive()
        await self._exclusive.__aenter__()
        self.session = self._db._sessionmaker()
        self._events: list[dict[str, str]] = []
        return self

    async def __aexit__(self, *exc: object) -> None:
        # close() rolls back whatever was not committed, and leaves loaded objects readable
        # (rollback() would expire them).
        try:
            await self.session.close()
        finally:
            await self._exclusive.__aexit__(None, None, None)

    def emit(self, event: Event) -> None:
        """Record ``event``; it is written with this transaction and published after the commit.

        Raises ``EventTooLarge`` for an event the broker would refuse: committed, it would stop
        the outbox relay behind it, so the change that produced it must not commit either."""
        payload = event.model_dump_json()
        check_event_size(event.subject, payload)
        self._events.append({"event_id": str(event.event_id), "subject": event.subject, "payload": payload})

    def step(self) -> UnitOfWork:
        """A unit of work inside this one (a SAVEPOINT), for one event of a batch: it commits or
        rolls back alone, and what it commits is written with this transaction's commit."""
        return _Step(self)

    async def claim(self, event: Event) -> bool:
        """Mark ``event`` handled in this transaction; False if it already was (a redelivery)."""
        # INSERT .. ON CONFLICT DO NOTHING: two deliveries of one event handled at once (same batch,
        # or two replicas) do not fail on the key; the second waits for the first and sees the row.
        dialect = self.session.bind.dialect.name
        values = {"event_id": str(event.event_id), "event_type": event.type, "handled_at": utcnow()}
        inbox = self._tables.inbox
        if dialect not in _INSERTS:  # another database: check, then insert (a race ends in a retry)
            if await self.session.scalar(select(inbox.c.event_id).where(inbox.c.event_id == values["event_id"])):
                return False
            await self.session.execute(insert(inbox).values(**values))
            return True
        result = await execute_prebuilt(self.session, insert_unless_exists(dialect, inbox), values)
        return bool(result.rowcount)

    async def mark_handled(self, events: list[Event]) -> None:
        """Record many events as handled at once, for handlers whose effect is idempotent anyway
        (a redelivery rewrites the same values), so no per-event check is needed."""
        now = utcnow()
        await execute_prebuilt(
            self.session,
            insert_unless_exists(self.session.bind.dialect.name, self._tables.inbox),
            [{"event_id": str(e.event_id), "event_type": e.type, "handled_at": now} for e in events],
        )

    async def commit(self) -> None:
        now = utcnow()
        rows = [{**row, "created_at": now} for row in self._events]
        if rows:
            # A lone row as a single execution: SQLAlchemy's executemany path costs ~0.1 ms more.
            await execute_prebuilt(self.session, insert_into(self._tables.outbox), rows[0] if len(rows) == 1 else rows)
        await self.session.commit()
        self._events = []
        if rows and self._relay is not None:
            self._relay.wake(rows)


class _Step(UnitOfWork):
    """``UnitOfWork.step``: the same interface, so a handler written for a transaction of its own
    runs unchanged as one step of a batch."""

    def __init__(self, batch: UnitOfWork) -> None:
        self._batch = batch
        self._tables = batch._tables

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._batch.session
        self._events = []
        # Handlers keep per-transaction notes in session.info (the aggregator's clock tick); a note
        # made in a step that is rolled back describes a change that no longer exists.
        self._info = dict(self.session.info)
        self._savepoint = await self.session.begin_nested()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._savepoint.is_active:
            await self._savepoint.rollback()
            self.session.info.clear()
            self.session.info.update(self._info)

    async def commit(self) -> None:
        await self._savepoint.commit()
        self._batch._events.extend(self._events)
        self._events = []
