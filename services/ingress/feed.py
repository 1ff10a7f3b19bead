"""The console's live event feed: an ordered, ephemeral JetStream consumer on the FEED stream
(every event stream in one sequence), from a point in history, filtered, as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.console.domain import EventFilter
from services.console.visibility import Relations, visible
from shared.streams import FEED

KEEPALIVE_SECONDS = 15.0  # an SSE comment this often keeps proxies from closing an idle feed
#: A reader's relations are asked of the registry again when older than this, at the next event:
#: what they came to own elsewhere (an association, a key) shows within seconds, without reconnecting.
REFRESH_SECONDS = 5.0


@dataclass(frozen=True)
class Start:
    """Where the feed begins: a stream sequence, a time, the last ``last`` events, or (none) now."""

    sequence: int | None = None
    time: datetime | None = None
    last: int | None = None


def sse(data: dict[str, Any], id: int | None = None, event: str | None = None) -> str:
    lines = [f"id: {id}"] if id is not None else []
    if event:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'), default=str)}")
    return "\n".join(lines) + "\n\n"


@dataclass
class Reader:
    """Who reads a feed, and what they own; ``fetch`` asks the registry again (None: never)."""

    relations: Relations
    fetch: Callable[[], Awaitable[Relations]] | None = None
    fetched_at: float = field(default_factory=time.monotonic)

    async def admit(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """``item`` as this reader may see it, or None."""
        if self.relations.is_admin:
            return item
        if self.fetch is not None and time.monotonic() - self.fetched_at > REFRESH_SECONDS:
            self.fetched_at = time.monotonic()
            with contextlib.suppress(Exception):  # the registry is busy: keep what is known, ask later
                self.relations = await self.fetch()
        self.relations = self.relations.learn(item)
        return visible(item, self.relations)


def entry(msg: Msg) -> dict[str, Any]:
    """One feed message as the console shows it: its place in the feed, its subject, the event."""
    try:
        event = json.loads(msg.data)
        if not isinstance(event, dict):
            raise ValueError("not an object")
    except ValueError:  # something unreadable reached a stream; show it rather than hide it
        event = {"type": "unreadable", "raw": msg.data[:500].decode("utf-8", errors="replace")}
    meta = msg.metadata
    return {"seq": meta.sequence.stream, "subject": msg.subject, "stored_at": meta.timestamp, "event": event}


async def open_tail(
    nc: NatsClient, start: Start, keep: EventFilter, follow: bool, reader: Reader
) -> AsyncIterator[str]:
    """SSE text: the matching history from ``start`` that ``reader`` may see, a ``live`` marker,
    then (``follow``) new events as they arrive; without ``follow`` it ends after the history, like
    ``tail`` without ``-f``.
    The consumer is created here, before any byte is sent, so a refusal can still be an HTTP error."""
    js = nc.jetstream()
    info = await js.stream_info(FEED.name)
    last_seq = info.state.last_seq
    policy, config = DeliverPolicy.NEW, ConsumerConfig()
    if start.sequence is not None:
        policy, config = DeliverPolicy.BY_START_SEQUENCE, ConsumerConfig(opt_start_seq=start.sequence)
    elif start.time is not None:
        policy, config = DeliverPolicy.BY_START_TIME, ConsumerConfig(opt_start_time=start.time)
    elif start.last:
        first = max(info.state.first_seq, last_seq - start.last + 1, 1)
        policy, config = DeliverPolicy.BY_START_SEQUENCE, ConsumerConfig(opt_start_seq=first)
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def deliver(msg: Msg) -> None:
        await queue.put(msg)

    sub = await js.subscribe(
        "medperf.>", stream=FEED.name, ordered_consumer=True, deliver_policy=policy, config=config, cb=deliver
    )
    try:
        history_left = False
        if policy is not DeliverPolicy.NEW:  # is there anything between the start and now to replay?
            consumer = await sub.consumer_info()
            history_left = consumer.num_pending + (consumer.delivered.consumer_seq or 0) > 0
    except BaseException:
        await sub.unsubscribe()
        raise
    return _stream(sub, queue, keep, follow, reader, last_seq if history_left else None)


async def _stream(
    sub: Any, queue: asyncio.Queue[Msg], keep: EventFilter, follow: bool, reader: Reader, history_until: int | None
) -> AsyncIterator[str]:
    last_seq = history_until or 0
    try:
        while history_until is not None:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:  # the history was trimmed meanwhile; carry on live
                break
            item = entry(msg)
            last_seq = item["seq"]
            if (shown := await reader.admit(item)) is not None and keep.matches(shown["event"]):
                yield sse(shown, id=shown["seq"])
            if item["seq"] >= history_until:
                break
        yield sse({"seq": last_seq}, event="live")
        while follow:
            try:
                msg = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            item = entry(msg)
            if (shown := await reader.admit(item)) is not None and keep.matches(shown["event"]):
                yield sse(shown, id=shown["seq"])
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
