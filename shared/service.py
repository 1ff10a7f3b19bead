"""What every service process is made of: a broker, a database with its outbox, and a router."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import nats.errors
from faststream.nats import NatsBroker, NatsRouter
from sqlalchemy import MetaData

from shared.answering import Answers
from shared.broker import create_broker, ensure_streams
from shared.commands import Command, Outcome
from shared.db import Database, MessagingTables, UnitOfWork
from shared.events import Event
from shared.limits import LimitExceeded, event_budget, fit_to_broker
from shared.messaging import consume, decode_batch
from shared.outbox import OutboxRelay
from shared.settings import Settings

log = logging.getLogger("medperf.service")

#: Projection events are pulled up to this many at a time, and committed a batch per transaction.
PROJECTION_BATCH = 64
#: ... and, when they trickle in, gathered this many seconds at most (``consume``'s ``linger``).
PROJECTION_LINGER = 0.025
#: A projection handler: one event, in a unit of work it enters and commits itself.
Projection = Callable[[Any, UnitOfWork], Awaitable[None]]


class ServiceHost:
    """Wires one service: ``start`` declares streams and tables, then starts consuming and relaying."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        metadata: MetaData,
        tables: MessagingTables,
        *,
        declare_streams: bool = True,
        group_commands: bool = False,
        command_subject: Callable[[type[Command]], str] | None = None,
    ) -> None:
        """``group_commands``: on SQLite, answer the commands that queue while one is handled in one
        transaction (``shared.answering``). Only for services whose command handlers wait on
        nothing but their unit of work: the group holds the database meanwhile.
        ``command_subject``: where each command is answered, when not on its type's subject (a
        site's agent answers on its own site's subjects only)."""
        if not settings.nats_url:
            raise ValueError("ServiceHost needs settings.nats_url; the launcher starts an embedded server first")
        self.name = name
        self.settings = settings
        self.metadata = metadata
        self.db = Database(settings.database_url_for(name), settings.sqlite_synchronous)
        # A site agent with its own credentials may not manage streams; the central services declare them.
        self.declare_streams = declare_streams
        self.broker: NatsBroker = create_broker(
            settings.nats_url,
            name,
            settings.max_deliveries,
            user=settings.nats_user,
            password=settings.nats_password,
        )
        self.relay = OutboxRelay(self.db, tables, self.broker, reads_streams=declare_streams)
        #: ``@host.answers(SomeCommand)`` decorates the handler of a command or query.
        if group_commands and self.db.serialize:
            self.answers = Answers(name, together=self.together, subject=command_subject)
        else:
            self.answers = Answers(name, workers=1 if self.db.serialize else 8, subject=command_subject)
        # The transaction of the command group being answered, in the answering task only: what
        # other tasks (projections) open stays a transaction of its own.
        self._group: ContextVar[UnitOfWork | None] = ContextVar(f"{name}-command-group", default=None)
        self._tables = tables
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._stopped = False

    def uow(self) -> UnitOfWork:
        """A unit of work: a transaction, or a step of the command group being answered."""
        group = self._group.get()
        return UnitOfWork(self.db, self._tables, self.relay) if group is None else group.step()

    @contextlib.asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        """One transaction for every unit of work opened inside (each is a step of it), committed
        at the end; an error leaves nothing of it written."""
        async with UnitOfWork(self.db, self._tables, self.relay) as group:
            token = self._group.set(group)
            try:
                yield
            finally:
                self._group.reset(token)
            await group.commit()

    def projects(
        self, router: NatsRouter, event_type: type[Event], project: Projection, batch_size: int = PROJECTION_BATCH
    ) -> None:
        """Subscribe ``project`` to ``event_type`` in batches (``project_batch``)."""

        async def on_batch(deliveries: list[tuple[str, bytes]]) -> dict[int, Exception]:
            return await project_batch(event_type, deliveries, self.uow(), project)

        # FastStream names the subscriber (and its AsyncAPI entry) after the function.
        on_batch.__name__ = on_batch.__qualname__ = f"on_{event_type.model_fields['type'].default.replace('.', '_')}"
        router.subscriber(**consume(self.name, event_type, batch_size=batch_size, linger=PROJECTION_LINGER))(on_batch)

    def include(self, router: NatsRouter, publishes: tuple[type[Event], ...] = ()) -> None:
        """Add the service's handlers, and document the events it publishes.

        Events leave through the outbox relay (``broker.publish``), not through FastStream
        publisher objects; these declarations exist so the AsyncAPI document shows them."""
        for event_type in publishes:
            router.publisher(
                event_type.subscription(),
                schema=event_type,
                title=f"{event_type.subscription()}:{event_type.__name__}",
                description=(event_type.__doc__ or "").strip(),
            )
        self.broker.include_router(router)

    def specification(self) -> NatsBroker:
        """The broker as the AsyncAPI document shows it: with the commands this service answers,
        which plain nats-py subscriptions answer (shared/answering.py). For documentation only."""
        router = NatsRouter()
        self.answers.document(router)
        self.broker.include_router(router)
        return self.broker

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_start.append(hook)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._on_stop.append(hook)

    async def start(self) -> None:
        assert self.settings.nats_url
        if self.declare_streams:
            s = self.settings
            await ensure_streams(s.nats_url, s.nats_replicas, user=s.nats_user, password=s.nats_password)
        await self.db.create_all(self.metadata)
        await self._start_broker()
        fit_to_broker(self.broker.connection.max_payload)  # no event or answer larger than it takes
        await self.answers.start(self.broker.connection)
        self.relay.start()
        await self.relay.publish_pending()  # events committed before a crash go out first
        for hook in self._on_start:
            await hook()
        log.info("%s started", self.name)

    async def _start_broker(self, attempts: int = 5) -> None:
        """Subscribe, retrying a JetStream API call that times out: a cluster that has just started
        (or lost a node) may still be electing its streams' leaders, which is no reason to exit.
        Subscriptions already made are kept across attempts (FastStream skips them)."""
        for attempt in range(1, attempts + 1):
            try:
                await self.broker.start()
                return
            except nats.errors.TimeoutError:
                if attempt == attempts:
                    raise
                log.warning(
                    "%s: the broker did not answer while subscribing (attempt %d); retrying", self.name, attempt
                )
                await asyncio.sleep(attempt)

    async def stop(self) -> None:
        if self._stopped:  # a test (or an operator) stopped it before its owner's exit stack did
            return
        self._stopped = True
        for hook in reversed(self._on_stop):
            await hook()
        await self.answers.stop()
        await self.relay.stop()
        connection = self.broker.connection
        try:
            await self.broker.stop()
        except Exception:  # the server is gone, so the connection cannot drain: drop it instead
            log.warning("%s: broker connection lost while stopping; closing it without draining", self.name)
            if connection is not None and not connection.is_closed:
                with contextlib.suppress(Exception):
                    await connection.close()
        finally:
            await self.db.dispose()


async def project_batch(
    event_type: type[Event], deliveries: list[tuple[str, bytes]], uow: UnitOfWork, project: Projection
) -> dict[int, Exception]:
    """Apply a batch of events in one transaction, each through ``project`` in a step of its own
    (a SAVEPOINT): an event whose handler fails is rolled back and refused alone (retried, or parked
    as ``shared.messaging`` decides), the others commit together. Returns the refusals by position.

    A transaction per event costs several times the event's own work (begin, commit, the inbox
    lookup's round trips); at registration rates that was most of a projection's CPU."""
    decoded, refused = decode_batch(event_type, deliveries)
    if not decoded:
        return refused
    if len(decoded) == 1:  # the batch's own transaction is the step: no SAVEPOINT to pay for
        index, _subject, event = decoded[0]
        try:
            await project(event, uow)
        except Exception as exc:
            refused[index] = exc
        return refused
    async with uow:
        for index, _subject, event in decoded:
            try:
                await project(event, uow.step())
            except Exception as exc:
                refused[index] = exc
        await uow.commit()
    return refused


async def ask(broker: NatsBroker, command: Command, timeout: float) -> Outcome:
    """Send a command or query to its owning service and return the service's answer.

    A plain nats-py request on the broker's connection: FastStream's ``broker.request`` wraps the
    same request in its publisher middleware and message objects, ~0.3 ms of CPU per call on the
    ingress, whose every HTTP request makes one."""
    data = command.model_dump_json().encode()
    if len(data) > event_budget():  # the broker would refuse it, and close the connection
        raise LimitExceeded("the request", len(data), event_budget(), "the broker's max_payload less header room")
    reply = await broker.connection.request(command.destination(), data, timeout=timeout, headers=JSON_HEADERS)
    return Outcome.model_validate_json(reply.data)


#: What FastStream's own requests carry: the answering handler decodes the body as JSON.
JSON_HEADERS = {"content-type": "application/json"}
