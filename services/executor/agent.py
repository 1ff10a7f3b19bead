"""The site agent's handlers: what a hospital's agent does when the federation's facts change.

- a benchmark this site agreed to join is approved: prepare the data with the benchmark's data
  preparator, register its hashes and statistics, test the reference workflow on it, and request
  the association with that test attached;
- its dataset association is approved: queue a job for every approved model (the reference first,
  then by priority);
- a model association is approved: queue a job of that model on every dataset here associated with
  the benchmark;
- (committee sites) a model asks to join: test it on the benchmark's demo data.

Queued jobs are run by ``services.executor.runner``, which reports results as the site's consent
policy allows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from faststream.nats import NatsBroker
from sqlalchemy import select

from services.executor import domain
from services.executor.demo import prepare_demo
from services.executor.intake import DatasetIntake
from services.executor.live import JobProgressReporter
from services.executor.manifest import DatasetChanged, check_before_job
from services.executor.progress import Meter, Progress, tell, watching
from services.executor.questions import BenchmarkParts, FederationQuestions
from services.executor.runner import JobRunner, add_job, job_event, release
from services.executor.settings import SiteSettings
from services.executor.store import Job, PreparedDataset
from services.executor.workflow import PreparedData, Scores, TaskFailed, Workflow
from shared.containers import ContainerSpec
from shared.db import UnitOfWork
from shared.events import (
    AssociationApproved,
    AssociationRequested,
    BenchmarkApproved,
    CompatibilityReport,
    CompatibilityTested,
    JobSucceeded,
)

log = logging.getLogger("medperf.site")


class SiteAgent(FederationQuestions):
    def __init__(
        self,
        site: SiteSettings,
        broker: NatsBroker,
        uow: Callable[[], UnitOfWork],
        workflow: Workflow,
        request_timeout: float,
    ) -> None:
        self.site = site
        self.broker = broker
        self.uow = uow
        self.workflow = workflow
        self.request_timeout = request_timeout
        self.runner = JobRunner(
            site, broker, uow, self.execute, lambda: workflow.runtime, heartbeat_interval=site.heartbeat_seconds
        )
        self.intake = DatasetIntake(self, retry_seconds=site.retry_seconds)

    # --- event handlers -----------------------------------------------------------------------

    # ``last_try``: the event's last delivery before it is dead-lettered, so a job that fails now on
    # the infrastructure must say it will not be retried.

    async def on_benchmark_approved(self, event: BenchmarkApproved, last_try: bool = False) -> None:
        await self.intake.on_benchmark_approved(event, last_try)

    async def on_association_approved(self, event: AssociationApproved) -> None:
        async with self.uow() as uow:
            if event.kind == "dataset":
                row = await uow.session.scalar(
                    select(PreparedDataset).where(PreparedDataset.dataset_id == event.component_id)
                )
                if row is None or row.association == "WITHDRAWN":
                    return  # another site's dataset, or one its owner withdrew meanwhile
                row.association = "APPROVED"
                await uow.commit()
                datasets = [row]
                models = await self.approved_models(event.benchmark_id)
            else:
                datasets = list(
                    (
                        await uow.session.scalars(
                            select(PreparedDataset).where(
                                PreparedDataset.benchmark_id == event.benchmark_id,
                                PreparedDataset.association == "APPROVED",
                            )
                        )
                    ).all()
                )
                models = [event.component_id]
        if not datasets:
            return
        parts = await self.benchmark(event.benchmark_id)
        for dataset in datasets:
            for model_id in [parts.reference_model_id, *[m for m in models if m != parts.reference_model_id]]:
                await self.enqueue(parts, model_id, dataset, reason=f"{event.kind} association approved")

    async def on_association_requested(self, event: AssociationRequested, last_try: bool = False) -> None:
        """The committee's agent tests every model that asks to join, even one whose owner attached
        a signed test of their own: the committee's test then supersedes it (approvals keeps the
        latest), so a committee that runs an agent decides on what it saw itself."""
        if event.kind != "model":
            return
        parts = await self.benchmark(event.benchmark_id)
        if parts.name not in self.site.committee_for:
            return
        report = self.sign(await self.test_on_demo_data(parts, event.component_id, last_try), "model", event)
        async with self.uow() as uow:
            uow.emit(
                CompatibilityTested(
                    actor=self.site.owner,
                    site=self.site.name,
                    correlation_id=event.event_id,
                    benchmark_id=event.benchmark_id,
                    kind="model",
                    component_id=event.component_id,
                    report=report,
                )
            )
            await uow.commit()

    # --- steps ----------------------------------------------------------------------------------

    async def enqueue(self, parts: BenchmarkParts, model_id: int, dataset: PreparedDataset, reason: str) -> None:
        """Queue a run of ``model_id`` on ``dataset``, unless the same pinned work already ran or
        waits; a kept compatibility run of the reference model is released instead of repeated."""
        model = await self.model_spec(model_id)
        key = _job_key(parts, model_id, model, dataset)
        async with self.uow() as uow:
            earlier = (await uow.session.scalars(select(Job).where(Job.key == key).order_by(Job.id))).all()
            for job in earlier:
                if job.kind == "compatibility" and job.status == "succeeded" and job.release == "none":
                    if self.site.release == "auto":
                        release(uow, job, self.site, self.runner.key)
                    else:
                        job.release = "held"
                        # Told again, now held: the data owner's pending list comes from this event.
                        uow.emit(job_event(JobSucceeded, self.site, job, partial=job.partial, held=True))
                    await uow.commit()
                    return
            if any(domain.blocks_new_run(job.status, job.failure) for job in earlier):
                return
            job = Job(
                key=key,
                kind="run",
                benchmark_id=parts.benchmark_id,
                model_id=model_id,
                dataset_id=dataset.dataset_id,
                container_digests={"model": model.image_digest, "metrics": parts.metrics.image_digest},
                dataset_hash=dataset.prepared_hash,
            )
            await add_job(uow, self.site, job, reason)
            await uow.commit()
        self.runner.wake()

    async def compatibility_run(self, parts: BenchmarkParts, dataset: PreparedDataset, last_try: bool = False) -> Job:
        """Run the reference model on a freshly prepared dataset now, as a job of its own."""
        model = await self.model_spec(parts.reference_model_id)
        key = _job_key(parts, parts.reference_model_id, model, dataset)
        async with self.uow() as uow:
            job = await uow.session.scalar(
                select(Job).where(Job.key == key, Job.kind == "compatibility").order_by(Job.id.desc())
            )
            if job is None:
                job = Job(
                    key=key,
                    kind="compatibility",
                    benchmark_id=parts.benchmark_id,
                    model_id=parts.reference_model_id,
                    dataset_id=dataset.dataset_id,
                    container_digests={"model": model.image_digest, "metrics": parts.metrics.image_digest},
                    dataset_hash=dataset.prepared_hash,
                )
                await add_job(uow, self.site, job, "dataset prepared")
                await uow.commit()
        if job.status == "queued":
            job = await self.runner.run_now(job.id, last_try)
        if job.status not in ("succeeded", "failed"):
            # An infrastructure failure: this event is redelivered later, and the job tried again.
            raise RuntimeError(f"compatibility run (job {job.id}) did not finish: {job.detail}")
        return job

    async def execute(self, job: Job, labels: dict[str, str]) -> Scores:
        """The work of a run or compatibility job: check the data, run the model, then the metrics."""
        async with self.uow() as uow:
            dataset = await uow.session.scalar(
                select(PreparedDataset).where(PreparedDataset.dataset_id == job.dataset_id)
            )
        if dataset is None:
            raise TaskFailed("verify", None, f"dataset {job.dataset_id} is not prepared at this site")
        parts = await self.benchmark(job.benchmark_id)
        model = await self.model_spec(job.model_id)
        prepared = PreparedData(
            Path(dataset.prepared_path), dataset.input_hash, dataset.prepared_hash, dataset.statistics
        )
        # Metadata only, re-reading what changed (and everything once per MEDPERF_SITE_FULL_CHECK_DAYS):
        # a 200 GB dataset is not read again before each of a benchmark's models.
        full_every = self.site.full_check_days * 86400
        progress = JobProgressReporter(self.site, self.uow, job)
        await tell(progress, Progress("verify", message="checking the prepared data against its registration"))
        meter = Meter()
        try:
            async with watching(progress, lambda: meter.sample("verify")):
                await asyncio.to_thread(
                    check_before_job,
                    prepared.path,
                    (prepared.data, prepared.labels),
                    job.dataset_hash,
                    full_every,
                    progress=meter,
                )
        except DatasetChanged as changed:
            # File names can identify patients: the failure leaves the site with counts only.
            log.warning("prepared data of %s changed since registration: %s", dataset.name, changed)
            found = changed.verification
            counts = f"{len(found.changed)} changed, {len(found.added)} added, {len(found.removed)} removed files"
            detail = (
                f"prepared data of {dataset.name} changed since registration ({counts}); "
                f"`medperf dataset check {dataset.name}` at the site names them"
            )
            raise TaskFailed("verify", None, detail) from None
        scores = await self.workflow.score(
            model,
            parts.metrics,
            prepared,
            self.site.work_dir / "runs" / f"job-{job.id}",
            labels=labels,
            ignore_model_errors=self.site.ignore_model_errors,
            declared=parts.metric_names,
            on_progress=progress,
        )
        # Only the metrics the benchmark declared leave the site.
        declared = {name: scores.metrics[name] for name in parts.metric_names if name in scores.metrics}
        return Scores(declared, scores.partial)

    async def test_on_demo_data(
        self, parts: BenchmarkParts, model_id: int, last_try: bool = False
    ) -> CompatibilityReport:
        """A failure that is not the site's (the model's, or the benchmark's own demo data) is the
        test's outcome: reported as failed, with whose fault and why, for the committee to decide."""
        model = await self.model_spec(model_id)
        tested = {
            "preparator": parts.preparator.image_digest,
            "model": model.image_digest,
            "metrics": parts.metrics.image_digest,
        }
        demo_hash = parts.demo_dataset.sha256
        base = self.site.work_dir / "demo" / parts.demo_dataset.sha256[:16]
        key = domain.pin_key("demo", parts.benchmark_id, model_id, model.image_digest, parts.demo_dataset.sha256)
        try:
            async with self.runner.inline(
                "compatibility", parts.benchmark_id, key, "model asked to join", last_try, model_id=model_id
            ) as job:
                prepared = await prepare_demo(self.workflow, parts.demo_dataset, parts.preparator, base / "prepared")
                run = base / f"model-{model_id}"
                progress = JobProgressReporter(self.site, self.uow, job)
                scores = await self.workflow.score(
                    model, parts.metrics, prepared, run, declared=parts.metric_names, on_progress=progress
                )
        except TaskFailed as failed:
            detail = f"{failed} (the {failed.fault}'s fault)"
            return CompatibilityReport(
                passed=False, detail=detail, failure=failed.fault, container_digests=tested, data_hash=demo_hash
            )
        metrics = scores.metrics
        return CompatibilityReport(
            passed=True,
            metrics={n: metrics[n] for n in parts.metric_names if n in metrics},
            container_digests=tested,
            data_hash=demo_hash,
        )

    def sign(self, report: CompatibilityReport, kind: str, event: AssociationRequested) -> CompatibilityReport:
        """``report`` as this site's signed test of the requested association."""
        tested = report.model_copy(
            update={"benchmark_id": event.benchmark_id, "kind": kind, "component_id": event.component_id}
        )
        return self.runner.key.sign_report(tested, self.site.name)


def _job_key(parts: BenchmarkParts, model_id: int, model: ContainerSpec, dataset: PreparedDataset) -> str:
    """What pins a run's result: the same key is the same work."""
    return domain.pin_key(
        parts.benchmark_id,
        model_id,
        dataset.dataset_id,
        model.image_digest,
        parts.metrics.image_digest,
        dataset.prepared_hash,
    )
