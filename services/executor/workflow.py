"""The site's container pipeline, free of messaging: prepare a dataset, run a model, score it.

Every task runs through a ``ContainerRuntime`` (network off, inputs read-only, non-root, time limit)
with the mounts the container spec declares. Outputs land in fresh directories under the site's
work directory; nothing here sends anything anywhere.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from services.executor import prep_report
from services.executor.assets import AssetCache, RefusedAsset
from services.executor.domain import fault_of_asset
from services.executor.engine import Bind, ContainerRuntime, TaskRun
from services.executor.failed import TaskFailed
from services.executor.hashing import tree_hash, walk  # tree_hash re-exported: the agent and tests use it
from services.executor.images import ImageFailed, obtain_image
from services.executor.limits import GpusRefused, TaskLimits, setting, size
from services.executor.manifest import FULL_CHECK_FILE, MANIFEST_FILE, build
from services.executor.progress import Meter, Progress, Sink, stage_teller, tell, watching
from services.executor.reports import (
    RESULTS_FILES,
    STATISTICS_FILES,
    leaving_metrics,
    leaving_statistics,
    read_report,
    report_file,
)
from shared.containers import ContainerSpec, Mount, TaskSpec
from shared.events import Statistics

# Re-exported: the agent, the runner and tests know them from here.
__all__ = ["PreparedData", "Scores", "TaskFailed", "Workflow", "leaving_metrics", "leaving_statistics", "read_report"]


#: How often a running preparator's report file is read (each read is bounded: ``prep_report``).
REPORT_SECONDS = 1.0


@dataclass(frozen=True)
class PreparedData:
    path: Path  # holds data/ and labels/
    input_hash: str
    prepared_hash: str
    statistics: Statistics

    @property
    def data(self) -> Path:
        return self.path / "data"

    @property
    def labels(self) -> Path:
        return self.path / "labels"


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]
    partial: bool = False


def check_room(raw_data: Path, raw_labels: Path, where: Path) -> None:
    """Refuse a preparation that cannot fit: its output is written once, beside nothing else, and
    is about the raw data's size; so the disk under ``where`` must have that much free."""
    raw = sum(found.stat.st_size for found in walk(raw_data, raw_labels))
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < raw:
        raise TaskFailed(
            "prepare",
            None,
            f"the prepared data needs about {size(raw)} (the raw data's size) and {where} has {size(free)} free: "
            f"free some space, or point {setting('work_dir')} at a larger disk",
            fault="infrastructure",
        )


def time_limit(task: TaskSpec, site_timeout: float) -> tuple[float, str]:
    """The seconds a task may run, and which limit that is: a container may ask for less time
    than the site allows, never more."""
    asked = task.timeout_seconds
    if asked is not None and asked <= site_timeout:
        return float(asked), "the container's own timeout_seconds"
    also = f"; the container asked for {asked} s" if asked is not None else ""
    return site_timeout, f"the site's task timeout ({setting('task_timeout')} raises it{also})"


class Workflow:
    def __init__(
        self,
        runtime: ContainerRuntime | None,
        cache: AssetCache,
        work_dir: Path,
        task_timeout: float,
        *,
        limits: TaskLimits | None = None,
        pull_images: bool = False,
    ) -> None:
        """``task_timeout`` caps every task's time; ``limits`` bound the rest (default: the site
        limits' defaults); ``pull_images``: a missing image is pulled by its digest."""
        self.runtime = runtime
        self.cache = cache
        self.work_dir = work_dir
        self.task_timeout = task_timeout
        self.limits = limits or TaskLimits()
        self.pull_images = pull_images

    async def prepare(
        self,
        preparator: ContainerSpec,
        raw_data: Path,
        raw_labels: Path,
        out: Path,
        on_stage: Callable[[str], Awaitable[None]] | None = None,
        on_progress: Sink | None = None,
    ) -> PreparedData:
        """prepare -> sanity_check -> statistics; ``out`` is replaced by the prepared dataset.
        ``on_stage`` is told each stage as it starts (the data owner watches them); ``on_progress``
        that too, the bytes hashed, and the preparator's report file as it grows."""
        stage = stage_teller(on_stage, on_progress)
        await stage("hash", "hashing the raw data")
        await asyncio.to_thread(check_room, raw_data, raw_labels, out.parent)
        meter = Meter()
        async with watching(on_progress, lambda: meter.sample("hash")):
            input_hash = await asyncio.to_thread(tree_hash, raw_data, raw_labels, progress=meter)
        await stage("prepare", "the data preparator runs")
        staging = out.with_name(f"{out.name}.staging-{uuid.uuid4().hex[:8]}")
        run = staging / "run"
        # MedPerf's metadata folder lives beside the prepared data; the report stays in the run.
        metadata = staging / "metadata"
        metadata.mkdir(parents=True)
        report = run / "report"
        async with watching(on_progress, prep_report.ReportReader(report), REPORT_SECONDS, blocking=True):
            await self.run_task(
                preparator,
                "prepare",
                run,
                {
                    "data_path": raw_data,
                    "labels_path": raw_labels,
                    "output_path": staging / "data",
                    "output_labels_path": staging / "labels",
                    "metadata_path": metadata,
                    "report_file": report,
                },
            )
        await stage("sanity_check")
        await self.run_task(
            preparator,
            "sanity_check",
            run,
            {"data_path": staging / "data", "labels_path": staging / "labels", "metadata_path": metadata},
        )
        await stage("statistics")
        await self.run_task(
            preparator,
            "statistics",
            run,
            {
                "data_path": staging / "data",
                "labels_path": staging / "labels",
                "metadata_path": metadata,
                "output_path": run / "statistics",
            },
        )
        written = report_file(_output(preparator, "statistics", run / "statistics"), STATISTICS_FILES)
        statistics = leaving_statistics(read_report(written, "statistics", self.limits.results_bytes))
        # The manifest of what was registered, so checks before each job read only what changed since.
        await stage("hash_prepared", "hashing the prepared data")
        meter = Meter()
        async with watching(on_progress, lambda: meter.sample("hash_prepared")):
            manifest = await asyncio.to_thread(build, staging / "data", staging / "labels", progress=meter)
        manifest.save(staging / MANIFEST_FILE)
        (staging / FULL_CHECK_FILE).write_text(str(manifest.scanned_ns))
        prepared_hash = manifest.digest
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
        return PreparedData(out, input_hash, prepared_hash, statistics)

    async def score(
        self,
        model: ContainerSpec,
        metrics: ContainerSpec,
        data: PreparedData,
        run: Path,
        *,
        labels: dict[str, str] | None = None,
        ignore_model_errors: bool = False,
        declared: tuple[str, ...] = (),
        on_progress: Sink | None = None,
    ) -> Scores:
        """infer with ``model``, then evaluate with ``metrics``; returns the metrics only.
        Predictions and per-case outputs stay under ``run`` on this site. With
        ``ignore_model_errors`` (MedPerf's --ignore-model-errors), a model that fails after writing
        some predictions is scored on those, and the scores are marked partial. A ``declared``
        metric missing from the results is the metrics container's failure."""
        partial = False
        await tell(on_progress, Progress("run", message="the model runs"))
        try:
            await self.run_task(
                model, "infer", run, {"data_path": data.data, "output_path": run / "predictions"}, labels=labels
            )
        except TaskFailed:
            predictions = run / "predictions"
            if not (ignore_model_errors and predictions.is_dir() and any(predictions.iterdir())):
                raise
            partial = True
        await tell(on_progress, Progress("evaluate", message="the metrics container runs"))
        await self.run_task(
            metrics,
            "evaluate",
            run,
            {
                "predictions": run / "predictions",
                "labels": data.labels,
                "output_path": run / "results",
                "local_outputs_path": run / "local_outputs",
            },
            labels=labels,
        )
        written = report_file(_output(metrics, "evaluate", run / "results"), RESULTS_FILES)
        results = read_report(written, "evaluate", self.limits.results_bytes)
        return Scores(leaving_metrics(results, declared), partial)

    async def run_task(
        self,
        spec: ContainerSpec,
        task_name: str,
        run: Path,
        mounts: dict[str, Path],
        labels: dict[str, str] | None = None,
    ) -> None:
        task = spec.tasks.get(task_name)  # type: ignore[call-overload]
        if task is None:
            raise TaskFailed(task_name, None, f"the container has no {task_name!r} task")
        run.mkdir(parents=True, exist_ok=True)
        binds = []
        for key, mount in task.inputs.items():
            path = await self._input_path(spec, task_name, key, run, mounts)
            binds.append(Bind(path, mount.mount_path, read_only=True))
        for key, mount in task.outputs.items():
            if key not in mounts:
                raise TaskFailed(task_name, None, f"the executor has no output for mount {key!r}")
            binds.append(Bind(_fresh_output(mounts[key], mount), mount.mount_path, read_only=False))
        runtime = self.runtime
        assert runtime is not None, "the agent connects its container engine at start"
        await self._ensure_image(runtime, spec, task_name)
        timeout, which = time_limit(task, self.task_timeout)
        try:
            outcome = await asyncio.to_thread(
                runtime.run,
                TaskRun(
                    name=f"{task_name}-{uuid.uuid4().hex[:8]}",
                    image_digest=spec.image_digest,
                    command=list(task.command) if task.command else None,
                    entrypoint=list(task.entrypoint) if task.entrypoint else None,
                    binds=binds,
                    environment=dict(task.environment),
                    timeout_seconds=timeout,
                    log_path=run / "logs" / f"{task_name}.log",
                    gpus=task.gpus,
                    shm_size=task.shm_size,
                    labels=dict(labels or {}),
                    cpus=self.limits.cpus,
                    output_limit=self.limits.output_bytes,
                ),
            )
        except GpusRefused as exc:  # the site gives tasks no such GPUs; its message names the setting
            raise TaskFailed(task_name, None, str(exc)) from exc
        if outcome.timed_out and not outcome.exceeded:
            raise TaskFailed(task_name, outcome, f"timed out after {timeout:g} s, {which}")
        if not outcome.ok:
            raise TaskFailed(task_name, outcome)

    async def _ensure_image(self, runtime: ContainerRuntime, spec: ContainerSpec, task_name: str) -> None:
        try:
            await obtain_image(runtime, self.cache, spec, task_name, self.pull_images)
        except ImageFailed as exc:
            raise TaskFailed(task_name, None, str(exc), fault=exc.fault) from exc

    async def _input_path(
        self, spec: ContainerSpec, task_name: str, key: str, run: Path, mounts: dict[str, Path]
    ) -> Path:
        if key == "parameters_file":
            path = run / f"parameters-{spec.image_digest[7:19]}.json"
            path.write_text(json.dumps(spec.parameters))
            path.chmod(0o644)
            return path
        if key == "additional_files":
            assert spec.additional_files is not None  # the spec validator guarantees it
            try:
                return await self.cache.extracted(spec.additional_files)
            except RefusedAsset as exc:
                # Not the registered hash, a web page, unsafe paths or links, over a site limit:
                # the container owner's fault, and fetching the same bytes again cannot help, so
                # the task fails for good.
                source = spec.additional_files.source
                detail = f"its additional files ({source}) were refused: {exc}"
                raise TaskFailed(task_name, None, detail, fault=fault_of_asset(task_name)) from exc
        if key not in mounts:
            raise TaskFailed("mount", None, f"the executor has no input for mount {key!r}")
        return mounts[key]


def _output_file(directory: Path, mount: Mount) -> Path:
    return directory / (posixpath.basename(mount.mount_path) or "output")


def _fresh_output(directory: Path, mount: Mount) -> Path:
    """A fresh output per run; a ``type: file`` output is an empty file created beforehand (inside
    a fresh directory, named as its mount path) and bound as a file, as MedPerf does."""
    shutil.rmtree(directory, ignore_errors=True)
    if mount.type == "directory":
        return directory
    directory.mkdir(parents=True)
    path = _output_file(directory, mount)
    path.touch()
    path.chmod(0o666)  # the container's user may not be the agent's: it must be able to write it
    return path


def _output(spec: ContainerSpec, task_name: str, directory: Path) -> Path:
    """Where the task's ``output_path`` landed on the host: the file itself for a ``type: file`` output."""
    task = spec.tasks.get(task_name)  # type: ignore[call-overload]
    mount = task.outputs.get("output_path") if task is not None else None
    return _output_file(directory, mount) if mount is not None and mount.type == "file" else directory
