"""Answering commands and queries: request/reply on core NATS, one handler per command type.

The ingress asks (``shared.service.ask``) and waits for the ``Outcome``; the owning service answers
here. Replicas share a command type as a queue group, so each request is answered once.

These are plain nats-py subscriptions, not FastStream subscribers: for a command, FastStream's
machinery (message context, dependency injection, its middleware stack, a publisher object for
the reply) cost ~0.5 ms of CPU, as much as a registration's whole transaction (bench/registry.py:
the registry's CPU per registration went from 2.2 to 1.7 ms). Nothing here needs what it offers:
a command is decoded into its model, handled, and answered. FastStream still documents them
(``Answers.document``), so ``medperf asyncapi`` lists every command a service answers.

Group commit (``together``, SQLite): SQLite runs one transaction at a time, and a registration's
own transaction (BEGIN, the statements, COMMIT) is about a third of the registry's CPU for it. The
commands that queue while one is handled are therefore answered together, in one transaction,
each handler in a step of its own (a SAVEPOINT): a refused or failed command rolls back alone, and
every answer leaves after the COMMIT it reports, so no caller hears "accepted" for a write that a
failed COMMIT then lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from faststream.nats import NatsRouter
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from shared.commands import Command, Outcome
from shared.limits import LimitExceeded, check_consumed, event_budget
from shared.messaging import describe

log = logging.getLogger("medperf.answering")
C = TypeVar("C", bound=Command)
#: A handler answers with an Outcome, or with one already encoded (a large cached answer).
Handler = Callable[[Any], Awaitable[Outcome | bytes]]
#: At most this many commands share a transaction: a bound on how long the first one waits.
GROUP_LIMIT = 64
#: What a command group needs from its service: a context in which the handlers' units of work are
#: steps of one transaction, committed when the context ends (``ServiceHost.together``).
Together = Callable[[], AbstractAsyncContextManager[None]]
_UNAVAILABLE = (
    Outcome.refused("unavailable", "the service could not commit this request; try again").model_dump_json().encode()
)


class Answers:
    """The commands one service answers, and the subscriptions that answer them."""

    def __init__(
        self,
        service: str,
        workers: int = 1,
        together: Together | None = None,
        subject: Callable[[type[Command]], str] | None = None,
    ) -> None:
        """``workers`` > 1 answers several commands at once, which pays only where handlers wait on
        I/O (PostgreSQL); on SQLite every transaction runs inline and queues anyway. ``together``
        answers the commands that queue meanwhile as one group instead (the module's docstring).
        ``subject``: where a command type is answered (default: its own subject)."""
        if together is not None and workers != 1:
            raise ValueError("commands are answered either concurrently or together, not both")
        self.service = service
        self.workers = workers
        self.handlers: dict[type[Command], Handler] = {}
        self.subject: Callable[[type[Command]], str] = subject or (lambda command_type: command_type.subject())
        self._subscriptions: list[Subscription] = []
        self._slots = asyncio.Semaphore(workers)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._together = together
        self._waiting: asyncio.Queue[tuple[type[Command], Handler, Msg]] = asyncio.Queue()
        self._grouping: asyncio.Task[None] | None = None

    def __call__(self, command_type: type[C]) -> Callable[[Callable[[C], Awaitable[Outcome | bytes]]], Handler]:
        """Decorate the handler of ``command_type``: ``@host.answers(RegisterContainer)``."""

        def register(handler: Callable[[C], Awaitable[Outcome | bytes]]) -> Handler:
            if command_type in self.handlers:
                raise ValueError(f"{self.service} answers {command_type.__name__} twice")
            self.handlers[command_type] = handler
            return handler

        return register

    @property
    def queue(self) -> str:
        return f"{self.service}-commands"

    async def start(self, connection: Client) -> None:
        if self._together is not None:
            self._grouping = asyncio.create_task(self._answer_together(connection), name=f"{self.service}-commands")
        for command_type, handler in self.handlers.items():
            answer = self._answerer(command_type, handler, connection)
            subscription = await connection.subscribe(self.subject(command_type), queue=self.queue, cb=answer)
            self._subscriptions.append(subscription)

    async def stop(self) -> None:
        """Take no more commands, and finish answering the ones already taken."""
        for subscription in self._subscriptions:
            try:
                await subscription.unsubscribe()
            except Exception:  # the connection is gone; so are the subscriptions
                log.debug("%s: unsubscribing from %s failed", self.service, subscription.subject, exc_info=True)
        self._subscriptions.clear()
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        if self._grouping is not None:
            if not self._grouping.done():
                await self._waiting.join()
            self._grouping.cancel()
            self._grouping = None

    def _answerer(self, command_type: type[Command], handler: Handler, connection: Client) -> Callable[[Msg], Any]:
        async def answer(msg: Msg) -> None:
            reply = await _answer(command_type, handler, msg.data, msg.subject)
            if msg.reply:
                await connection.publish(msg.reply, reply)

        async def wait_for_a_group(msg: Msg) -> None:
            self._waiting.put_nowait((command_type, handler, msg))

        if self._together is not None:
            return wait_for_a_group
        if self.workers == 1:
            return answer

        async def answer_concurrently(msg: Msg) -> None:
            # The subscription hands over its next message when this returns: wait only for a slot.
            await self._slots.acquire()
            task = asyncio.create_task(answer(msg))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

        return answer_concurrently

    async def _answer_together(self, connection: Client) -> None:
        """Answer what waits, a group at a time: all of it, up to ``GROUP_LIMIT`` commands."""
        waiting = self._waiting
        while True:
            group = [await waiting.get()]
            while len(group) < GROUP_LIMIT and not waiting.empty():
                group.append(waiting.get_nowait())
            try:
                await self._answer_group(group, connection)
            except Exception:  # a reply that could not be sent: the callers time out, as they would anyway
                log.exception("%s: answering a group of %d commands failed", self.service, len(group))
            finally:
                for _ in group:
                    waiting.task_done()

    async def _answer_group(self, group: list[tuple[type[Command], Handler, Msg]], connection: Client) -> None:
        assert self._together is not None
        if len(group) == 1:  # a lone command: its own transaction is the group's, without a SAVEPOINT
            command_type, handler, msg = group[0]
            replies = [await _answer(command_type, handler, msg.data, msg.subject)]
        else:
            replies = []
            try:
                async with self._together():
                    for command_type, handler, msg in group:
                        replies.append(await _answer(command_type, handler, msg.data, msg.subject))
            except Exception:  # the COMMIT failed (a deferred constraint, a full disk): nothing was written
                log.exception("%s: committing a group of %d commands failed", self.service, len(group))
                replies = [_UNAVAILABLE] * len(group)
        for (_, _, msg), reply in zip(group, replies, strict=True):
            if msg.reply:
                await connection.publish(msg.reply, reply)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: answering a command failed", self.service, exc_info=task.exception())

    def document(self, router: NatsRouter) -> None:
        """Declare each command as a FastStream subscriber of ``router``, for the AsyncAPI
        document only: a broker that included the router would answer them a second time."""
        for command_type, handler in self.handlers.items():
            router.subscriber(self.subject(command_type), queue=self.queue)(_documented(command_type, handler))


def _documented(command_type: type[Command], handler: Handler) -> Handler:
    """``handler`` as FastStream reads a subscriber: its name, and the command type as its
    message (the annotations say what the AsyncAPI document shows)."""

    async def answer(command: Any) -> Outcome | bytes:
        return await handler(command)

    answer.__annotations__ = {"command": command_type, "return": Outcome}
    answer.__name__ = answer.__qualname__ = getattr(handler, "__name__", command_type.__name__)
    answer.__doc__ = command_type.__doc__
    return answer


async def _answer(command_type: type[Command], handler: Handler, data: bytes, subject: str) -> bytes:
    """Commands always get an answer: a malformed one is refused with the reason, one past a
    limit (or whose event or answer would be) as too large, and a crash is reported as an
    internal fault (and logged) instead of leaving the caller to time out."""
    try:
        check_consumed(data)
        command = command_type.model_validate_json(data)
    except LimitExceeded as exc:
        return Outcome.refused("too_large", str(exc)).model_dump_json().encode()
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Outcome.refused("invalid", describe(exc)).model_dump_json().encode()
    try:
        outcome = await handler(command)
    except LimitExceeded as exc:  # e.g. the event it would record is over the broker's limit
        outcome = Outcome.refused("too_large", str(exc))
    except Exception:
        log.exception("command on %s failed", subject)
        outcome = Outcome.refused("internal", "the service failed while handling this request; see its log")
    reply = outcome if isinstance(outcome, bytes) else outcome.model_dump_json().encode()
    if len(reply) > event_budget():
        too_large = LimitExceeded("the answer", len(reply), event_budget(), "the broker's max_payload")
        return Outcome.refused("too_large", f"{too_large}; ask for fewer rows").model_dump_json().encode()
    return reply
