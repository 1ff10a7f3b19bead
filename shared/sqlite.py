"""SQLite, run synchronously in the event loop's thread behind the AsyncSession interface.

A local WAL-mode SQLite statement takes microseconds and its commit does not fsync
(synchronous=NORMAL), so there is nothing to wait for: handing each call to a worker thread
(aiosqlite) and back, and SQLAlchemy's greenlet bridge around it, cost several times SQLite's own
work (bench/registry.py: ~1.3 ms against ~0.85 ms per registration's transaction). Handlers are
written once, against ``AsyncSession``; on SQLite they get an ``InlineSession``, which answers the
same awaited calls from a plain ``Session``.

The trade-off: a write that must wait for another *process* holding the lock blocks the loop for
up to busy_timeout; each service owns its SQLite file, so only an operator's sqlite3 shell can.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker


def sqlite_engine(url: URL, json_serializer: Any) -> Engine:
    """An engine on the standard library's sqlite3 for ``url`` (any sqlite driver name)."""
    engine = create_engine(url.set(drivername="sqlite"), json_serializer=json_serializer)
    event.listen(engine, "connect", _configure)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def inline_sessions(engine: Engine) -> Any:
    """A factory of ``InlineSession`` on ``engine``, like ``async_sessionmaker``."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    return lambda: InlineSession(sessions())


def _configure(dbapi_connection: Any, _record: Any) -> None:
    # No transactions opened by the driver itself: _begin_immediate opens them.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; busy_timeout waits instead of failing on a lock.
    # synchronous=NORMAL in WAL mode survives a crash of the process; only an OS crash or power
    # loss can drop the last commits (the outbox is then behind, never inconsistent).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # Take the write lock when the transaction starts: a transaction that read first and writes
    # later could otherwise fail at once with "database is locked" when another writer got there
    # in between (SQLite does not wait in that case); with IMMEDIATE, busy_timeout applies.
    connection.connection.dbapi_connection.execute("BEGIN IMMEDIATE")


class InlineSession:
    """The part of ``AsyncSession`` this project uses, answered at once by a synchronous
    ``Session``. Anything else is deliberately absent, so a new use fails loudly in the tests."""

    def __init__(self, session: Session) -> None:
        self.sync_session = session

    @property
    def info(self) -> dict[Any, Any]:
        return self.sync_session.info

    @property
    def bind(self) -> Any:
        return self.sync_session.bind

    async def __aenter__(self) -> InlineSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sync_session.close()

    def add(self, instance: object) -> None:
        self.sync_session.add(instance)

    async def get(self, entity: Any, ident: Any, **kw: Any) -> Any:
        return self.sync_session.get(entity, ident, **kw)

    async def execute(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        return self.sync_session.execute(statement, params, **kw)

    async def scalar(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        return self.sync_session.scalar(statement, params, **kw)

    async def scalars(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        return self.sync_session.scalars(statement, params, **kw)

    async def merge(self, instance: Any, **kw: Any) -> Any:
        return self.sync_session.merge(instance, **kw)

    async def delete(self, instance: object) -> None:
        self.sync_session.delete(instance)

    async def flush(self) -> None:
        self.sync_session.flush()

    async def begin_nested(self) -> InlineSavepoint:
        return InlineSavepoint(self.sync_session.begin_nested())

    async def commit(self) -> None:
        self.sync_session.commit()

    async def rollback(self) -> None:
        self.sync_session.rollback()

    async def close(self) -> None:
        self.sync_session.close()


class InlineSavepoint:
    """``AsyncSessionTransaction`` for a SAVEPOINT of an ``InlineSession``."""

    def __init__(self, transaction: SessionTransaction) -> None:
        self._transaction = transaction

    @property
    def is_active(self) -> bool:
        return self._transaction.is_active

    async def commit(self) -> None:
        self._transaction.commit()

    async def rollback(self) -> None:
        self._transaction.rollback()
