"""The outbox relay: committed outbox rows (``shared.db.UnitOfWork``) out to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import nats.errors
from faststream.nats import NatsBroker
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from sqlalchemy import Table, bindparam, select, update

from shared.db import Database, MessagingTables, execute_prebuilt
from shared.events import DeadLetter, utcnow
from shared.limits import HEADER_ROOM
from shared.messaging import MAX_PAYLOAD_KEPT
from shared.streams import ALL_STREAMS, DEADLETTER, DUPLICATE_WINDOW, deadletter_subject

log = logging.getLogger("medperf.outbox")
#: Seconds to wait for JetStream to acknowledge a batch of publishes.
PUBLISH_TIMEOUT = 5.0
#: How far the clocks of a service and of the nats-server may disagree (when a row was written
#: against when the stream stored it).
CLOCK_SKEW = timedelta(minutes=5)


@functools.cache
def _mark_published(outbox: Table) -> Any:
    # One row per execution (of many): a prebuilt statement cannot take an IN list of any length.
    return update(outbox).where(outbox.c.event_id == bindparam("event"))


def _stream_for(subject: str) -> str:
    for stream in ALL_STREAMS:
        if any(subject.startswith(pattern.removesuffix(">")) for pattern in stream.subjects):
            return stream.name
    raise ValueError(f"no stream captures subject {subject!r}")


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, in order, at least once.

    ``Nats-Msg-Id`` is the event id, so JetStream drops a row published twice (e.g. a crash between
    the publish and the mark) within its duplicate window; consumers dedupe anything later.

    A unit of work that commits hands its rows over (``wake``), and they go out without being read
    back; the table is swept every ``sweep_interval`` for rows committed by writers without a relay
    (another process, the site CLI), and after any failure, before anything else goes out.
    """

    def __init__(
        self,
        db: Database,
        tables: MessagingTables,
        broker: NatsBroker,
        sweep_interval: float = 1.0,
        *,
        reads_streams: bool = True,
    ) -> None:
        """``reads_streams``: whether this process may read the streams it publishes to (central
        services may; a site's credentials allow no reads), to look for rows sent before."""
        self._db = db
        self._reads_streams = reads_streams
        self._service = tables.outbox.name.removesuffix("_outbox")
        self._outbox = tables.outbox
        self._broker = broker
        self._sweep_interval = sweep_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._js: JetStreamContext | None = None
        self._js_connection: object = None
        #: Rows committed by this process since the relay last looked, in commit order.
        self._committed: list[SimpleNamespace] = []
        self._swept_at = 0.0

    def wake(self, committed: list[dict[str, Any]]) -> None:
        self._committed.extend(SimpleNamespace(**row) for row in committed)
        self._wakeup.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            # The flag, not only the cancel: Python 3.11's wait_for can swallow a cancellation that
            # lands as the wait ends (the relay then never stopped, and shutdown hung).
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.publish_pending()  # flush what was committed just before shutdown
        except Exception:  # the rows stay in the outbox and go out at the next start
            log.warning("outbox not fully flushed at shutdown; it will be published at the next start")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sweep_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                if self._committed and time.monotonic() - self._swept_at < self._sweep_interval:
                    await self._publish_committed()
                else:
                    await self.publish_pending()
            except Exception:  # the broker may be restarting; the next sweep retries
                self._swept_at = 0.0  # whatever failed goes out from the table, before anything newer
                log.exception("outbox relay could not publish; will retry")

    async def _publish_committed(self) -> None:
        """The rows handed over by ``wake``: the same publish and mark as a sweep's, without the
        transaction that would read them back (most of the relay's cost when events come one by
        one). Unmarked rows stay in the table for the sweep that follows a failure."""
        rows, self._committed = self._committed, []
        done: list[str] = []
        try:
            await self._publish(rows, done)
        finally:
            await self._mark(done)

    async def publish_pending(self) -> int:
        """Publish unpublished rows in order; no transaction is held while waiting for the broker."""
        published = 0
        outbox = self._outbox
        self._committed = []  # committed before the sweep reads the table, so it finds them there
        self._swept_at = time.monotonic()
        while True:
            async with self._db.transaction() as session:
                rows = (
                    await session.execute(
                        select(outbox.c.id, outbox.c.event_id, outbox.c.subject, outbox.c.payload, outbox.c.created_at)
                        .where(outbox.c.published_at.is_(None))
                        .order_by(outbox.c.id)
                        .limit(200)
                    )
                ).all()
            if not rows:
                return published
            done: list[str] = []
            try:
                await self._publish(rows, done)
            finally:
                await self._mark(done)
            published += len(done)

    async def _mark(self, event_ids: list[str]) -> None:
        # Marked even if a later publish failed, so what went out is not sent again (a crash before
        # this re-sends; JetStream's dedupe window drops those).
        if event_ids:
            now = utcnow()
            async with self._db.transaction() as session:
                rows = [{"event": event_id, "published_at": now} for event_id in event_ids]
                await execute_prebuilt(session, _mark_published(self._outbox), rows)

    async def _publish(self, rows: Sequence[Any], done: list[str]) -> None:
        """Publish ``rows`` without waiting for each acknowledgement before sending the next, then
        append to ``done`` the event ids of the longest prefix JetStream acknowledged.

        One connection delivers its messages to the server in the order sent, so the stream stores
        them in outbox order, as when each publish waited for its ack (which cost a round trip and
        FastStream's per-publish work: most of the relay's CPU). If a publish fails, the rows after
        it are not marked even if they were stored: they go out again after it, and JetStream drops
        them as duplicates; only such a failure can let a consumer see them before it, and
        consumers take events out of order anyway (redeliveries, retries)."""
        js = self._jetstream()
        rows = await self._park_unpublishable(rows, done)
        rows = await self._skip_stored(rows, done)
        acks: list[asyncio.Future[Any]] = []
        try:
            for row in rows:
                stream = _stream_for(row.subject)  # an unroutable row stops the batch before it is sent
                headers = {"Nats-Msg-Id": row.event_id, "content-type": "application/json"}
                acks.append(await js.publish_async(row.subject, row.payload.encode(), stream=stream, headers=headers))
        finally:
            if acks:
                finished, late = await asyncio.wait(acks, timeout=PUBLISH_TIMEOUT)
                for ack in late:
                    ack.cancel()
                for row, ack in zip(rows, acks, strict=False):
                    if ack not in finished or ack.exception() is not None:
                        break
                    done.append(row.event_id)
        for ack in acks:
            if ack.cancelled():
                raise TimeoutError(f"JetStream did not acknowledge a publish within {PUBLISH_TIMEOUT} s")
            if (error := ack.exception()) is not None:
                raise error

    async def _park_unpublishable(self, rows: Sequence[Any], done: list[str]) -> Sequence[Any]:
        """Dead-letter the rows the broker would refuse, and return the others.

        NATS closes the connection of a client that sends more than its ``max_payload`` (headers
        included, which nats-py does not count), so such a row sent again and again would stop
        every later event of the service for good. ``UnitOfWork.emit`` refuses events over the
        budget before they commit; a row stored before that, or under a larger broker's limit,
        is parked here with the reason, and marked so the ones behind it go out."""
        connection = self._broker.connection
        assert connection is not None
        room = connection.max_payload - HEADER_ROOM
        if all(len(row.payload) * 4 <= room for row in rows):  # UTF-8: at most 4 bytes a character
            return rows
        publishable = []
        for row in rows:
            size = len(row.payload.encode())
            if size <= room:
                publishable.append(row)
                continue
            reason = (
                f"the outbox relay cannot publish event {row.event_id}: it is {size:,} bytes and the broker "
                f"takes at most {room:,} (max_payload {connection.max_payload:,} less header room). The change "
                "it records is committed; the event stays in the service's outbox table"
            )
            letter = DeadLetter(
                service=self._service,
                consumer="outbox-relay",
                subject=row.subject,
                reason=reason,
                deliveries=0,
                payload=row.payload.encode()[:MAX_PAYLOAD_KEPT].decode("utf-8", errors="ignore"),
            )
            await self._broker.publish(
                letter.model_dump_json().encode(),
                deadletter_subject(self._service),
                headers={"content-type": "application/json", "Nats-Msg-Id": f"outbox.{row.event_id}"},
                stream=DEADLETTER.name,
                timeout=PUBLISH_TIMEOUT,
            )
            log.error("parked %s: %s", row.subject, reason)
            done.append(row.event_id)
        return publishable

    async def _skip_stored(self, rows: Sequence[Any], done: list[str]) -> Sequence[Any]:
        """Mark, without sending them again, the rows the stream already holds, and return the others.

        A row is unmarked after a crash between its publish and its mark, or when an ack was
        lost. Sent again within the duplicate window, JetStream drops it; later (a service down
        for longer than the window) it would be stored twice, and the stream is the federation's
        history. So a row older than half the window is looked up first: its subject's messages
        since it was written, headers only, for its event id. The common path (rows sent
        moments after their commit) never looks."""
        horizon = utcnow() - timedelta(seconds=DUPLICATE_WINDOW / 2)
        old = [row for row in rows if row.created_at < horizon]
        if not old or not self._reads_streams:
            return rows
        stored: set[str] = set()
        for subject in {row.subject for row in old}:
            group = [row for row in old if row.subject == subject]
            since = min(row.created_at for row in group) - CLOCK_SKEW
            stored |= await self._stored_ids(subject, since, {row.event_id for row in group})
        if stored:
            log.info("%d outbox rows were on the stream already; marked without sending them again", len(stored))
            done.extend(row.event_id for row in rows if row.event_id in stored)
        return [row for row in rows if row.event_id not in stored]

    async def _stored_ids(self, subject: str, since: datetime, wanted: set[str]) -> set[str]:
        """Which of ``wanted`` event ids the stream holds on ``subject`` from ``since`` on."""
        js = self._jetstream()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            headers_only=True,  # the ids are in the headers: no payload is read
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
        )
        reader = await js.pull_subscribe(subject, stream=_stream_for(subject), config=config)
        found: set[str] = set()
        try:
            while found != wanted:
                try:
                    messages = await reader.fetch(512, timeout=1.0)
                except nats.errors.TimeoutError:
                    break  # nothing more since then
                found |= {m.headers.get("Nats-Msg-Id", "") for m in messages if m.headers} & wanted
                if messages[-1].metadata.num_pending == 0:
                    break
        finally:
            await reader.unsubscribe()
        return found

    def _jetstream(self) -> JetStreamContext:
        connection = self._broker.connection
        if connection is None:
            raise ConnectionError("the broker is not connected")
        # One context per connection: it holds the subscription on which publish acks arrive.
        if self._js is None or self._js_connection is not connection:
            self._js, self._js_connection = connection.jetstream(), connection
        return self._js
