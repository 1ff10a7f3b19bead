"""``shared.db.execute_prebuilt``: on SQLite it bypasses SQLAlchemy's execution machinery, so what
it stores must be exactly what SQLAlchemy stores (timestamps, JSON, NULLs, Python-side defaults),
and it must answer what callers read (rowcount, a RETURNING scalar). Each test also runs on
PostgreSQL, where the facility is plain ``session.execute``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, ForeignKey, Integer, MetaData, String, bindparam, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import Database, UtcDateTime, execute_prebuilt, insert_into, insert_unless_exists
from shared.events import utcnow
from shared.sqlite import InlineResult


class Base(DeclarativeBase):
    metadata = MetaData()


class Thing(Base):
    __tablename__ = "prebuilt_things"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    doc: Mapped[Any] = mapped_column(JSON, nullable=True)
    note: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    state: Mapped[str] = mapped_column(String(16), default="NEW")
    flag: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Part(Base):
    """Checked at COMMIT: a part whose thing is missing fails the COMMIT, not its INSERT."""

    __tablename__ = "prebuilt_parts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thing_id: Mapped[int] = mapped_column(ForeignKey(Thing.id, deferrable=True, initially="DEFERRED"))


THINGS = Thing.__table__
RENAME = update(THINGS).where(THINGS.c.name == bindparam("old"))
CEST = timezone(timedelta(hours=2))


@pytest.fixture
async def db(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    database = Database(database_url or f"sqlite:///{tmp_path}/prebuilt.db")
    await database.create_all(Base.metadata)
    yield database
    await database.dispose()


def row(name: str, **values: Any) -> dict[str, Any]:
    fixed = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=CEST)
    doc = {"é": [1, 2.5, None], "ok": True}
    every = {"name": name, "seen_at": fixed, "doc": doc, "note": None, "created_at": fixed, "modified_at": fixed}
    return every | {"state": "SET", "flag": False, "extra": {"k": "v"}} | values


async def raw(db: Database, name: str) -> tuple[Any, ...]:
    """The stored values as the driver returns them, past every SQLAlchemy type."""
    async with db.sessions() as session:
        columns = "seen_at, doc, note, created_at, modified_at, state, flag, extra"
        query = text(f"SELECT {columns} FROM prebuilt_things WHERE name = :n")
        return tuple((await session.execute(query, {"n": name})).one())


async def test_stores_what_sqlalchemy_stores(db: Database) -> None:
    variants = [{}, {"seen_at": None, "doc": None, "note": "x"}, {"doc": [], "extra": {}}]
    async with db.sessions() as session:
        for i, values in enumerate(variants):
            result = await execute_prebuilt(session, insert_into(THINGS), row(f"fast-{i}", **values))
            assert result.rowcount == 1
            await session.execute(THINGS.insert(), row(f"orm-{i}", **values))
        await session.commit()
    for i, values in enumerate(variants):
        assert await raw(db, f"fast-{i}") == await raw(db, f"orm-{i}")
        async with db.sessions() as session:
            thing = await session.scalar(select(Thing).where(Thing.name == f"fast-{i}"))
        expected = row(f"fast-{i}", **values)
        assert {key: getattr(thing, key) for key in expected} == expected
        assert thing.seen_at is None or thing.seen_at.tzinfo is UTC


async def test_python_side_defaults(db: Database) -> None:
    before = utcnow()
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), {"name": "bare"})
        await session.commit()
    async with db.sessions() as session:
        thing = await session.scalar(select(Thing).where(Thing.name == "bare"))
    assert (thing.state, thing.flag, thing.extra, thing.seen_at, thing.doc) == ("NEW", True, {}, None, None)
    assert before <= thing.created_at <= thing.modified_at <= utcnow()


async def test_update_counts_rows_and_applies_onupdate(db: Database) -> None:
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), row("a"))
        renamed = await execute_prebuilt(session, RENAME, {"old": "a", "name": "b", "note": "renamed"})
        missed = await execute_prebuilt(session, RENAME, {"old": "a", "name": "c", "note": "renamed"})
        await session.commit()
    assert (renamed.rowcount, missed.rowcount) == (1, 0)
    async with db.sessions() as session:
        thing = await session.scalar(select(Thing).where(Thing.name == "b"))
    assert thing.note == "renamed"
    assert thing.modified_at > row("a")["modified_at"]


async def test_conflict_inserts_nothing_and_returns_nothing(db: Database) -> None:
    async with db.sessions() as session:
        dialect = session.bind.dialect.name
        returning = insert_unless_exists(dialect, THINGS, "name").returning(THINGS.c.id)
        first = await execute_prebuilt(session, returning, row("taken"))
        again = await execute_prebuilt(session, returning, row("taken", note="second"))
        claim = await execute_prebuilt(session, insert_unless_exists(dialect, THINGS, "name"), row("taken"))
        await session.commit()
    assert isinstance(first.scalar(), int)
    assert again.scalar() is None
    assert claim.rowcount == 0
    assert isinstance(first, InlineResult) == (dialect == "sqlite")  # the fast path, on SQLite only
    assert (await raw(db, "taken"))[2] is None  # the second insert wrote nothing


async def test_several_rows_and_rollback(db: Database) -> None:
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), [row("x"), row("y"), row("z")])
        assert (await session.scalars(select(Thing.name).order_by(Thing.name))).all() == ["x", "y", "z"]
        # Not committed: the statement ran in the session's transaction, which close() rolls back.
    async with db.sessions() as session:
        assert (await session.scalars(select(Thing.name))).all() == []


async def test_errors_are_sqlalchemys(db: Database) -> None:
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), row("one"))
        with pytest.raises(IntegrityError):
            await execute_prebuilt(session, insert_into(THINGS), row("one"))


async def test_sqlite_sessions_share_a_connection_but_no_transaction(tmp_path: Path) -> None:
    """Every SQLite session of a Database runs on one connection; what one left open (a session
    never closed, a COMMIT that failed) is rolled back before the next begins."""
    db = Database(f"sqlite:///{tmp_path}/shared.db")
    await db.create_all(Base.metadata)
    try:
        forgotten = db._sessionmaker()
        await execute_prebuilt(forgotten, insert_into(THINGS), row("forgotten"))
        dbapi_connection = forgotten.sync_session.connection().connection.dbapi_connection
        async with db.sessions() as session:
            assert session.sync_session.connection().connection.dbapi_connection is dbapi_connection
            assert (await session.scalars(select(Thing.name))).all() == []
        # As after a failed COMMIT: SQLite's transaction still open, SQLAlchemy's gone.
        dbapi_connection.execute("BEGIN IMMEDIATE")
        dbapi_connection.execute(
            "INSERT INTO prebuilt_things (name, created_at, modified_at, state, flag, extra)"
            " VALUES ('lost', '', '', '', 0, '{}')"
        )
        async with db.transaction() as session:
            await execute_prebuilt(session, insert_into(THINGS), row("kept"))
        async with db.sessions() as session:
            assert (await session.scalars(select(Thing.name))).all() == ["kept"]
    finally:
        await db.dispose()


@pytest.mark.parametrize("orm", [False, True], ids=["core", "orm"])
async def test_a_failed_commit_leaves_the_database_usable(db: Database, orm: bool) -> None:
    """A COMMIT can fail (a deferred constraint, a full disk). On SQLite every session of the
    process shares one connection, so what the failure leaves behind must not stop the next."""
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), row("doomed"))
        if orm:
            session.add(Part(thing_id=10**6))
        else:
            await execute_prebuilt(session, insert_into(Part.__table__), {"thing_id": 10**6})
        with pytest.raises(IntegrityError):
            await session.commit()
    for i in range(2):
        async with db.transaction() as session:
            await execute_prebuilt(session, insert_into(THINGS), row(f"kept-{i}"))
    async with db.sessions() as session:
        assert (await session.scalars(select(Thing.name).order_by(Thing.name))).all() == ["kept-0", "kept-1"]
        assert (await session.scalars(select(Part.id))).all() == []


async def test_a_session_goes_on_after_its_commit(db: Database) -> None:
    """A transaction of Core statements alone commits without the ORM on SQLite; either way the
    session begins a new transaction when used again, and ORM objects stay usable."""
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), row("core"))
        await session.commit()
        thing = Thing(name="orm")
        session.add(thing)
        await session.commit()
        await execute_prebuilt(session, insert_into(THINGS), row("after"))
        await session.commit()
        assert (await session.get(Thing, thing.id)) is thing
    async with db.sessions() as session:
        assert sorted((await session.scalars(select(Thing.name))).all()) == ["after", "core", "orm"]


async def test_savepoints_roll_back_their_own_work_only(db: Database) -> None:
    """On SQLite the SAVEPOINT statements skip SQLAlchemy's compiler (shared/sqlite.py); nested
    ones, a rolled-back one among committed ones, and many of them in one transaction behave as on
    PostgreSQL."""
    async with db.sessions() as session:
        await execute_prebuilt(session, insert_into(THINGS), row("before"))
        for i in range(30):  # each savepoint has a new name
            step = await session.begin_nested()
            await execute_prebuilt(session, insert_into(THINGS), row(f"step-{i}"))
            if i % 3 == 0:
                await step.rollback()
            else:
                inner = await session.begin_nested()
                await execute_prebuilt(session, insert_into(THINGS), row(f"inner-{i}"))
                await inner.rollback()
                await step.commit()
        await session.commit()
    async with db.sessions() as session:
        names = set((await session.scalars(select(Thing.name))).all())
    assert names == {"before"} | {f"step-{i}" for i in range(30) if i % 3}
