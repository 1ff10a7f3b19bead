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
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from faststream.nats import NatsBroker
from sqlalchemy import select

from services.executor import domain
from services.executor.demo import prepare_demo
from services.executor.questions import BenchmarkParts, FederationQuestions
from services.executor.runner import JobRunner, add_job, job_event, release
from services.executor.settings import LocalDataset, SiteSettings
from services.executor.store import Job, PreparedDataset
from services.executor.workflow import PreparedData, Scores, TaskFailed, Workflow, tree_hash
from shared.commands import (
    ListAssociations,
    RegisterDataset,
    RequestAssociation,
)
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
from shared.messaging import PermanentFailure
from shared.service import ask

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

    # --- event handlers -----------------------------------------------------------------------

    # ``last_try``: the event's last delivery before it is dead-lettered, so a job that fails now on
    # the infrastructure must say it will not be retried.

    async def on_benchmark_approved(self, event: BenchmarkApproved, last_try: bool = False) -> None:
        for local in self.site.datasets:
            if local.benchmark == event.name:
                await self.join(event.benchmark_id, local, last_try)

    async def on_association_approved(self, event: AssociationApproved) -> None:
        async with self.uow() as uow:
            if event.kind == "dataset":
                row = await uow.session.scalar(
                    select(PreparedDataset).where(PreparedDataset.dataset_id == event.component_id)
                )
                if row is None:
                    return  # another site's dataset
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

    async def join(self, benchmark_id: int, local: LocalDataset, last_try: bool = False) -> None:
        parts = await self.benchmark(benchmark_id)
        async with self.uow() as uow:
            row = await uow.session.scalar(
                select(PreparedDataset).where(
                    PreparedDataset.benchmark_id == benchmark_id, PreparedDataset.name == local.name
                )
            )
            if row is not None and row.association != "NONE":
                return  # already joined (this is a redelivery)
        log.info("%s: preparing %s for benchmark %s", self.site.name, local.name, parts.name)
        out = self.site.work_dir / "datasets" / f"b{benchmark_id}-{local.name}"
        key = _key("prepare", benchmark_id, local.name, parts.preparator.image_digest)
        try:
            async with self.runner.inline("prepare", benchmark_id, key, "benchmark approved", last_try):
                prepared = await self.workflow.prepare(parts.preparator, local.data_path, local.labels_path, out)
        except TaskFailed as failed:  # the data (or its preparator) is at fault: trying again cannot help
            raise PermanentFailure(f"preparing {local.name} failed: {failed}") from failed
        dataset_id = (
            await self.command(
                RegisterDataset(
                    actor=self.site.owner,
                    name=local.name,
                    site=self.site.name,
                    data_preparator_id=parts.preparator_id,
                    input_hash=prepared.input_hash,
                    prepared_hash=prepared.prepared_hash,
                    statistics=prepared.statistics,
                    # The site's configuration is the data owner's consent to take part: the dataset
                    # is final once prepared (MedPerf's set_operational).
                    state="OPERATION",
                )
            )
        ).id
        assert dataset_id is not None
        async with self.uow() as uow:
            if row is None:
                row = PreparedDataset(name=local.name, benchmark_id=benchmark_id)
            row = await uow.session.merge(row)
            row.dataset_id, row.prepared_path = dataset_id, str(prepared.path)
            row.input_hash, row.prepared_hash, row.statistics = (
                prepared.input_hash,
                prepared.prepared_hash,
                prepared.statistics,
            )
            await uow.commit()
        # The compatibility test is the reference model's real run; it is kept and released only
        # if the association is approved, so the reference model never runs twice.
        job = await self.compatibility_run(parts, row, last_try)
        report = self.runner.key.sign_report(
            CompatibilityReport(
                passed=job.status == "succeeded",
                metrics=job.metrics,
                detail=job.detail,
                failure=job.failure,
                benchmark_id=benchmark_id,
                kind="dataset",
                component_id=dataset_id,
                container_digests=job.container_digests,
                data_hash=job.dataset_hash,
            ),
            self.site.name,
        )
        outcome = await ask(
            self.broker,
            RequestAssociation(
                actor=self.site.owner,
                benchmark_id=benchmark_id,
                kind="dataset",
                component_id=dataset_id,
                compatibility=report,
            ),
            self.request_timeout,
        )
        if outcome.ok:
            status = outcome.data["status"]
        else:
            status = await self._existing_request(benchmark_id, dataset_id)
            if status is None:  # e.g. the benchmark was withdrawn: retrying cannot help
                raise PermanentFailure(f"association request refused ({outcome.code}): {outcome.reason}")
        async with self.uow() as uow:
            row = await uow.session.merge(row)
            if row.association == "NONE":  # never overwrite an approval that arrived meanwhile
                row.association = status
            await uow.commit()

    async def _existing_request(self, benchmark_id: int, dataset_id: int) -> str | None:
        """The status of a request this site already made (before a crash), if any."""
        rows = (
            await self.command(
                ListAssociations(
                    actor=self.site.owner,
                    benchmark_id=benchmark_id,
                    kind="dataset",
                    component_id=dataset_id,
                )
            )
        ).data
        return rows[0]["status"] if rows and rows[0]["status"] in ("PENDING", "APPROVED") else None

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
        )
        # Only the metrics the benchmark declared leave the site.
        declared = {name: scores.metrics[name] for name in parts.metric_names if name in scores.metrics}
        return Scores(declared, scores.partial)

    def sign(self, report: CompatibilityReport, kind: str, event: AssociationRequested) -> CompatibilityReport:
        """``report`` as this site's signed test of the requested association."""
        tested = report.model_copy(
            update={"benchmark_id": event.benchmark_id, "kind": kind, "component_id": event.component_id}
        )
        return self.runner.key.sign_report(tested, self.site.name)

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
        key = _key("demo", parts.benchmark_id, model_id, model.image_digest, parts.demo_dataset.sha256)
        try:
            async with self.runner.inline(
                "compatibility", parts.benchmark_id, key, "model asked to join", last_try, model_id=model_id
            ):
                prepared = await prepare_demo(self.workflow, parts.demo_dataset, parts.preparator, base / "prepared")
                scores = await self.workflow.score(model, parts.metrics, prepared, base / f"model-{model_id}")
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


def _job_key(parts: BenchmarkParts, model_id: int, model: ContainerSpec, dataset: PreparedDataset) -> str:
    """What pins a run's result: the same key is the same work."""
    return _key(
        parts.benchmark_id,
        model_id,
        dataset.dataset_id,
        model.image_digest,
        parts.metrics.image_digest,
        dataset.prepared_hash,
    )


def _key(*pinned: object) -> str:
    return hashlib.sha256(json.dumps(pinned).encode()).hexdigest()
