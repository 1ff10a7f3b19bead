"""Rebuild the aggregator's read model from the JetStream history alone.

The streams are the system of record; the aggregator's tables are a projection of them. Replaying
every stream into an empty database through the same handlers the live service uses gives the
same leaderboards (``tests/integration/test_site_jobs.py`` compares them). Streams replay in
dependency order (what is registered before what is approved, before what is reported), so no
handler has to wait for a fact that is still to come.
"""

from __future__ import annotations

import nats
from nats.js.errors import NotFoundError

from services.aggregator import domain, handlers
from services.aggregator.store import TABLES, Base
from shared.broker import connect_options
from shared.db import Database, UnitOfWork
from shared.events import Event, SiteEvent, parse_event
from shared.messaging import PermanentFailure
from shared.streams import AGGREGATOR, APPROVALS, REGISTRY, SITES

ORDER = (REGISTRY, APPROVALS, AGGREGATOR, SITES)


async def rebuild(nats_url: str, database_url: str, *, user: str | None = None, password: str | None = None) -> int:
    """Replay the history into the (empty) database at ``database_url``; returns events applied."""
    db = Database(database_url)
    await db.create_all(Base.metadata)
    applied = 0
    nc = await nats.connect(name="medperf-aggregator-rebuild", **connect_options(nats_url, user, password))
    try:
        js = nc.jetstream()
        for stream in ORDER:
            info = await js.stream_info(stream.name)
            for sequence in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    message = await js.get_msg(stream.name, sequence)
                except NotFoundError:  # deleted, or trimmed by a limit
                    continue
                event = parse_event(message.data or b"")
                if isinstance(event, SiteEvent) and domain.site_of_subject(message.subject) != event.site:
                    continue  # refused live for the same reason (handlers.record_results, failures)
                if await apply(event, UnitOfWork(db, TABLES)):
                    applied += 1
    finally:
        await nc.close()
        await db.dispose()
    return applied


async def apply(event: Event, uow: UnitOfWork) -> bool:
    """One event from the history, through the live handler for its type; False if it is not ours."""
    handler = handlers.PROJECTIONS.get(type(event))
    if handler is None:
        return False
    try:
        await handler(event, uow)
    except PermanentFailure:  # refused live too (dead-lettered), so it is no part of the boards
        return False
    return True
