"""A running job's progress out of the site: rate-limited ``JobProgress`` events through the outbox
(in order with the job's other events), and, for a data owner's submission, every sample into the
site's own database, where ``medperf dataset submit`` shows it.

Only aggregates leave: stage, counts, a fixed message, a report's ``ReportSummary``. The report's
own lines (per-case output) go to the site's database only.
"""

from __future__ import annotations

from collections.abc import Callable

from services.executor.progress import Progress, Sink, Throttle
from services.executor.runner import job_event
from services.executor.settings import SiteSettings
from services.executor.store import Job, SubmissionProgress
from shared.db import UnitOfWork
from shared.events import JobProgress, utcnow


class JobProgressReporter:
    """The sink for one job's progress."""

    def __init__(
        self,
        site: SiteSettings,
        uow: Callable[[], UnitOfWork],
        job: Job,
        *,
        local: Sink | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.site = site
        self.uow = uow
        self.job = job
        self.local = local
        self.throttle = throttle or Throttle(site.progress_seconds)

    async def __call__(self, progress: Progress) -> None:
        if self.local is not None:
            await self.local(progress)
        if not self.throttle.allows(progress):
            return
        event = job_event(
            JobProgress,
            self.site,
            self.job,
            stage=progress.stage,
            done=progress.done,
            total=progress.total,
            message=progress.message,
            report=progress.report,
        )
        async with self.uow() as uow:
            uow.emit(event)
            await uow.commit()


def submission_sink(uow: Callable[[], UnitOfWork], submission_id: int) -> Sink:
    """Every sample of a submission's progress into the site's own database (one row, overwritten)."""

    async def record(progress: Progress) -> None:
        async with uow() as unit:
            row = await unit.session.get(SubmissionProgress, submission_id)
            if row is None:
                row = SubmissionProgress(submission_id=submission_id)
                unit.session.add(row)
            if row.stage != progress.stage:  # a new stage starts with nothing of the last one's
                row.done = row.total = None
                row.lines = []
            row.stage = progress.stage
            if progress.total is not None:
                row.done, row.total = progress.done, progress.total
            if progress.lines:
                row.lines = list(progress.lines)
            row.updated_at = utcnow()
            await unit.commit()

    return record
