"""The outbox relay: committed outbox rows (``shared.db.UnitOfWork``) out to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faststream.nats import NatsBroker
from sqlalchemy import select, update

from shared.db import Database, MessagingTables
from shared.events import utcnow
from shared.streams import ALL_STREAMS

log = logging.getLogger("medperf.outbox")


def _stream_for(subject: str) -> str:
    for stream in ALL_STREAMS:
        if any(subject.startswith(pattern.removesuffix(">")) for pattern in stream.subjects):
            return stream.name
    raise ValueError(f"no stream captures subject {subject!r}")


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, in order, at least once.

    ``Nats-Msg-Id`` is the event id, so JetStream drops a row published twice (e.g. a crash between
    the publish and the mark) within its duplicate window; consumers dedupe anything later.
    """

    def __init__(self, db: Database, tables: MessagingTables, broker: NatsBroker, sweep_interval: float = 1.0) -> None:
        self._db = db
        self._outbox = tables.outbox
        self._broker = broker
        self._sweep_interval = sweep_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
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
                await self.publish_pending()
            except Exception:  # the broker may be restarting; the next sweep retries
                log.exception("outbox relay could not publish; will retry")

    async def publish_pending(self) -> int:
        """Publish unpublished rows in order; no transaction is held while waiting for the broker."""
        published = 0
        outbox = self._outbox
        while True:
            async with self._db.transaction() as session:
                rows = (
                    await session.execute(
                        select(outbox.c.id, outbox.c.event_id, outbox.c.subject, outbox.c.payload)
                        .where(outbox.c.published_at.is_(None))
                        .order_by(outbox.c.id)
                        .limit(200)
                    )
                ).all()
            if not rows:
                return published
            done: list[int] = []
            try:
                for row in rows:
                    await self._broker.publish(
                        row.payload.encode(),
                        row.subject,
                        headers={"Nats-Msg-Id": row.event_id, "content-type": "application/json"},
                        stream=_stream_for(row.subject),
                    )
                    done.append(row.id)
            finally:
                # Marked even if a later publish failed, so what went out is not sent again
                # (a crash before this line re-sends; JetStream's dedupe window drops those).
                if done:
                    async with self._db.transaction() as session:
                        await session.execute(update(outbox).where(outbox.c.id.in_(done)).values(published_at=utcnow()))
            published += len(done)
