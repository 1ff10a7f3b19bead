"""The site's job runner: takes queued jobs from the site's database and runs them, at most
``max_jobs`` at once, recording every transition in the same transaction as its event.

Jobs live in the database, not in memory or in unacknowledged messages, so an agent that is killed
loses nothing: at start, jobs it was running go back to the queue, containers it had started are
removed, and the job runs again; its result is emitted in the transaction that marks it succeeded,
so exactly one result leaves the site. The data owner's tools (``services.executor.operations``)
cancel, re-run, release and drain by writing to the same database; the runner notices within
``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from faststream.nats import NatsBroker
from sqlalchemy import or_, select

from services.executor import domain
from services.executor.runtime import ContainerRuntime
from services.executor.settings import SiteSettings
from services.executor.store import Job, SiteState
from services.executor.workflow import Scores, TaskFailed
from shared.db import UnitOfWork
from shared.events import (
    JobCancelled,
    JobEvent,
    JobFailed,
    JobKind,
    JobQueued,
    JobStarted,
    JobSucceeded,
    ResultReported,
    SiteHeartbeat,
    utcnow,
)
from shared.signing import SiteKey
from shared.streams import HEARTBEATS, heartbeat_subject

log = logging.getLogger("medperf.site.jobs")

JOB_LABEL = "medperf.job"
SITE_LABEL = "medperf.site"


E = TypeVar("E", bound=JobEvent)


def job_event(event_type: type[E], site: SiteSettings, job: Job, **details: Any) -> E:
    """An event about ``job``, told by its site."""
    return event_type(
        actor=site.owner,
        site=site.name,
        job_id=job.id,
        kind=job.kind,
        benchmark_id=job.benchmark_id,
        model_id=job.model_id,
        dataset_id=job.dataset_id,
        **details,
    )


async def add_job(uow: UnitOfWork, site: SiteSettings, job: Job, reason: str) -> Job:
    """Queue ``job``: its row and its JobQueued event, in the caller's transaction."""
    uow.session.add(job)
    await uow.session.flush()  # assigns the id the event names
    uow.emit(job_event(JobQueued, site, job, reason=reason))
    return job


def result_of(job: Job, site: SiteSettings, key: SiteKey) -> ResultReported:
    """The job's result, signed with the site's key (the aggregator counts no unsigned result)."""
    unsigned = ResultReported(
        actor=site.owner,
        site=site.name,
        benchmark_id=job.benchmark_id,
        model_id=job.model_id,
        dataset_id=job.dataset_id,
        metrics=job.metrics,
        container_digests=job.container_digests,
        dataset_hash=job.dataset_hash,
        partial=job.partial,
    )
    return key.sign_result(unsigned)


def release(uow: UnitOfWork, job: Job, site: SiteSettings, key: SiteKey) -> None:
    """Let the job's metrics leave the site: the one place a ResultReported is emitted."""
    job.release = "released"
    uow.emit(result_of(job, site, key))


class JobRunner:
    def __init__(
        self,
        site: SiteSettings,
        broker: NatsBroker,
        uow: Callable[[], UnitOfWork],
        execute: Callable[[Job, dict[str, str]], Awaitable[Scores]],
        runtime: Callable[[], ContainerRuntime | None],
        poll_interval: float = 1.0,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.site = site
        self.broker = broker
        self.uow = uow
        self.execute = execute
        self.runtime = runtime
        self._key: SiteKey | None = None  # loaded at start (SiteAgent.load_key), not to build the app
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.running: dict[int, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._last_heartbeat = 0.0
        self._stopping = False

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def key(self) -> SiteKey:
        if self._key is None:
            raise RuntimeError("the site's signing key is loaded when the agent starts")
        return self._key

    @key.setter
    def key(self, key: SiteKey) -> None:
        self._key = key

    def labels(self, job_id: int | None = None) -> dict[str, str]:
        labels = {SITE_LABEL: self.site.name}
        if job_id is not None:
            labels[JOB_LABEL] = str(job_id)
        return labels

    async def start(self) -> None:
        await self.recover()
        self._loop = asyncio.create_task(self._run(), name=f"jobs-{self.site.name}")

    async def stop(self) -> None:
        """Stop taking jobs and interrupt the running ones; they are queued again at the next start."""
        if self._loop is not None:
            self._stopping = True  # as in OutboxRelay.stop: a cancel alone can be swallowed
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        interrupted = list(self.running.values())
        for task in interrupted:
            task.cancel()
        await asyncio.gather(*interrupted, return_exceptions=True)
        runtime = self.runtime()
        if interrupted and runtime is not None:  # their containers would run on, unobserved
            with contextlib.suppress(Exception):
                await asyncio.to_thread(runtime.remove_labelled, self.labels())

    async def recover(self) -> None:
        """After a crash: what was running is queued again, and its containers are removed."""
        runtime = self.runtime()
        if runtime is not None:
            removed = await asyncio.to_thread(runtime.remove_labelled, self.labels())
            if removed:
                log.warning("%s: removed %d container(s) left by the previous run", self.site.name, removed)
        async with self.uow() as uow:
            for job in (await uow.session.scalars(select(Job).where(Job.status == "running"))).all():
                job.status = domain.transition(job.status, "queued")
                uow.emit(job_event(JobQueued, self.site, job, reason="agent restarted"))
            await uow.commit()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._cancel_requested()
                await self._start_queued()
                await self._heartbeat()
            except Exception:  # the database or broker hiccupped; the next round retries
                log.exception("%s: job runner round failed", self.site.name)

    async def _start_queued(self) -> None:
        async with self.uow() as uow:
            state = await uow.session.get(SiteState, 1)
            free = self.site.max_jobs - len(self.running)
            if (state is not None and state.draining) or free <= 0:
                return
            now = utcnow()
            jobs = (
                await uow.session.scalars(
                    select(Job)
                    .where(
                        Job.kind == "run",  # compatibility runs are run by the handler that needs them
                        Job.status == "queued",
                        or_(Job.not_before.is_(None), Job.not_before <= now),
                    )
                    .order_by(Job.id)
                    .limit(free)
                )
            ).all()
            for job in jobs:
                self._mark_started(uow, job)
            await uow.commit()
        for job in jobs:
            self.running[job.id] = asyncio.create_task(self._attempt(job), name=f"job-{job.id}")

    async def run_now(self, job_id: int, last_try: bool = False) -> Job:
        """Run a queued job in the caller's task, outside the queue and the concurrency limit
        (a compatibility run that an association request waits for); returns it finished, or
        queued again after an infrastructure failure, unless this is the caller's ``last_try``
        (its event is dead-lettered next): then the job fails for good and says so."""
        async with self.uow() as uow:
            job = await uow.session.get(Job, job_id)
            assert job is not None
            self._mark_started(uow, job)
            await uow.commit()
        await self._attempt(job, requeue=not last_try)
        async with self.uow() as uow:
            finished = await uow.session.get(Job, job_id)
            assert finished is not None
            return finished

    def _mark_started(self, uow: UnitOfWork, job: Job) -> None:
        job.status = domain.transition(job.status, "running")
        job.attempts += 1
        job.started_at = job.heartbeat_at = utcnow()
        uow.emit(job_event(JobStarted, self.site, job, attempt=job.attempts))

    async def _attempt(self, job: Job, requeue: bool = True) -> None:
        try:
            scores = await self.execute(job, self.labels(job.id))
        except asyncio.CancelledError:
            raise  # cancelled by the data owner (recorded by _cancel_requested) or by shutdown
        except TaskFailed as failed:
            await self._failed(job.id, failed.fault, str(failed), failed.log_tail, requeue)
        except Exception as exc:  # the engine, the disk, a download, another service: not the job's fault
            log.warning("%s: job %d hit an infrastructure error: %s", self.site.name, job.id, exc)
            await self._failed(job.id, "infrastructure", f"{type(exc).__name__}: {exc}", "", requeue)
        else:
            await self._succeeded(job.id, scores)
        finally:
            self.running.pop(job.id, None)
            self.wake()

    async def _succeeded(self, job_id: int, scores: Scores) -> None:
        async with self.uow() as uow:
            job = await uow.session.get(Job, job_id)
            assert job is not None
            if job.status != "running":
                return  # cancelled while its last container finished
            job.status = domain.transition(job.status, "succeeded")
            job.finished_at = utcnow()
            job.metrics, job.partial, job.detail, job.failure = scores.metrics, scores.partial, "", None
            held = False
            if job.kind == "run":
                if self.site.release == "auto":
                    release(uow, job, self.site, self.key)
                else:
                    job.release, held = "held", True
            uow.emit(job_event(JobSucceeded, self.site, job, partial=job.partial, held=held))
            await uow.commit()

    @asynccontextmanager
    async def inline(
        self, kind: JobKind, benchmark_id: int, key: str, reason: str, last_try: bool = False, **ids: int | None
    ) -> AsyncIterator[Job]:
        """Record work that its event handler does itself (preparing data, testing a candidate model
        on the demo data) as a job with the same transitions and events as queued runs. A failure
        is recorded and re-raised; the handler's event is redelivered if it was infrastructure's,
        unless this is its ``last_try`` (it is dead-lettered next: the failure says it is final)."""
        async with self.uow() as uow:
            job = await add_job(uow, self.site, Job(key=key, kind=kind, benchmark_id=benchmark_id, **ids), reason)
            self._mark_started(uow, job)
            await uow.commit()
        try:
            yield job
        except TaskFailed as failed:
            await self._failed(job.id, failed.fault, str(failed), failed.log_tail, requeue=False)
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await self._failed(job.id, "infrastructure", reason, "", requeue=False, redelivered=not last_try)
            raise
        else:
            await self._succeeded(job.id, Scores({}))

    async def _failed(
        self,
        job_id: int,
        failure: domain.FailureKind,
        reason: str,
        log_tail: str,
        requeue: bool = True,
        redelivered: bool = False,
    ) -> None:
        """Record a failure; a queued job whose failure is retryable goes back to the queue. A job
        not requeued fails for good; ``redelivered``: its event's redelivery retries the work as a
        new job, so the failure still says it will be retried."""
        async with self.uow() as uow:
            job = await uow.session.get(Job, job_id)
            assert job is not None
            if job.status != "running":
                return
            delay = domain.retry_after(failure, job.attempts, self.site.retry_seconds) if requeue else None
            job.failure, job.detail = failure, reason
            if delay is None:
                job.status = domain.transition(job.status, "failed")
                job.finished_at = utcnow()
            else:
                job.status = domain.transition(job.status, "queued")
                job.not_before = utcnow() + timedelta(seconds=delay)
            will_retry = delay is not None or (redelivered and failure == "infrastructure")
            # A log tail may quote patient data: it leaves with the failure only where the site says so.
            shared_tail = log_tail if self.site.share_log_tails else ""
            uow.emit(
                job_event(
                    JobFailed,
                    self.site,
                    job,
                    failure=failure,
                    will_retry=will_retry,
                    reason=reason,
                    log_tail=shared_tail,
                )
            )
            await uow.commit()

    async def _cancel_requested(self) -> None:
        async with self.uow() as uow:
            jobs = (
                await uow.session.scalars(
                    select(Job).where(Job.cancel_requested.is_(True), Job.status.in_(domain.UNFINISHED))
                )
            ).all()
            for job in jobs:
                job.status = domain.transition(job.status, "cancelled")
                job.finished_at = utcnow()
                uow.emit(job_event(JobCancelled, self.site, job))
            await uow.commit()
        for job in jobs:
            task = self.running.get(job.id)
            if task is not None:
                task.cancel()
            runtime = self.runtime()
            if runtime is not None:  # the container outlives the cancelled thread that waits for it
                await asyncio.to_thread(runtime.remove_labelled, self.labels(job.id))

    async def _heartbeat(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_heartbeat < self.heartbeat_interval:
            return
        self._last_heartbeat = now
        async with self.uow() as uow:
            running = (await uow.session.scalars(select(Job).where(Job.status == "running"))).all()
            for job in running:
                job.heartbeat_at = utcnow()
            queued = len((await uow.session.scalars(select(Job.id).where(Job.status == "queued"))).all())
            state = await uow.session.get(SiteState, 1)
            await uow.commit()
        beat = SiteHeartbeat(
            site=self.site.name,
            running=sorted(j.id for j in running),
            queued=queued,
            draining=bool(state and state.draining),
            every=self.heartbeat_interval,
        )
        with contextlib.suppress(Exception):  # a missed heartbeat is harmless; the next one follows
            await self.broker.publish(
                beat.model_dump_json().encode(), heartbeat_subject(self.site.name), stream=HEARTBEATS.name
            )
