"""How a site's datasets join benchmarks, and leave them.

Two ways in: a dataset the site's configuration names (``MEDPERF_SITE_DATASETS``; the configuration
is the data owner's consent) joins when its benchmark is approved, or at the agent's start if the
benchmark was approved before the dataset was configured; a dataset the data owner hands to the
agent with ``medperf dataset submit`` is prepared at once (if its benchmark is approved; else when it
is), and registered only after the data owner has seen what would leave the site and said yes.
``medperf dataset withdraw`` rejects the association, so no new jobs start for it.

The CLI writes rows in the site's own database (``DatasetSubmission``, ``Withdrawal``), which only
people with access to the site machine can write; the loop here picks them up within a second and
writes the progress back, stage by stage, for the CLI to show.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from services.executor import domain, withdrawals
from services.executor.live import JobProgressReporter, submission_sink
from services.executor.progress import Sink
from services.executor.settings import LocalDataset
from services.executor.store import DatasetSubmission, PreparedDataset, Withdrawal
from services.executor.workflow import PreparedData, TaskFailed
from shared.commands import GetEntity, ListAssociations, RegisterDataset, RequestAssociation
from shared.events import AssociationRejected, BenchmarkApproved, CompatibilityReport
from shared.messaging import PermanentFailure
from shared.service import ask

if TYPE_CHECKING:
    from services.executor.agent import SiteAgent
    from services.executor.questions import BenchmarkParts

log = logging.getLogger("medperf.site.intake")

Stage = Callable[[str], Awaitable[None]]
#: Submissions the agent has work to do on; the others wait for the data owner or are finished.
ACTIVE = ("submitted", "preparing", "registering")


class DatasetIntake:
    def __init__(self, agent: SiteAgent, poll_interval: float = 1.0, retry_seconds: float = 5.0) -> None:
        self.agent = agent
        self.site = agent.site
        self.uow = agent.uow
        self.poll_interval = poll_interval
        self.retry_seconds = retry_seconds
        # One preparation of a (benchmark, dataset name) at a time: the event, its redelivery, the
        # start-up catch-up and a submission may all ask for the same one.
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False

    # --- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self.uow() as uow:  # work an earlier run of the agent was doing when it stopped
            for sub in (
                await uow.session.scalars(select(DatasetSubmission).where(DatasetSubmission.status == "preparing"))
            ).all():
                sub.status = "submitted"
            for sub in (
                await uow.session.scalars(select(DatasetSubmission).where(DatasetSubmission.status == "registering"))
            ).all():
                sub.status = "prepared"  # registering again is a no-op at the registry
            await uow.commit()
        self._loop = asyncio.create_task(self._run(), name=f"intake-{self.site.name}")
        self._spawn(self.catch_up())

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._round()
            except Exception:  # the database or broker hiccupped; the next round retries
                log.exception("%s: dataset intake round failed", self.site.name)
            await asyncio.sleep(self.poll_interval)

    async def _round(self) -> None:
        async with self.uow() as uow:
            subs = (
                await uow.session.scalars(
                    select(DatasetSubmission.id).where(
                        or_(
                            DatasetSubmission.status.in_(ACTIVE),
                            (DatasetSubmission.status == "prepared") & (DatasetSubmission.consent == "given"),
                        )
                    )
                )
            ).all()
            pending = (await uow.session.scalars(select(Withdrawal.id).where(Withdrawal.status == "requested"))).all()
        for sub_id in subs:
            if sub_id not in self._busy:
                self._busy.add(sub_id)
                self._spawn(self._advance(sub_id))
        for withdrawal_id in pending:
            await withdrawals.withdraw(self.agent, withdrawal_id)

    # --- configured datasets ---------------------------------------------------------------------

    async def on_benchmark_approved(self, event: BenchmarkApproved, last_try: bool = False) -> None:
        async with self.uow() as uow:
            waiting = (
                await uow.session.scalars(
                    select(DatasetSubmission).where(
                        DatasetSubmission.status == "waiting",
                        DatasetSubmission.benchmark.in_((event.name, str(event.benchmark_id))),
                    )
                )
            ).all()
            for sub in waiting:
                sub.status, sub.detail = "submitted", ""
            await uow.commit()
        for local in self.site.datasets:
            if local.benchmark == event.name:
                await self.join(event.benchmark_id, local, last_try)

    async def catch_up(self) -> None:
        """Configured datasets whose benchmark was approved before they were configured (the agent
        consumed that event then): the registry says whether it is approved now."""
        for local in self.site.datasets:
            try:
                benchmark = await self._approved_benchmark(local.benchmark)
                if benchmark is not None:
                    await self.join(benchmark, local)
            except Exception as exc:  # the data's fault, or the network's: say so, try at the next start
                log.warning("%s: %s did not join %s: %s", self.site.name, local.name, local.benchmark, exc)

    async def join(self, benchmark_id: int, local: LocalDataset, last_try: bool = False) -> None:
        async with self._lock(benchmark_id, local.name):
            parts = await self.agent.benchmark(benchmark_id)
            if await self._joined(benchmark_id, local.name):
                return  # already joined (a redelivery, or the start-up catch-up)
            try:
                prepared = await self.prepare(parts, local, "benchmark approved", last_try)
            except TaskFailed as failed:  # the data (or its preparator) is at fault: trying again cannot help
                raise PermanentFailure(f"preparing {local.name} failed: {failed}") from failed
            await self.register(parts, local.name, prepared, last_try)

    # --- the steps, shared -----------------------------------------------------------------------

    async def prepare(
        self,
        parts: BenchmarkParts,
        local: LocalDataset,
        reason: str,
        last_try: bool = False,
        on_stage: Stage | None = None,
        local_progress: Sink | None = None,
    ) -> PreparedData:
        log.info("%s: preparing %s for benchmark %s", self.site.name, local.name, parts.name)
        out = self.site.work_dir / "datasets" / f"b{parts.benchmark_id}-{local.name}"
        key = domain.pin_key("prepare", parts.benchmark_id, local.name, parts.preparator.image_digest)
        async with self.agent.runner.inline("prepare", parts.benchmark_id, key, reason, last_try) as job:
            progress = JobProgressReporter(self.site, self.uow, job, local=local_progress)
            return await self.agent.workflow.prepare(
                parts.preparator, local.data_path, local.labels_path, out, on_stage=on_stage, on_progress=progress
            )

    async def register(
        self,
        parts: BenchmarkParts,
        name: str,
        prepared: PreparedData,
        last_try: bool = False,
        on_stage: Stage | None = None,
    ) -> PreparedDataset:
        """Register the hashes and statistics, test the reference model on the data, and ask to join
        with that test attached. Only the data owner's consent (configuration, or a yes) leads here."""
        dataset_id = (
            await self.agent.command(
                RegisterDataset(
                    actor=self.site.owner,
                    name=name,
                    site=self.site.name,
                    data_preparator_id=parts.preparator_id,
                    input_hash=prepared.input_hash,
                    prepared_hash=prepared.prepared_hash,
                    statistics=prepared.statistics,
                    # Consent given, the dataset is final once prepared (MedPerf's set_operational).
                    state="OPERATION",
                )
            )
        ).id
        assert dataset_id is not None
        async with self.uow() as uow:
            row = await uow.session.scalar(
                select(PreparedDataset).where(
                    PreparedDataset.benchmark_id == parts.benchmark_id, PreparedDataset.name == name
                )
            ) or PreparedDataset(name=name, benchmark_id=parts.benchmark_id)
            uow.session.add(row)
            row.dataset_id, row.prepared_path = dataset_id, str(prepared.path)
            row.input_hash, row.prepared_hash, row.statistics = (
                prepared.input_hash,
                prepared.prepared_hash,
                prepared.statistics,
            )
            await uow.commit()
        if on_stage is not None:
            await on_stage("compatibility")
        # The compatibility test is the reference model's real run; it is kept and released only
        # if the association is approved, so the reference model never runs twice.
        job = await self.agent.compatibility_run(parts, row, last_try)
        report = self.agent.runner.key.sign_report(
            CompatibilityReport(
                passed=job.status == "succeeded",
                metrics=job.metrics,
                detail=job.detail,
                failure=job.failure,
                benchmark_id=parts.benchmark_id,
                kind="dataset",
                component_id=dataset_id,
                container_digests=job.container_digests,
                data_hash=job.dataset_hash,
            ),
            self.site.name,
        )
        if on_stage is not None:
            await on_stage("request")
        outcome = await ask(
            self.agent.broker,
            RequestAssociation(
                actor=self.site.owner,
                benchmark_id=parts.benchmark_id,
                kind="dataset",
                component_id=dataset_id,
                compatibility=report,
            ),
            self.agent.request_timeout,
        )
        if outcome.ok:
            status = outcome.data["status"]
        else:
            status = await self._existing_request(parts.benchmark_id, dataset_id)
            if status is None:  # e.g. the benchmark was withdrawn: retrying cannot help
                raise PermanentFailure(f"association request refused ({outcome.code}): {outcome.reason}")
        async with self.uow() as uow:
            row = await uow.session.merge(row)
            if row.association == "NONE":  # never overwrite an approval that arrived meanwhile
                row.association = status
            await uow.commit()
        return row

    # --- submissions -----------------------------------------------------------------------------

    async def _advance(self, sub_id: int) -> None:
        try:
            async with self.uow() as uow:
                sub = await uow.session.get(DatasetSubmission, sub_id)
            if sub is None:
                return
            if sub.status in ("submitted", "preparing"):
                await self._prepare_submission(sub)
            else:
                await self._register_submission(sub)
        except (TaskFailed, PermanentFailure) as failed:
            await self._update(sub_id, status="failed", detail=str(failed), fail_stage=True)
        except Exception as exc:  # the network, the engine, another service: tried again shortly
            log.warning("%s: submission %d: %s; trying again", self.site.name, sub_id, exc)
            await self._update(sub_id, detail=f"will try again: {type(exc).__name__}: {exc}")
            await asyncio.sleep(self.retry_seconds)
        finally:
            self._busy.discard(sub_id)

    async def _prepare_submission(self, sub: DatasetSubmission) -> None:
        await self._update(sub.id, stage="benchmark")
        benchmark_id = await self._approved_benchmark(sub.benchmark)
        if benchmark_id is None:
            why = (
                f"benchmark {sub.benchmark} is not approved (or not known) yet; the agent prepares the data once it is"
            )
            await self._update(sub.id, status="waiting", detail=why)
            return
        local = LocalDataset(
            name=sub.name, benchmark=sub.benchmark, data_path=Path(sub.data_path), labels_path=Path(sub.labels_path)
        )
        async with self._lock(benchmark_id, sub.name):
            if await self._joined(benchmark_id, sub.name):
                raise PermanentFailure(f"a dataset named {sub.name} already joined this benchmark at this site")
            parts = await self.agent.benchmark(benchmark_id)
            await self._update(sub.id, status="preparing", benchmark_id=benchmark_id, detail="")

            async def on_stage(stage: str) -> None:
                await self._update(sub.id, stage=stage)

            shown = submission_sink(self.uow, sub.id)  # what `medperf dataset submit` shows
            prepared = await self.prepare(parts, local, "submitted by the data owner", False, on_stage, shown)
        await self._update(
            sub.id,
            status="prepared",
            stage="",
            data_preparator_id=parts.preparator_id,
            input_hash=prepared.input_hash,
            prepared_hash=prepared.prepared_hash,
            prepared_path=str(prepared.path),
            statistics=prepared.statistics,
        )

    async def _register_submission(self, sub: DatasetSubmission) -> None:
        assert sub.benchmark_id is not None
        parts = await self.agent.benchmark(sub.benchmark_id)
        prepared = PreparedData(Path(sub.prepared_path), sub.input_hash, sub.prepared_hash, sub.statistics)
        await self._update(sub.id, status="registering", stage="register")

        async def on_stage(stage: str) -> None:
            await self._update(sub.id, stage=stage)

        async with self._lock(sub.benchmark_id, sub.name):
            row = await self.register(parts, sub.name, prepared, on_stage=on_stage)
        await self._update(
            sub.id, status="requested", stage="", dataset_id=row.dataset_id, association=row.association, detail=""
        )

    async def _update(self, sub_id: int, stage: str | None = None, fail_stage: bool = False, **fields: object) -> None:
        """Write progress: ``stage`` starts (the running one is done), or the running one failed."""
        async with self.uow() as uow:
            sub = await uow.session.get(DatasetSubmission, sub_id)
            if sub is None:
                return
            stages = dict(sub.stages)
            for name, state in stages.items():
                if state == "running":
                    stages[name] = "failed" if fail_stage else "done"
            if stage:
                stages[stage] = "running"
            sub.stages = stages
            for name, value in fields.items():
                setattr(sub, name, value)
            await uow.commit()

    async def on_association_rejected(self, event: AssociationRejected) -> None:
        """A request rejected, or an approval revoked (by the committee, or the data owner): no new
        jobs for the dataset here."""
        if event.kind == "dataset":
            await withdrawals.stop_dataset(self.uow, event.component_id, "REJECTED")

    # --- questions -------------------------------------------------------------------------------

    async def _approved_benchmark(self, benchmark: str) -> int | None:
        """The benchmark's id if the registry says it is approved; None if it is not (yet), or not
        visible to this site's owner (the same thing, to them)."""
        query = (
            GetEntity(actor=self.site.owner, entity="benchmark", id=int(benchmark))
            if benchmark.isdigit()
            else GetEntity(actor=self.site.owner, entity="benchmark", name=benchmark)
        )
        outcome = await ask(self.agent.broker, query, self.agent.request_timeout)
        if outcome.code == "not_found":
            return None
        if not outcome.ok:
            raise RuntimeError(f"reading benchmark {benchmark} refused ({outcome.code}): {outcome.reason}")
        data = outcome.data
        return data["id"] if data.get("approval_status") == "APPROVED" and data.get("is_valid", True) else None

    async def _joined(self, benchmark_id: int, name: str) -> bool:
        async with self.uow() as uow:
            row = await uow.session.scalar(
                select(PreparedDataset).where(
                    PreparedDataset.benchmark_id == benchmark_id, PreparedDataset.name == name
                )
            )
            return row is not None and row.association != "NONE"

    async def _existing_request(self, benchmark_id: int, dataset_id: int) -> str | None:
        """The status of a request this site already made (before a crash), if any."""
        rows = (
            await self.agent.command(
                ListAssociations(
                    actor=self.site.owner, benchmark_id=benchmark_id, kind="dataset", component_id=dataset_id
                )
            )
        ).data
        return rows[0]["status"] if rows and rows[0]["status"] in ("PENDING", "APPROVED") else None

    def _lock(self, benchmark_id: int, name: str) -> asyncio.Lock:
        return self._locks.setdefault((benchmark_id, name), asyncio.Lock())
