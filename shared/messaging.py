"""Consumer plumbing: durable pull consumers, acknowledgement after commit, bounded retries and
the dead-letter subject.

Handlers stay plain async functions. Acknowledgement is decided here, in one place:

- the handler returned: ack (its own transaction has committed by then);
- the message is malformed (it does not decode into the declared event): dead-letter at once,
  because redelivering the same bytes cannot help;
- the handler raised: nack with a growing delay, and dead-letter after ``max_deliveries``.

FastStream's default policy would *terminate* a failed JetStream message, losing it silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import nats.errors
from faststream import AckPolicy
from faststream._internal.middlewares import BaseMiddleware
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.subscriber.usecases.stream_pull_subscriber import BatchPullStreamSubscriber
from nats.js.client import JetStreamContext
from nats.js.errors import ServiceUnavailableError
from pydantic import ValidationError

from shared.events import DeadLetter, Event
from shared.limits import LimitExceeded, check_consumed
from shared.streams import ALL_STREAMS, deadletter_subject

log = logging.getLogger("medperf.messaging")
E = TypeVar("E", bound=Event)

MAX_PAYLOAD_KEPT = 64 * 1024
#: Parking must not fail on a broker that is merely busy (a flood of bad messages makes it so).
PARK_TIMEOUT = 10.0


class PermanentFailure(Exception):
    """Raised by a handler for a message that can never succeed (e.g. refers to a missing entity)."""


class NotYet(Exception):
    """Raised by a handler that needs a fact from another stream that has not arrived yet.
    Expected in an eventually consistent system, so it is retried quietly."""


def _stream_of(subject: str) -> JStream:
    prefix = subject.split("*")[0]
    for stream in ALL_STREAMS:
        if any(prefix.startswith(pattern.removesuffix(">")) for pattern in stream.subjects):
            return JStream(stream.name, declare=False)
    raise ValueError(f"no stream captures {subject!r}")


def durable_name(consumer: str, event_type: type[Event]) -> str:
    """The durable consumer ``consumer`` keeps for ``event_type`` (one token: no dots)."""
    return f"{consumer}-{event_type.model_fields['type'].default.replace('.', '-')}"


def stream_name_of(subject: str) -> str:
    return _stream_of(subject).name


def consume(
    consumer: str,
    event_type: type[Event],
    *,
    ack_wait: float = 60.0,
    batch_size: int | None = None,
    linger: float = 0.0,
    user: str | None = None,
) -> dict[str, Any]:
    """Subscriber options for ``consumer``'s durable, explicitly acknowledged consumer of ``event_type``.

    ``consumer`` is the service (or ``site-<name>`` for an agent); the durable name adds the type.
    With ``batch_size`` the handler takes a list of (subject, payload) pairs (``decode_batch``) and
    returns the refusals by position; a batch is then one transaction instead of one per message.
    ``linger``: after a batch that was not full, wait this long before fetching the next, so that
    events arriving one by one are taken a few at a time (``_LingeringPull``).
    ``user``: the NATS user, whose own inboxes receive the pulled messages (FastStream would use
    ``_INBOX.`` whatever the connection's prefix, which a site's credentials do not allow).
    """
    subject = event_type.subscription()
    options: dict[str, Any] = {"inbox_prefix": f"_INBOX.{user}.".encode()} if user else {}
    options |= {
        "subject": subject,
        "stream": _stream_of(subject),
        "durable": durable_name(consumer, event_type),
        "pull_sub": PullSub(batch_size=16, timeout=1.0),
        "config": ConsumerConfig(ack_wait=ack_wait, max_ack_pending=256),
        "ack_policy": AckPolicy.MANUAL,
    }
    if batch_size is not None:
        # A batch is what is there when it is fetched (``_batches_as_they_come``): up to
        # batch_size when a backlog has built up, one lone event at once when it is quiet.
        options["pull_sub"] = _LingeringPull(batch_size=batch_size, timeout=1.0, linger=linger)
        options["config"] = ConsumerConfig(ack_wait=ack_wait, max_ack_pending=4 * batch_size)
        options["decoder"] = _payloads
    return options


class _LingeringPull(PullSub):  # type: ignore[type-arg]
    """A batch pull that rests ``linger`` seconds after a batch that was not full.

    A lone event after a quiet spell still goes at once (the fetch is already waiting for it).
    When events come one by one at a steady rate, a batch costs the same whether it holds one
    event or ten (the pull, the transaction, its commit): bench/registry.py measured ~0.4 ms of
    the aggregator's CPU per batch against ~0.1 ms per event. A short rest lets a few gather."""

    __slots__ = ("linger",)

    def __init__(self, batch_size: int, timeout: float, linger: float) -> None:
        super().__init__(batch_size=batch_size, timeout=timeout, batch=True)
        self.linger = linger


async def _payloads(msg: Any) -> list[tuple[str, bytes]]:
    # The subject travels with each payload: it is what the broker checked against the
    # publisher's credentials, where the body is only what the publisher wrote.
    return [(raw.subject, raw.data) for raw in msg.raw_message]


def decode_batch(
    event_type: type[E], deliveries: list[tuple[str, bytes]]
) -> tuple[list[tuple[int, str, E]], dict[int, Exception]]:
    """The events that decode (position, subject, event), and the errors of those that do not."""
    decoded: list[tuple[int, str, E]] = []
    malformed: dict[int, Exception] = {}
    for index, (subject, payload) in enumerate(deliveries):
        try:
            check_consumed(payload)
            decoded.append((index, subject, event_type.model_validate_json(payload)))
        except (ValidationError, LimitExceeded) as exc:
            malformed[index] = exc
    return decoded, malformed


class DeadLetters:
    """Broker middleware factory applying the acknowledgement rules above to JetStream messages."""

    def __init__(self, service: str, max_deliveries: int) -> None:
        self.service = service
        self.max_deliveries = max_deliveries
        self.broker: NatsBroker | None = None

    def __call__(self, msg: Any, /, *, context: Any) -> _DeadLetterScope:
        return _DeadLetterScope(msg, context=context, policy=self)

    async def park(self, raw: Any, reason: str, deliveries: int) -> None:
        assert self.broker is not None, "DeadLetters.broker is set by create_broker"
        meta = raw.metadata
        letter = DeadLetter(
            service=self.service,
            consumer=meta.consumer or "",
            subject=raw.subject,
            reason=reason[:2000],
            deliveries=deliveries,
            payload=raw.data[:MAX_PAYLOAD_KEPT].decode("utf-8", errors="replace"),
            stream_sequence=meta.sequence.stream,
        )
        await self.broker.publish(
            letter.model_dump_json().encode(),
            deadletter_subject(self.service),
            # One letter per message and consumer: if the publish's acknowledgement is lost (a busy
            # broker), the message comes back, is parked again, and JetStream drops the second copy.
            headers={
                "content-type": "application/json",
                "Nats-Msg-Id": f"{meta.stream}.{meta.sequence.stream}.{letter.consumer}",
            },
            stream="DEADLETTER",
            timeout=PARK_TIMEOUT,
        )
        log.warning(
            "dead-lettered %s from %s after %d deliveries: %s", raw.subject, letter.consumer, deliveries, reason
        )

    async def settle(self, raw: Any, error: BaseException | None) -> None:
        """Acknowledge, retry later, or park one JetStream message, by how its handling ended."""
        deliveries = raw.metadata.num_delivered
        if error is None:
            await raw.ack()
        elif isinstance(error, (*MALFORMED, PermanentFailure)):
            await self.park(raw, f"rejected: {describe(error)}", deliveries)
            await raw.term()
        elif deliveries >= self.max_deliveries:
            await self.park(raw, f"failed {deliveries} times; last error: {describe(error)}", deliveries)
            await raw.term()
        else:
            level = logging.INFO if isinstance(error, NotYet) else logging.WARNING
            log.log(level, "handler failed on %s (delivery %d), will retry: %s", raw.subject, deliveries, error)
            await raw.nak(delay=min(0.5 * 2.0 ** (deliveries - 1), 30.0))

    async def overdue(self, raw: Any) -> bool:
        """Park a message whose earlier deliveries never came back (the process died, or the ack
        wait ran out) more often than allowed."""
        deliveries = raw.metadata.num_delivered
        if deliveries <= self.max_deliveries:
            return False
        await self.park(raw, f"gave up after {deliveries - 1} deliveries without an answer", deliveries)
        await raw.term()
        return True


#: Refused at once: redelivering the same bytes cannot help (a message past a limit is one of them).
MALFORMED = (ValidationError, json.JSONDecodeError, UnicodeDecodeError, LimitExceeded)


class _DeadLetterScope(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: Any, policy: DeadLetters) -> None:
        super().__init__(msg, context=context)
        self.policy = policy

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        raw = msg.raw_message
        if isinstance(raw, list):
            return await self._consume_batch(call_next, msg, raw)
        if not _is_jetstream(raw):  # a reply to a request made through the broker: nothing to settle
            return await call_next(msg)
        if await self.policy.overdue(raw):
            return None
        try:
            check_consumed(raw.data)
            result = await call_next(msg)
        except Exception as exc:
            await self.policy.settle(raw, exc)
            return None
        await self.policy.settle(raw, None)
        return result

    async def _consume_batch(self, call_next: Any, msg: Any, batch: list[Any]) -> None:
        """The handler returns its refusals by position; everything else in the batch committed."""
        kept = [raw for raw in batch if not await self.policy.overdue(raw)]
        if not kept:
            return
        msg.raw_message = kept  # the decoder reads the payloads from here
        try:
            refused: dict[int, BaseException] = await call_next(msg) or {}
        except Exception as exc:  # nothing committed: each message is retried (or parked) alone
            refused = dict.fromkeys(range(len(kept)), exc)
        for index, raw in enumerate(kept):
            await self.policy.settle(raw, refused.get(index))


@contextlib.asynccontextmanager
async def still_working(msg: Any, ack_wait: float) -> AsyncIterator[None]:
    """Tell JetStream, every third of ``ack_wait``, that ``msg`` is still being handled, so a long
    handler (a container run) keeps its message, while one whose process died gets it redelivered
    after ``ack_wait`` instead of holding it for as long as the longest handler could take."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(ack_wait / 3)
            await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _fetch_timeouts_as_nats_errors() -> None:
    """nats-py's ``fetch`` can raise a bare ``asyncio.TimeoutError`` when its deadline runs out
    (where it documents ``nats.errors.TimeoutError``, a subclass), and FastStream 0.7.8's pull
    loops catch only the subclass. The escape restarts the loop, and the batch loop then drops the
    messages it had already pulled: unacknowledged, they came back only after the ack wait (60 s).
    Translating the error at its source keeps both loops on their normal path."""
    original = JetStreamContext.PullSubscription.fetch
    if getattr(original, "translates_timeouts", False):
        return

    async def fetch(self: JetStreamContext.PullSubscription, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc

    fetch.translates_timeouts = True  # type: ignore[attr-defined]
    JetStreamContext.PullSubscription.fetch = fetch  # type: ignore[method-assign]


_fetch_timeouts_as_nats_errors()


def _batches_as_they_come() -> None:
    """FastStream 0.7.8's batch subscriber fetches again and again until its batch is full or its
    timeout has run out, so a lone event waited out the whole timeout (and a short timeout made
    every idle consumer poll the server many times a second). nats-py's fetch already returns as
    soon as messages arrive, with whatever else is pending: one fetch per batch lets batches grow
    with the backlog (one transaction for many events under load) and a lone event go at once."""

    async def consume_pull(self: BatchPullStreamSubscriber) -> None:
        assert self.subscription, "the subscription is made before the loop starts"
        while self.running:
            try:
                messages = await self.subscription.fetch(batch=self.pull_sub.batch_size, timeout=self.pull_sub.timeout)
            except nats.errors.TimeoutError:
                continue  # nothing came
            except (nats.errors.ConnectionClosedError, ServiceUnavailableError):
                await asyncio.sleep(0.1)  # the connection is closing or re-established: not a busy loop
                continue
            if messages and self.running:
                await self.consume(messages)
                linger = getattr(self.pull_sub, "linger", 0.0)
                if linger and len(messages) < self.pull_sub.batch_size:
                    await asyncio.sleep(linger)

    BatchPullStreamSubscriber._consume_pull = consume_pull  # type: ignore[method-assign]


_batches_as_they_come()


def _is_jetstream(raw: Any) -> bool:
    return bool(getattr(raw, "reply", None)) and raw.reply.startswith("$JS.ACK")


def describe(exc: BaseException) -> str:
    if isinstance(exc, LimitExceeded):
        return f"malformed message: {exc}"
    if isinstance(exc, ValidationError):
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}" for e in exc.errors()[:5])
        return f"malformed message: {errors}"
    return f"{type(exc).__name__}: {exc}"
