"""SQLite, run synchronously in the event loop's thread behind the AsyncSession interface.

A local WAL-mode SQLite statement takes microseconds, so there is little to wait for: handing each
call to a worker thread (aiosqlite) and back, and SQLAlchemy's greenlet bridge around it, cost
several times SQLite's own work (bench/registry.py: ~1.3 ms against ~0.85 ms per registration's
transaction). Handlers are written once, against ``AsyncSession``; on SQLite they get an
``InlineSession``, which answers the same awaited calls from a plain ``Session``.

The trade-offs: a write that must wait for another *process* holding the lock blocks the loop for
up to busy_timeout (each service owns its SQLite file, so only an operator's sqlite3 shell can);
and with synchronous=FULL, the default, a COMMIT blocks it while the WAL is synced to disk (~0.8 ms
on the development VM), which group commit (shared/answering.py) pays once per group of commands.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Column, Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

#: What a COMMIT waits for: FULL, the WAL on disk (survives a power cut); NORMAL, the OS's cache.
Synchronous = Literal["FULL", "NORMAL"]
#: One row's parameters, or several rows' for one statement executed once per row.
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


def sqlite_engine(url: URL, json_serializer: Any, synchronous: Synchronous = "FULL") -> Engine:
    """An engine on the standard library's sqlite3 for ``url`` (any sqlite driver name)."""
    engine = create_engine(url.set(drivername="sqlite"), json_serializer=json_serializer)
    event.listen(engine, "connect", functools.partial(_configure, synchronous=synchronous))
    event.listen(engine, "begin", _begin_immediate)
    _savepoints_straight_to_sqlite(engine.dialect)
    return engine


def _savepoints_straight_to_sqlite(dialect: Dialect) -> None:
    """SQLAlchemy keeps its bookkeeping of a SAVEPOINT (``begin_nested``, one per event of a
    projected batch), but its dialect emits each as a statement compiled afresh, since the names
    change (sa_savepoint_1, _2, ...): ~0.1 ms for SAVEPOINT and RELEASE, a quarter of a projected
    registration's CPU (bench/registry.py). Emitted on the DB-API connection, they cost ~2 us."""

    def emit(sql: str) -> Callable[[Connection, str], None]:
        def run(connection: Connection, name: str) -> None:
            dbapi_connection = connection.connection.dbapi_connection
            assert dbapi_connection is not None
            dbapi_connection.execute(f'{sql} "{name}"')

        return run

    # An instance's attributes, on this engine's own dialect object only.
    dialect.do_savepoint = emit("SAVEPOINT")  # type: ignore[method-assign]
    dialect.do_release_savepoint = emit("RELEASE SAVEPOINT")  # type: ignore[method-assign]
    dialect.do_rollback_to_savepoint = emit("ROLLBACK TO SAVEPOINT")  # type: ignore[method-assign]


class InlineSessions:
    """A factory of ``InlineSession`` on ``engine``, like ``async_sessionmaker``, whose sessions all
    use one connection: a process's SQLite sessions run one at a time (``Database.lock``), and a
    pool checkout, return and reset for each cost ~0.1 ms, as much as a one-row statement."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def __call__(self) -> InlineSession:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._connection = self._engine.connect()
        else:
            # What the pool did on each return: roll back a transaction left open, by a session
            # never closed or by a failed COMMIT. After a failed COMMIT SQLAlchemy keeps its
            # transaction, inactive (in_transaction() is False), and begins no other until it is
            # rolled back; SQLite may keep its own open too.
            transaction = connection.get_transaction()
            if transaction is not None:
                transaction.rollback()
            dbapi_connection = connection.connection.dbapi_connection
            if dbapi_connection is not None and dbapi_connection.in_transaction:
                dbapi_connection.rollback()
        return InlineSession(Session(connection, expire_on_commit=False))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _configure(dbapi_connection: Any, _record: Any, synchronous: Synchronous) -> None:
    # No transactions opened by the driver itself: _begin_immediate opens them.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; busy_timeout waits instead of failing on a lock.
    # synchronous=FULL syncs the WAL at every COMMIT, so an acknowledged write survives a power
    # cut or an OS crash; NORMAL survives a crash of the process only, and an OS crash or power
    # loss can drop the last commits (docs/reliability.md, "Durability").
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
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

    def execute_prebuilt(self, statement: Executable, params: Params) -> InlineResult:
        """``shared.db.execute_prebuilt`` on SQLite: the statement, compiled once, straight on the
        DB-API connection of this session's transaction (which ``connection()`` begins)."""
        rows = [params] if isinstance(params, Mapping) else params
        dialect = self.sync_session.get_bind().dialect
        plan = _plan(statement, dialect, tuple(rows[0]))
        dbapi_connection = self.sync_session.connection().connection.dbapi_connection
        assert dbapi_connection is not None
        positional = [plan.positional(row) for row in rows]
        try:
            if len(positional) == 1:
                cursor = dbapi_connection.execute(plan.sql, positional[0])
                found = cursor.fetchall() if cursor.description else []
            else:
                cursor, found = dbapi_connection.executemany(plan.sql, positional), []
        except dialect.loaded_dbapi.Error as exc:  # raised as SQLAlchemy would, e.g. IntegrityError
            raise DBAPIError.instance(plan.sql, positional, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
        return InlineResult(cursor.rowcount, found, plan.scalar_processor)

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
        session = self.sync_session
        if session.identity_map or session.new:
            session.commit()
            return
        # Only Core statements ran (the hot paths, execute_prebuilt): the ORM has nothing to flush
        # or to keep, so the connection commits alone and close() ends the session's bookkeeping,
        # which Session.commit's would cost ~0.05 ms more. Used again, the session begins anew.
        connection = session.bind
        assert isinstance(connection, Connection)
        connection.commit()
        session.close()

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


@dataclass(frozen=True, slots=True)
class InlineResult:
    """What ``execute_prebuilt`` answers on SQLite: the part of ``CursorResult`` callers use."""

    rowcount: int
    rows: list[tuple[Any, ...]]
    scalar_processor: Callable[[Any], Any] | None

    def scalar(self) -> Any:
        """The first column of the first row RETURNING gave, or None if it gave none."""
        if not self.rows:
            return None
        value = self.rows[0][0]
        return value if self.scalar_processor is None else self.scalar_processor(value)


@dataclass(frozen=True, slots=True)
class _DefaultContext:
    """What a column default that takes an argument may ask of SQLAlchemy's execution context."""

    current_parameters: dict[str, Any]
    current_column: Column[Any]

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


@dataclass(frozen=True, slots=True)
class _Plan:
    """A statement compiled for SQLite, and what turns one row's values into its DB-API parameters
    the way SQLAlchemy's execution context does: bind values, Python-side column defaults, then
    each type's bind processor (dates as SQLite's text, JSON serialised, UtcDateTime to UTC)."""

    sql: str
    compiled: SQLCompiler
    positions: tuple[str, ...]
    processors: Mapping[str, Callable[[Any], Any]]
    defaults: tuple[tuple[str, Column[Any], Any], ...]
    scalar_processor: Callable[[Any], Any] | None

    def positional(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        values = self.compiled.construct_params(row, escape_names=False)
        for name, column, default in self.defaults:
            values[name] = default.arg if default.is_scalar else default.arg(_DefaultContext(values, column))
        processors = self.processors
        return tuple(processors[name](values[name]) if name in processors else values[name] for name in self.positions)


@functools.lru_cache(maxsize=256)
def _plan(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan:
    # Compiled for the keys given, as SQLAlchemy does: they decide which columns an INSERT names
    # and which take their Python-side defaults.
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler)
    if not compiled.positional or compiled.post_compile_params or compiled.literal_execute_params:
        raise ValueError("execute_prebuilt takes statements without expanding (IN) or literal parameters")
    binds = {name: bind for bind, name in compiled.bind_names.items()}
    defaulted = [(c, c.default) for c in compiled.insert_prefetch] + [(c, c.onupdate) for c in compiled.update_prefetch]
    for column, default in defaulted:
        if column.key not in binds or not (default.is_scalar or default.is_callable):
            raise ValueError(f"execute_prebuilt cannot apply the default of {column}")
    positions = tuple(compiled.positiontup or ())
    # dialect_impl: SQLite's own form of each type (its DATETIME stores text; the generic
    # DateTime would leave the datetime to the sqlite3 module's adapter, in another format).
    processors = {
        name: processor
        for name in positions
        if (processor := binds[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    returning = list(compiled.effective_returning or ())
    scalar_processor = returning[0].type.dialect_impl(dialect).result_processor(dialect, None) if returning else None
    defaults = tuple((column.key, column, default) for column, default in defaulted)
    return _Plan(str(compiled), compiled, positions, processors, defaults, scalar_processor)
