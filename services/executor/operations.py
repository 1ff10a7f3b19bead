"""What a site's data owner and IT staff do to their own agent's jobs, on the site's database.

The CLI (``medperf job ...``, ``medperf result ...``, ``medperf site drain``) calls these; they
change the job rows and queue the resulting events in the site's outbox in one transaction; the
running agent's runner and outbox relay act on them within a second. Nothing here needs the
network: consent is given where the data is. The agent runs the same releases when its data owner
gives consent from the web (``services.executor.consent``), unless the site refuses that.
"""

from __future__ import annotations

from sqlalchemy import select

from services.executor import domain
from services.executor.runner import add_job, job_event, release
from services.executor.runtime import read_tail
from services.executor.settings import SiteSettings
from services.executor.store import Job, SiteState
from shared.db import UnitOfWork
from shared.events import JobLogReleased
from shared.signing import SiteKey


class NotPossible(Exception):
    """The job is not in a state that allows this; the message says why."""


async def jobs(uow: UnitOfWork, *, pending_release: bool = False) -> list[Job]:
    async with uow:
        query = select(Job).order_by(Job.id)
        if pending_release:
            query = query.where(Job.release == "held")
        return list((await uow.session.scalars(query)).all())


class NoSuchJob(NotPossible):
    """No job of that id at this site."""


async def release_result(uow: UnitOfWork, site: SiteSettings, job_id: int) -> Job:
    (job,) = await release_results(uow, site, [job_id])
    return job


async def release_results(uow: UnitOfWork, site: SiteSettings, job_ids: list[int] | None) -> list[Job]:
    """Let held results leave the site: the jobs ``job_ids``, or every held one (``None``). In one
    transaction, so a job with nothing held releases none of the others."""
    async with uow:
        if job_ids is None:
            query = select(Job).where(Job.release == "held").order_by(Job.id)
            held = list((await uow.session.scalars(query)).all())
        else:
            held = [await _job(uow, job_id) for job_id in dict.fromkeys(job_ids)]
        for job in held:
            if job.release != "held":
                raise NotPossible(f"job {job.id} has no result waiting for release (release: {job.release})")
        if held:
            # The agent created the key at its first start; signing needs only the file, not the network.
            key = SiteKey.load_or_create(site.key_path)
            for job in held:
                release(uow, job, site, key)
            await uow.commit()
        return held


def log_tail(site: SiteSettings, job_id: int) -> str:
    """The last lines of the log of the task a job ran last (the one that failed, for a failed job)."""
    logs = site.work_dir / "runs" / f"job-{job_id}" / "logs"
    found = sorted(logs.glob("*.log"), key=lambda path: path.stat().st_mtime_ns) if logs.is_dir() else []
    if not found:
        raise NotPossible(f"job {job_id} kept no log at this site (only run jobs keep theirs, under {logs})")
    return read_tail(found[-1])


async def release_log(uow: UnitOfWork, site: SiteSettings, job_id: int) -> str:
    """The data owner's consent for one failed job's log tail to leave the site: it is sent to the
    federation, where the job's model owner and committee read it with the failure."""
    async with uow:
        job = await _job(uow, job_id)
        if job.status != "failed":
            raise NotPossible(f"job {job_id} is {job.status}; only a failed job's log tail is released")
        tail = log_tail(site, job_id)
        uow.emit(job_event(JobLogReleased, site, job, log_tail=tail))
        await uow.commit()
        return tail


async def cancel(uow: UnitOfWork, job_id: int) -> Job:
    async with uow:
        job = await _job(uow, job_id)
        if job.status not in domain.UNFINISHED:
            raise NotPossible(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")
        job.cancel_requested = True  # the runner stops it, records it and removes its containers
        await uow.commit()
        return job


async def rerun(uow: UnitOfWork, site: SiteSettings, job_id: int) -> Job:
    """Queue the same work again (same key), e.g. after fixing the cause of a failure."""
    async with uow:
        old = await _job(uow, job_id)
        if old.kind != "run":
            raise NotPossible(f"job {job_id} is a {old.kind} job; it runs again when the site joins or is asked again")
        if old.status in domain.UNFINISHED:
            raise NotPossible(f"job {job_id} is still {old.status}")
        new = Job(
            key=old.key,
            kind="run",
            benchmark_id=old.benchmark_id,
            model_id=old.model_id,
            dataset_id=old.dataset_id,
            container_digests=old.container_digests,
            dataset_hash=old.dataset_hash,
        )
        await add_job(uow, site, new, f"re-run of job {job_id}")
        await uow.commit()
        return new


async def set_draining(uow: UnitOfWork, draining: bool) -> None:
    """Drain: running jobs finish, queued ones wait until the site resumes."""
    async with uow:
        state = await uow.session.get(SiteState, 1) or SiteState(id=1)
        state.draining = draining
        uow.session.add(state)
        await uow.commit()


async def _job(uow: UnitOfWork, job_id: int) -> Job:
    job = await uow.session.get(Job, job_id)
    if job is None:
        raise NoSuchJob(f"no job {job_id} at this site (see `medperf job ls`)")
    return job
