"""The site's container pipeline, free of messaging: prepare a dataset, run a model, score it.

Every task runs through a ``ContainerRuntime`` (network off, inputs read-only, non-root, time limit)
with the mounts the container spec declares. Outputs land in fresh directories under the site's
work directory; nothing here sends anything anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.executor.assets import AssetCache, InvalidArchive
from services.executor.runtime import Bind, ContainerRuntime, ImageNotAvailable, TaskOutcome, TaskRun
from shared.containers import ContainerSpec

#: Files the executor reads from output directories (the rest of the container contract is in
#: ``shared.containers``).
STATISTICS_FILE = "statistics.json"
RESULTS_FILE = "results.json"


class TaskFailed(Exception):
    def __init__(self, task: str, outcome: TaskOutcome | None, detail: str = "") -> None:
        if outcome is not None and outcome.timed_out:
            detail = detail or f"timed out after {outcome.duration_seconds:.0f} s"
        elif outcome is not None:
            detail = detail or f"exited with {outcome.exit_code}"
        super().__init__(f"{task} failed: {detail}")
        self.task = task
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


def tree_hash(*roots: Path) -> str:
    """sha256 over every file's relative path and content: renaming or moving a file changes it
    (MedPerf's folder hash ignored names)."""
    digest = hashlib.sha256()
    for index, root in enumerate(roots):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{index}:{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class Workflow:
    def __init__(
        self, runtime: ContainerRuntime | None, cache: AssetCache, work_dir: Path, task_timeout: float
    ) -> None:
        self.runtime = runtime
        self.cache = cache
        self.work_dir = work_dir
        self.task_timeout = task_timeout

    async def prepare(self, preparator: ContainerSpec, raw_data: Path, raw_labels: Path, out: Path) -> PreparedData:
        """prepare -> sanity_check -> statistics; ``out`` is replaced by the prepared dataset."""
        input_hash = await asyncio.to_thread(tree_hash, raw_data, raw_labels)
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
        await self.run_task(
            preparator,
            "sanity_check",
            run,
            {
                "data_path": staging / "data",
                "labels_path": staging / "labels",
            },
        )
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
        statistics = _read_json(run / "statistics" / STATISTICS_FILE, "statistics")
        prepared_hash = await asyncio.to_thread(tree_hash, staging / "data", staging / "labels")
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
        results = _read_json(run / "results" / RESULTS_FILE, "evaluate")
        numbers = {k: float(v) for k, v in results.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        return Scores(numbers, partial)

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
        await self._ensure_image(runtime, spec)
        outcome = await asyncio.to_thread(
            runtime.run,
            TaskRun(
                name=f"{task_name}-{uuid.uuid4().hex[:8]}",
                image_digest=spec.image_digest,
                command=list(task.command),
                binds=binds,
                environment=dict(task.environment),
                timeout_seconds=task.timeout_seconds or self.task_timeout,
                log_path=run / "logs" / f"{task_name}.log",
                gpus=task.gpus,
                shm_size=task.shm_size,
                labels=dict(labels or {}),
            ),
        )
        if not outcome.ok:
            raise TaskFailed(task_name, outcome)

    async def _ensure_image(self, runtime: ContainerRuntime, spec: ContainerSpec) -> None:
        """The image must be here; a spec with an ``image_archive`` brings its own, verified twice:
        the archive's sha256 on download, and the loaded image's ID against ``image_digest``."""
        try:
            await asyncio.to_thread(runtime.ensure_image, spec.image_digest)
            return
        except ImageNotAvailable:
            if spec.image_archive is None:
                raise
        archive = await self.cache.fetch(spec.image_archive)
        await asyncio.to_thread(runtime.load_image, archive)
        try:
            await asyncio.to_thread(runtime.ensure_image, spec.image_digest)
        except ImageNotAvailable as exc:
            raise ImageNotAvailable(
                f"the image archive {spec.image_archive.source} does not hold image {spec.image_digest}"
            ) from exc

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
            except InvalidArchive as exc:
                # Unsafe paths or links in the container's own files: its owner's fault, and
                # downloading the same bytes again cannot help, so the task fails for good.
                raise TaskFailed(task_name, None, f"its additional files were refused: {exc}") from exc
        if key not in mounts:
            raise TaskFailed("mount", None, f"the executor has no input for mount {key!r}")
        return mounts[key]


def _read_json(path: Path, task: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TaskFailed(task, None, f"it did not write a valid {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise TaskFailed(task, None, f"{path.name} must hold a JSON object")
    return data
