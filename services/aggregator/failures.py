"""Runs that failed for good, from the sites' JobFailed events, onto the boards as failed cells.

Only a ``run`` job's final failure (``will_retry`` false) counts: one to be retried may still end
in a result. What is kept is whose fault and the reason, cut short; never the log tail, which may
hold patient data and leaves a site only for its data owner (the console). A newer failure of the
same cell replaces an older one; a result outranks either on the boards (``domain``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.aggregator import domain
from services.aggregator.clock import advance_clock
from services.aggregator.store import BenchmarkInfo, DatasetInfo, FailedRun, upsert_newer
from shared.db import UnitOfWork
from shared.events import JobFailed
from shared.messaging import NotYet, PermanentFailure, decode_batch

#: A board shows a short reason; the whole story is in the site's console.
REASON_CHARS = 200


async def record_failures(deliveries: list[tuple[str, bytes]], uow: UnitOfWork) -> dict[int, Exception]:
    """A batch of (subject, payload) failures in one transaction, each in a step of its own;
    returns the refusals by position. A body naming another site than its subject is refused, as
    for results: a site's credentials allow it only its own subjects."""
    decoded, refused = decode_batch(JobFailed, deliveries)
    genuine = []
    for index, subject, event in decoded:
        if (claimed := domain.site_of_subject(subject)) != event.site:
            refused[index] = PermanentFailure(
                f"failure names site {event.site!r} but was published on {claimed!r}'s subject {subject}"
            )
        elif counts(event):
            genuine.append((index, event))
    if not genuine:
        return refused
    async with uow:
        for index, event in genuine:
            try:
                await record_failure(event, uow.step())
            except Exception as exc:
                refused[index] = exc
        await uow.commit()
    return refused


def counts(event: JobFailed) -> bool:
    """Does this failure belong on a board: a model's run on a dataset, failed for good?"""
    return event.kind == "run" and not event.will_retry and event.model_id is not None and event.dataset_id is not None


async def record_failure(event: JobFailed, uow: UnitOfWork) -> None:
    """One failure into the read model (the replay's entry, and each step of a live batch)."""
    if not counts(event):
        return
    async with uow:
        if not await uow.claim(event):
            return
        session = uow.session
        if await session.get(BenchmarkInfo, event.benchmark_id) is None:
            # Registry events travel on another stream and may not have arrived yet: retry later.
            raise NotYet(f"benchmark {event.benchmark_id} not known yet")
        site = await session.scalar(select(DatasetInfo.site).where(DatasetInfo.dataset_id == event.dataset_id))
        if site is not None and site != event.site:
            raise PermanentFailure(f"dataset {event.dataset_id} belongs to site {site!r}, not {event.site!r}")
        tick = await advance_clock(uow)
        row = {
            "benchmark_id": event.benchmark_id,
            "model_id": event.model_id,
            "dataset_id": event.dataset_id,
            "site": event.site,
            "fault": event.failure,
            "reason": event.reason[:REASON_CHARS],
            "event_id": str(event.event_id),
            "failed_at": event.occurred_at,
            "revision": tick,
        }
        await session.execute(upsert_newer(FailedRun.__table__, "failed_at", session.bind.dialect.name), row)
        await uow.commit()


def to_domain(row: Any) -> domain.Failure:
    return domain.Failure(row.model_id, row.dataset_id, row.fault, row.reason)
