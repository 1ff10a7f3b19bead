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
from dataclasses import dataclass
from pathlib import Path

from faststream.nats import NatsBroker
from sqlalchemy import select

from services.executor import domain
from services.executor.demo import prepare_demo
from services.executor.intake import DatasetIntake
from services.executor.runner import JobRunner, add_job, job_event, release
from services.executor.settings import SiteSettings
from services.executor.store import Job, PreparedDataset
from services.executor.workflow import PreparedData, Scores, TaskFailed, Workflow, tree_hash
from shared.commands import Command, GetEntity, ListAssociations, Outcome
from shared.containers import ContainerSpec, HostedFile
from shared.db import UnitOfWork
from shared.events import (
    AssociationApproved,
    AssociationRequested,
    BenchmarkApproved,
    CompatibilityReport,
    CompatibilityTested,
    JobSucceeded,
)
from shared.messaging import NotYet
from shared.service import ask

log = logging.getLogger("medperf.site")


class ServiceRefused(Exception):
    """Another service refused what the agent asked; retried by redelivery if transient."""


@dataclass(frozen=True)
class BenchmarkParts:
    benchmark_id: int
    name: str
    preparator_id: int
    preparator: ContainerSpec
    reference_model_id: int
    metrics: ContainerSpec
    metric_names: tuple[str, ...]
    demo_dataset: HostedFile


class SiteAgent:
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
        if event.kind != "model" or event.compatibility is not None:
            return
        parts = await self.benchmark(event.benchmark_id)
        if parts.name not in self.site.committee_for:
            return
        report = await self.test_on_demo_data(parts, event.component_id, last_try)
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
        if await asyncio.to_thread(tree_hash, prepared.data, prepared.labels) != job.dataset_hash:
            raise TaskFailed("verify", None, f"prepared data of {dataset.name} changed since registration")
        scores = await self.workflow.score(
            model,
            parts.metrics,
            prepared,
            self.site.work_dir / "runs" / f"job-{job.id}",
            labels=labels,
            ignore_model_errors=self.site.ignore_model_errors,
            declared=parts.metric_names,
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
        base = self.site.work_dir / "demo" / parts.demo_dataset.sha256[:16]
        key = domain.pin_key("demo", parts.benchmark_id, model_id, model.image_digest, parts.demo_dataset.sha256)
        try:
            async with self.runner.inline(
                "compatibility", parts.benchmark_id, key, "model asked to join", last_try, model_id=model_id
            ):
                prepared = await prepare_demo(self.workflow, parts.demo_dataset, parts.preparator, base / "prepared")
                run = base / f"model-{model_id}"
                scores = await self.workflow.score(model, parts.metrics, prepared, run, declared=parts.metric_names)
        except TaskFailed as failed:
            detail = f"{failed} (the {failed.fault}'s fault)"
            return CompatibilityReport(passed=False, detail=detail, failure=failed.fault)
        metrics = scores.metrics
        return CompatibilityReport(passed=True, metrics={n: metrics[n] for n in parts.metric_names if n in metrics})

    # --- questions to other services -------------------------------------------------------------

    async def command(self, command: Command) -> Outcome:
        outcome = await ask(self.broker, command, self.request_timeout)
        if not outcome.ok:
            raise ServiceRefused(f"{type(command).__name__} refused ({outcome.code}): {outcome.reason}")
        return outcome

    async def get(self, entity: str, entity_id: int) -> dict:
        outcome = await ask(
            self.broker,
            GetEntity(actor=self.site.owner, entity=entity, id=entity_id),  # type: ignore[arg-type]
            self.request_timeout,
        )
        if outcome.code == "not_found":
            # We heard of it from an event, so the registry will know it soon (its own event
            # consumer may be a moment behind ours).
            raise NotYet(f"{entity} {entity_id}: {outcome.reason}")
        if not outcome.ok:
            raise ServiceRefused(f"reading {entity} {entity_id} refused ({outcome.code}): {outcome.reason}")
        return outcome.data

    async def model_spec(self, model_id: int) -> ContainerSpec:
        model = await self.get("model", model_id)
        return ContainerSpec.model_validate((await self.get("container", model["container_id"]))["spec"])

    async def benchmark(self, benchmark_id: int) -> BenchmarkParts:
        b = await self.get("benchmark", benchmark_id)
        preparator = ContainerSpec.model_validate((await self.get("container", b["data_preparator_id"]))["spec"])
        metrics = ContainerSpec.model_validate((await self.get("container", b["metrics_container_id"]))["spec"])
        parts = BenchmarkParts(
            benchmark_id=benchmark_id,
            name=b["name"],
            preparator_id=b["data_preparator_id"],
            preparator=preparator,
            reference_model_id=b["reference_model_id"],
            metrics=metrics,
            metric_names=tuple(m["name"] for m in b["metrics"]),
            demo_dataset=HostedFile.model_validate(b["demo_dataset"]),
        )
        return parts

    async def approved_models(self, benchmark_id: int) -> list[int]:
        rows = (
            await self.command(
                ListAssociations(actor=self.site.owner, benchmark_id=benchmark_id, kind="model", status="APPROVED")
            )
        ).data
        return [row["component_id"] for row in rows]  # already in priority order


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
