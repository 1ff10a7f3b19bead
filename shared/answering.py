"""Answering commands and queries: request/reply on core NATS, one handler per command type.

The ingress asks (``shared.service.ask``) and waits for the ``Outcome``; the owning service answers
here. Replicas share a command type as a queue group, so each request is answered once.

These are plain nats-py subscriptions, not FastStream subscribers: for a command, FastStream's
machinery (message context, dependency injection, its middleware stack, a publisher object for
the reply) cost ~0.5 ms of CPU, as much as a registration's whole transaction (bench/registry.py:
the registry's CPU per registration went from 2.2 to 1.7 ms). Nothing here needs what it offers:
a command is decoded into its model, handled, and answered. FastStream still documents them
(``Answers.document``), so ``medperf asyncapi`` lists every command a service answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsRouter
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from shared.commands import Command, Outcome
from shared.messaging import describe

log = logging.getLogger("medperf.answering")
C = TypeVar("C", bound=Command)
#: A handler answers with an Outcome, or with one already encoded (a large cached answer).
Handler = Callable[[Any], Awaitable[Outcome | bytes]]


class Answers:
    """The commands one service answers, and the subscriptions that answer them."""

    def __init__(self, service: str, workers: int = 1) -> None:
        """``workers`` > 1 answers several commands at once, which pays only where handlers wait on
        I/O (PostgreSQL); on SQLite every transaction runs inline and queues anyway."""
        self.service = service
        self.workers = workers
        self.handlers: dict[type[Command], Handler] = {}
        self._subscriptions: list[Subscription] = []
        self._slots = asyncio.Semaphore(workers)
        self._in_flight: set[asyncio.Task[None]] = set()

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
        for command_type, handler in self.handlers.items():
            answer = self._answerer(command_type, handler, connection)
            subscription = await connection.subscribe(command_type.subject(), queue=self.queue, cb=answer)
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

    def _answerer(self, command_type: type[Command], handler: Handler, connection: Client) -> Callable[[Msg], Any]:
        async def answer(msg: Msg) -> None:
            reply = await _answer(command_type, handler, msg.data, msg.subject)
            if msg.reply:
                await connection.publish(msg.reply, reply)

        if self.workers == 1:
            return answer

        async def answer_concurrently(msg: Msg) -> None:
            # The subscription hands over its next message when this returns: wait only for a slot.
            await self._slots.acquire()
            task = asyncio.create_task(answer(msg))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

        return answer_concurrently

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: answering a command failed", self.service, exc_info=task.exception())

    def document(self, router: NatsRouter) -> None:
        """Declare each command as a FastStream subscriber of ``router``, for the AsyncAPI
        document only: a broker that included the router would answer them a second time."""
        for command_type, handler in self.handlers.items():
            router.subscriber(command_type.subject(), queue=self.queue)(_documented(command_type, handler))


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
    """Commands always get an answer: a malformed one is refused with the reason, a crash is
    reported as unavailable (and logged) instead of leaving the caller to time out."""
    try:
        command = command_type.model_validate_json(data)
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Outcome.refused("invalid", describe(exc)).model_dump_json().encode()
    try:
        outcome = await handler(command)
    except Exception:
        log.exception("command on %s failed", subject)
        outcome = Outcome.refused("unavailable", "the service failed while handling this request; see its log")
    return outcome if isinstance(outcome, bytes) else outcome.model_dump_json().encode()
