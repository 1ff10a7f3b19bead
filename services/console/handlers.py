"""Console handlers: fold site events and heartbeats into the read model, and answer its queries."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import or_, select

from services.console import domain
from services.console.store import Job, Owner, Site
from shared.commands import ListHeldResults, ListJobs, ListSites, Outcome
from shared.db import UnitOfWork
from shared.events import BenchmarkSubmitted, JobEvent, ModelRegistered, ResultReported, SiteHeartbeat, utcnow

ADMINS_ONLY = "only admins see every site's agents"


async def record_owner(event: ModelRegistered | BenchmarkSubmitted, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        if isinstance(event, ModelRegistered):
            entity, entity_id = "model", event.model_id
        else:
            entity, entity_id = "benchmark", event.benchmark_id
        await uow.session.merge(Owner(entity=entity, entity_id=entity_id, owner=event.owner))
        await uow.commit()


async def record_job_event(event: JobEvent, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        row = await uow.session.get(Job, (event.site, event.job_id))
        state = domain.fold(row.state() if row else None, event.model_dump(mode="json"), event.occurred_at)
        if state is not None:
            if row is None:
                row = Job(site=event.site, job_id=event.job_id)
                uow.session.add(row)
            row.update(state)
        await _site(uow, event.site)
        await uow.commit()


async def record_result(event: ResultReported, uow: UnitOfWork) -> None:
    """A released result ends the wait of the held job(s) that produced it."""
    async with uow:
        if not await uow.claim(event):
            return
        held = await uow.session.scalars(
            select(Job).where(
                Job.site == event.site,
                Job.held.is_(True),
                Job.benchmark_id == event.benchmark_id,
                Job.model_id == event.model_id,
                Job.dataset_id == event.dataset_id,
            )
        )
        for job in held:
            job.held = False
        await uow.commit()


async def record_heartbeat(beat: SiteHeartbeat, uow: UnitOfWork) -> None:
    """Latest wins: heartbeats carry no id to dedupe on, and an older one must not hide a newer one."""
    async with uow:
        site = await _site(uow, beat.site)
        if site.last_heartbeat_at is None or beat.at >= site.last_heartbeat_at:
            site.last_heartbeat_at, site.every = beat.at, beat.every
            site.running, site.queued, site.draining = list(beat.running), beat.queued, beat.draining
        await uow.commit()


async def _site(uow: UnitOfWork, name: str) -> Site:
    site = await uow.session.get(Site, name)
    if site is None:
        site = Site(name=name, running=[], queued=0, draining=False)
        uow.session.add(site)
        await uow.session.flush()
    return site


async def list_sites(query: ListSites, uow: UnitOfWork, now: datetime | None = None) -> Outcome:
    if not query.is_admin:
        return Outcome.refused("forbidden", ADMINS_ONLY)
    now = now or utcnow()
    async with uow:
        sites = (await uow.session.scalars(select(Site).order_by(Site.name))).all()
        jobs = (await uow.session.scalars(select(Job).where(Job.status.in_(("queued", "running", "failed"))))).all()
    counts = Counter((j.site, j.status) for j in jobs)
    running = {s.name: sorted(j.job_id for j in jobs if j.site == s.name and j.status == "running") for s in sites}
    return Outcome.accepted(
        data=[
            {
                "site": s.name,
                "last_heartbeat_at": s.last_heartbeat_at.isoformat() if s.last_heartbeat_at else None,
                "seconds_since_heartbeat": (now - s.last_heartbeat_at).total_seconds() if s.last_heartbeat_at else None,
                "silent": domain.silent(s.last_heartbeat_at, s.every, now),
                "draining": s.draining,
                "running": running[s.name],
                "queued": counts[(s.name, "queued")],
                "failed": counts[(s.name, "failed")],
                "heartbeat": {"running": s.running, "queued": s.queued, "every": s.every},
            }
            for s in sites
        ]
    )


async def reader(uow: UnitOfWork, user: str) -> domain.Reader:
    owned = (await uow.session.execute(select(Owner.entity, Owner.entity_id).where(Owner.owner == user))).all()
    return domain.Reader(
        user,
        frozenset(i for kind, i in owned if kind == "model"),
        frozenset(i for kind, i in owned if kind == "benchmark"),
    )


async def list_jobs(query: ListJobs, uow: UnitOfWork) -> Outcome:
    """Admins see every job; others the jobs of what they own (``domain.Reader``). The log tails
    here left their sites with the data owner's consent (``JobRow.view``)."""
    stmt = select(Job)
    if query.site is not None:
        stmt = stmt.where(Job.site == query.site)
    if query.status is not None:
        stmt = stmt.where(Job.status == query.status)
    if query.benchmark_id is not None:
        stmt = stmt.where(Job.benchmark_id == query.benchmark_id)
    if query.model_id is not None:
        stmt = stmt.where(Job.model_id == query.model_id)
    async with uow:
        me = None if query.is_admin else await reader(uow, query.actor)
        if me is not None:
            stmt = stmt.where(
                or_(Job.owner == me.user, Job.model_id.in_(me.models), Job.benchmark_id.in_(me.benchmarks))
            )
        rows = (await uow.session.scalars(stmt.order_by(Job.last_event_at.desc()).limit(query.limit))).all()
    # Log tails add up: a page may be cut.
    return Outcome.page([row.view() for row in rows])


async def held_results(query: ListHeldResults, uow: UnitOfWork) -> Outcome:
    """Admins see every site's; a data owner sees those of the sites that report in its name."""
    stmt = select(Job).where(Job.held.is_(True), Job.status == "succeeded")
    if not query.is_admin:
        stmt = stmt.where(Job.owner == query.actor)
    async with uow:
        rows = (await uow.session.scalars(stmt.order_by(Job.site, Job.job_id))).all()
    return Outcome.page([row.view() for row in rows])
