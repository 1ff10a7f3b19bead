"""Group commit (``ServiceHost(group_commands=True)``, ``shared.answering``) against a real
nats-server and a real SQLite file.

A "probe" service answers ``Write`` commands: each stores a note and emits an event, unless told
to refuse, to crash, or to store an orphan (a row whose deferred foreign key fails the COMMIT,
not the INSERT). The first command is held inside its handler, so the others queue behind it and
are answered as one group when it is released: that is how the tests make a group known.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from history import stream_messages
from sqlalchemy import ForeignKey, Integer, MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from waiting import eventually

from shared.commands import Command, Outcome
from shared.db import messaging_tables
from shared.events import BenchmarkApproved
from shared.service import ServiceHost, ask
from shared.settings import Settings

TIMEOUT = 10.0


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "probe")


class Note(Base):
    __tablename__ = "probe_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(String(64), unique=True)


class Orphan(Base):
    """Checked at COMMIT: an orphan fails the COMMIT of the transaction that stores it."""

    __tablename__ = "probe_orphans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    note_id: Mapped[int] = mapped_column(ForeignKey(Note.id, deferrable=True, initially="DEFERRED"))


class Write(Command):
    SERVICE, NAME = "probe", "write"
    text: str
    #: "ok", "hold" (wait for the test's release), "refuse" or "crash" (after writing), "orphan",
    #: "own-session" (opens a session besides its unit of work)
    mode: str = "ok"


@dataclass
class Probe:
    host: ServiceHost
    release: asyncio.Event = field(default_factory=asyncio.Event)
    #: command text -> the session its unit of work wrote through
    sessions: dict[str, object] = field(default_factory=dict)

    async def notes(self) -> list[str]:
        async with self.host.db.sessions() as session:
            return sorted(await session.scalars(select(Note.text)))

    async def ask(self, text: str, mode: str = "ok") -> Outcome:
        return await ask(self.host.broker, Write(actor="alice", text=text, mode=mode), TIMEOUT)

    async def queue_behind_a_held_command(self, *writes: tuple[str, str]) -> tuple[asyncio.Task, list[asyncio.Task]]:
        """Send a held command, then ``writes`` (text, mode), and wait until all of them queue."""
        held = asyncio.create_task(self.ask("held", "hold"))
        await eventually(lambda: _true("held" in self.sessions), "the held command to be handled")
        queued = [asyncio.create_task(self.ask(text, mode)) for text, mode in writes]
        answers = self.host.answers
        await eventually(lambda: _true(answers._waiting.qsize() == len(writes)), "the commands to queue")
        return held, queued

    async def answered_together(self, *writes: tuple[str, str]) -> list[Outcome]:
        held, queued = await self.queue_behind_a_held_command(*writes)
        self.release.set()
        assert (await held).ok
        return list(await asyncio.gather(*queued))


async def _true(value: bool) -> bool:
    return value


def create_probe(settings: Settings) -> Probe:
    host = ServiceHost("probe", settings, Base.metadata, TABLES, group_commands=True)
    probe = Probe(host)

    @host.answers(Write)
    async def write(command: Write) -> Outcome:
        async with host.uow() as uow:
            probe.sessions[command.text] = uow.session
            if command.mode == "hold":
                await probe.release.wait()
            if command.mode == "own-session":  # a mistake: the task holds the database already
                async with host.db.sessions():
                    pass
            note = Note(text=command.text)
            uow.session.add(note)
            await uow.session.flush()
            if command.mode == "orphan":
                uow.session.add(Orphan(note_id=10**6))
                await uow.session.flush()
            if command.mode == "refuse":
                return Outcome.refused("conflict", f"{command.text} is refused")
            if command.mode == "crash":
                raise RuntimeError("the handler crashed after writing")
            uow.emit(BenchmarkApproved(actor="alice", benchmark_id=note.id, name=command.text))
            await uow.commit()
            return Outcome.accepted(id=note.id)

    return probe


@pytest.fixture
async def probe(nats_url: str, tmp_path: Path) -> AsyncIterator[Probe]:
    p = create_probe(Settings(nats_url=nats_url, state_dir=tmp_path, max_deliveries=3))
    await p.host.start()
    try:
        yield p
    finally:
        p.release.set()
        await p.host.stop()


async def published(nc: nats.NATS) -> list[str]:
    """The names of the events on the APPROVALS stream."""
    return sorted(json.loads(m.data)["name"] for m in await stream_messages(nc.jetstream(), "APPROVALS"))


async def test_queued_commands_share_a_transaction_and_each_stands_alone(probe: Probe, nc: nats.NATS) -> None:
    outcomes = await probe.answered_together(("a", "ok"), ("b", "refuse"), ("c", "crash"), ("d", "ok"))

    assert [(o.ok, o.code) for o in outcomes] == [
        (True, None),
        (False, "conflict"),
        (False, "internal"),  # a crash: the service's own fault, which a retry would repeat
        (True, None),
    ]
    # One transaction: every queued command wrote through the same session, the held one through its own.
    assert len({id(probe.sessions[t]) for t in "abcd"}) == 1
    assert probe.sessions["held"] is not probe.sessions["a"]
    # The refused and the crashed command rolled back alone: their notes and events are gone.
    assert await probe.notes() == ["a", "d", "held"]

    async def events_out() -> bool:
        return await published(nc) == ["a", "d", "held"]

    await eventually(events_out, "the events of the accepted commands, and only those")


async def test_a_failed_commit_answers_every_command_of_its_group_unavailable(probe: Probe, nc: nats.NATS) -> None:
    outcomes = await probe.answered_together(("a", "ok"), ("orphan", "orphan"), ("c", "ok"))

    # "accepted" would be a lie for a and c: their writes went down with the one COMMIT.
    assert [(o.ok, o.code) for o in outcomes] == [(False, "unavailable")] * 3
    assert await probe.notes() == ["held"]
    # The service goes on, on the same database connection.
    assert (await probe.ask("after")).ok
    assert await probe.notes() == ["after", "held"]

    async def events_out() -> bool:
        return await published(nc) == ["after", "held"]

    await eventually(events_out, "the events of the committed commands, and only those")


async def test_stopping_answers_the_commands_already_taken(probe: Probe) -> None:
    held, queued = await probe.queue_behind_a_held_command(("a", "ok"), ("b", "ok"))
    stopping = asyncio.create_task(probe.host.answers.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop() waits for the commands it has taken"
    probe.release.set()
    await stopping
    assert (await held).ok
    assert [o.ok for o in await asyncio.gather(*queued)] == [True, True]
    assert await probe.notes() == ["a", "b", "held"]


async def test_a_handler_that_opens_a_second_session_fails_instead_of_waiting_for_itself(probe: Probe) -> None:
    outcomes = await probe.answered_together(("a", "ok"), ("b", "own-session"))
    assert [(o.ok, o.code) for o in outcomes] == [(True, None), (False, "internal")]
    assert (await probe.ask("c", "own-session")).code == "internal"  # alone, in its own transaction
    assert await probe.notes() == ["a", "held"]
