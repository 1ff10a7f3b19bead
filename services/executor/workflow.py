"""The site's container pipeline, free of messaging: prepare a dataset, run a model, score it.

Every task runs through a ``ContainerRuntime`` (network off, inputs read-only, non-root, time limit)
with the mounts the container spec declares. Outputs land in fresh directories under the site's
work directory; nothing here sends anything anywhere.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import shutil
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from services.executor.assets import AssetCache, RefusedAsset
from services.executor.domain import fault_of_asset, fault_of_task
from services.executor.engine import Bind, ContainerRuntime, TaskOutcome, TaskRun
from services.executor.hashing import tree_hash  # re-exported: the agent and tests import it from here
from services.executor.images import ImageFailed, obtain_image
from services.executor.limits import GpusRefused, TaskLimits, setting, size
from services.executor.manifest import FULL_CHECK_FILE, MANIFEST_FILE, build
from shared.containers import ContainerSpec, TaskSpec
from shared.events import FailureKind
from shared.limits import LimitExceeded, check_statistics_size

#: Files the executor reads from output directories (the rest of the container contract is in
#: ``shared.containers``).
STATISTICS_FILE = "statistics.json"
RESULTS_FILE = "results.json"


class TaskFailed(Exception):
    """A task failed for a reason that is not the site's: ``fault`` says whose (by default the
    task's container's, ``domain.TASK_FAULT``), and it is final, never retried."""

    def __init__(
        self, task: str, outcome: TaskOutcome | None, detail: str = "", fault: FailureKind | None = None
    ) -> None:
        if outcome is not None and outcome.exceeded:
            detail = detail or outcome.exceeded
        elif outcome is not None and outcome.timed_out:
            detail = detail or f"timed out after {outcome.duration_seconds:.0f} s"
        elif outcome is not None:
            detail = detail or f"exited with {outcome.exit_code}"
        super().__init__(f"{task} failed: {detail}")
        self.task = task
        self.fault: FailureKind = fault or fault_of_task(task)
        self.log_tail = outcome.log_tail if outcome else ""


@dataclass(frozen=True)
class PreparedData:
    path: Path  # holds data/ and labels/
    input_hash: str
    prepared_hash: str
    statistics: dict[str, float | int | str]

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


def time_limit(task: TaskSpec, site_timeout: float) -> tuple[float, str]:
    """The seconds a task may run, and which limit that is: a container may ask for less time
    than the site allows, never more."""
    asked = task.timeout_seconds
    if asked is not None and asked <= site_timeout:
        return float(asked), "the container's own timeout_seconds"
    also = f"; the container asked for {asked} s" if asked is not None else ""
    return site_timeout, f"the site's task timeout ({setting('task_timeout')} raises it{also})"


def leaving_metrics(results: dict) -> dict[str, float]:
    """The top-level numbers of results.json: the only part of it that leaves the site. JSON
    allows NaN, infinities and integers too large for a float; no consumer can read them, so they
    are the metrics container's fault, not a failure to retry."""
    numbers = {}
    for name, value in results.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise TaskFailed("evaluate", None, f"metric {name!r} in {RESULTS_FILE} is {value!r}; only finite numbers")
        numbers[name] = number
    return numbers


def leaving_statistics(report: dict) -> dict[str, float | int | str]:
    """statistics.json as it leaves the site with the dataset's registration: flat (names to
    numbers or strings), finite, and small enough for every list and event that carries it."""
    try:
        statistics = _STATISTICS.validate_python(report, strict=True)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        message = f"{STATISTICS_FILE} must map names to numbers or strings ({where})"
        raise TaskFailed("statistics", None, message) from exc
    for name, value in statistics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise TaskFailed("statistics", None, f"{STATISTICS_FILE}: {name!r} is {value}; only finite numbers")
    try:
        check_statistics_size(statistics)
    except LimitExceeded as exc:
        raise TaskFailed("statistics", None, f"{STATISTICS_FILE}: {exc}") from exc
    return statistics


_STATISTICS: TypeAdapter[dict[str, float | int | str]] = TypeAdapter(dict[str, float | int | str])


def read_report(path: Path, task: str, limit: int) -> dict:
    """The JSON object a container left in ``path`` (results.json, statistics.json), read on the
    host with care: at most ``limit`` bytes are read, the file must be a regular file (a link the
    container wrote would lead anywhere on the host; a FIFO would block the agent), and anything
    unreadable is the container's fault."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        why = "it is a symbolic link; only a regular file is read" if exc.errno == errno.ELOOP else exc.strerror
        raise TaskFailed(task, None, f"it did not write a valid {path.name}: {why}") from exc
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise TaskFailed(task, None, f"{path.name} must be a regular file")
        if info.st_size > limit:
            raise _too_large(path, task, info.st_size, limit)
        data = handle.read(limit + 1)  # never more, even if the file grew since fstat
    if len(data) > limit:
        raise _too_large(path, task, len(data), limit)
    try:
        report = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise TaskFailed(task, None, f"it did not write a valid {path.name}: {str(exc)[:200]}") from exc
    if not isinstance(report, dict):
        raise TaskFailed(task, None, f"{path.name} must hold a JSON object")
    return report


def _too_large(path: Path, task: str, found: int, limit: int) -> TaskFailed:
    reason = f"{path.name} is {size(found)}, more than the site's limit of {size(limit)}"
    return TaskFailed(task, None, f"{reason} ({setting('results_max_bytes')} raises it)")


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
    ) -> PreparedData:
        """prepare -> sanity_check -> statistics; ``out`` is replaced by the prepared dataset.
        ``on_stage`` is told each stage as it starts (the data owner watches them)."""

        async def stage(name: str) -> None:
            if on_stage is not None:
                await on_stage(name)

        await stage("hash")
        input_hash = await asyncio.to_thread(tree_hash, raw_data, raw_labels)
        await stage("prepare")
        staging = out.with_name(f"{out.name}.staging-{uuid.uuid4().hex[:8]}")
        run = staging / "run"
        await self.run_task(
            preparator,
            "prepare",
            run,
            {
                "data_path": raw_data,
                "labels_path": raw_labels,
                "output_path": staging / "data",
                "output_labels_path": staging / "labels",
            },
        )
        await stage("sanity_check")
        await self.run_task(
            preparator,
            "sanity_check",
            run,
            {
                "data_path": staging / "data",
                "labels_path": staging / "labels",
            },
        )
        await stage("statistics")
        await self.run_task(
            preparator,
            "statistics",
            run,
            {
                "data_path": staging / "data",
                "labels_path": staging / "labels",
                "output_path": run / "statistics",
            },
        )
        statistics = leaving_statistics(
            read_report(run / "statistics" / STATISTICS_FILE, "statistics", self.limits.results_bytes)
        )
        # The manifest of what was registered, so checks before each job read only what changed since.
        manifest = await asyncio.to_thread(build, staging / "data", staging / "labels")
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
    ) -> Scores:
        """infer with ``model``, then evaluate with ``metrics``; returns the metrics only.
        Predictions and per-case outputs stay under ``run`` on this site. With
        ``ignore_model_errors`` (MedPerf's --ignore-model-errors), a model that fails after writing
        some predictions is scored on those, and the scores are marked partial."""
        partial = False
        try:
            await self.run_task(
                model, "infer", run, {"data_path": data.data, "output_path": run / "predictions"}, labels=labels
            )
        except TaskFailed:
            predictions = run / "predictions"
            if not (ignore_model_errors and predictions.is_dir() and any(predictions.iterdir())):
                raise
            partial = True
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
        results = read_report(run / "results" / RESULTS_FILE, "evaluate", self.limits.results_bytes)
        return Scores(leaving_metrics(results), partial)

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
            shutil.rmtree(mounts[key], ignore_errors=True)  # a fresh directory per run
            binds.append(Bind(mounts[key], mount.mount_path, read_only=False))
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
                    command=list(task.command),
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
