"""Per-task bounds on real engines, Docker and podman (busybox tasks): CPU, memory, output size, the
site's timeout over a container's own, and results/statistics files read with a cap."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
from figures import record
from sites import model, task

from services.executor import domain
from services.executor.assets import AssetCache
from services.executor.limits import ContainerLimits, MiB, TaskLimits
from services.executor.outputs import OutputWatcher
from services.executor.runtime import TASK_LABEL, Bind, DockerRuntime, TaskOutcome, TaskRun
from services.executor.workflow import PreparedData, TaskFailed, Workflow, read_report
from shared.containers import ContainerSpec

TEST_LABEL = "medperf.test"


@pytest.fixture
def runtime(engine_client: docker.DockerClient) -> DockerRuntime:
    limits = ContainerLimits(memory=256 * MiB, pids=64)
    return DockerRuntime.for_client(engine_client, limits=limits, output_check_seconds=0.1)


@pytest.fixture
def busybox_image(engine_image: str) -> str:
    return engine_image


def make_task(tmp_path: Path, digest: str, script: str, **overrides: Any) -> TaskRun:
    fields: dict[str, Any] = {
        "name": f"limits-{uuid.uuid4().hex[:6]}",
        "image_digest": digest,
        "command": ["sh", "-c", script],
        "binds": [],
        "environment": {},
        "timeout_seconds": 60.0,
        "log_path": tmp_path / "logs" / "task.log",
    }
    return TaskRun(**(fields | overrides))


def run_inspected(runtime: DockerRuntime, task: TaskRun) -> tuple[TaskOutcome, dict]:
    """Run ``task``, reading the engine's view of its container while it runs."""
    outcomes: list[TaskOutcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(runtime.run(task)))
    worker.start()
    try:
        deadline, found = time.monotonic() + 10, []
        while not found and time.monotonic() < deadline:
            found = runtime.client.containers.list(filters={"label": f"{TASK_LABEL}={task.name}"})
            time.sleep(0.05)
        assert found, "the task's container never appeared"
        attrs = runtime.client.api.inspect_container(found[0].id)
    finally:
        worker.join()
    return outcomes[0], attrs


# --- CPU ----------------------------------------------------------------------------------------


@pytest.mark.engine
def test_a_busy_task_gets_no_more_than_its_cpu_limit(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    usage = "/sys/fs/cgroup/cpuacct/cpuacct.usage"
    script = (
        f"a=$(cat {usage}); (while :; do :; done) & (while :; do :; done) & sleep 3; b=$(cat {usage}); echo used $a $b"
    )
    outcome, attrs = run_inspected(runtime, make_task(tmp_path, busybox_image, script, cpus=0.5))
    assert outcome.ok, outcome.log_tail
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    _, before, after = outcome.log_tail.split()
    cores = (int(after) - int(before)) / 1e9 / 3
    # Two busy loops would take two cores; the engine holds them to half of one (CFS quota).
    assert cores <= 0.5 * 1.15, cores
    record("task limits", cpu_limit=0.5, cpu_used_by_two_busy_loops=round(cores, 3))


@pytest.mark.engine
def test_the_default_cpu_limit_is_a_share_of_the_engines_cores(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    outcome, attrs = run_inspected(runtime, make_task(tmp_path, busybox_image, "sleep 1"))
    cores = runtime.client.info()["NCPU"]
    assert outcome.ok
    assert attrs["HostConfig"]["NanoCpus"] == int(max(1.0, 0.75 * cores) * 1e9)


@pytest.mark.engine
def test_a_task_dumps_no_core(runtime: DockerRuntime, busybox_image: str, tmp_path: Path) -> None:
    outcome, attrs = run_inspected(runtime, make_task(tmp_path, busybox_image, "ulimit -c; sleep 1"))
    assert outcome.ok and outcome.log_tail.split()[0] == "0"
    core = [u for u in attrs["HostConfig"]["Ulimits"] if u["Name"] in ("core", "RLIMIT_CORE")]  # podman's name
    assert [(u["Soft"], u["Hard"]) for u in core] == [(0, 0)]


# --- memory -------------------------------------------------------------------------------------


@pytest.mark.engine
async def test_a_task_killed_for_memory_is_the_models_fault_naming_the_limit(
    engine_client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> None:
    runtime = DockerRuntime.for_client(engine_client, limits=ContainerLimits(memory=32 * MiB))
    # A string that doubles until the kernel's OOM killer stops it at the cgroup's limit.
    spec = spec_of(busybox_image, "echo started; busybox awk 'BEGIN { s = \"x\"; while (1) s = s s }'")
    failed = await run_infer(runtime, workflow_of(runtime, tmp_path), spec, tmp_path)
    assert domain.fault_of_task(failed.task) == "model" and failed.fault == "model"
    assert "memory limit of 32.0 MiB" in str(failed) and "MEDPERF_SITE_TASK_MEMORY" in str(failed)
    assert "started" in failed.log_tail


@pytest.mark.engine
def test_a_task_exiting_137_by_itself_is_not_reported_as_killed_for_memory(
    engine_client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> None:
    runtime = DockerRuntime.for_client(engine_client, limits=ContainerLimits(memory=32 * MiB))
    outcome = runtime.run(make_task(tmp_path, busybox_image, "exit 137"))  # the exit code of a kill, by hand
    assert outcome.exit_code == 137
    if runtime.engine_name == "Docker":
        assert outcome.exceeded == ""
    else:  # podman does not report OOM kills here: a SIGKILL nobody sent is taken for one, said to be likely
        assert "most likely" in outcome.exceeded


# --- output size --------------------------------------------------------------------------------


def writes(files: int, then: str = "sleep 30") -> str:
    """A task writing ``files`` files of 1 MiB to /out as fast as it can, then ``then``."""
    return f"i=0; while [ $i -lt {files} ]; do busybox head -c 1048576 /dev/zero > /out/f$i; i=$((i+1)); done; {then}"


@pytest.mark.engine
def test_a_task_flooding_its_outputs_is_stopped(runtime: DockerRuntime, busybox_image: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    task = make_task(tmp_path, busybox_image, writes(400), binds=[Bind(out, "/out", False)], output_limit=8 * MiB)
    started = time.monotonic()

    outcome = runtime.run(task)

    assert not outcome.ok and not outcome.timed_out
    assert "MEDPERF_SITE_OUTPUT_MAX_BYTES" in outcome.exceeded
    assert outcome.output_bytes > 8 * MiB
    assert list(out.iterdir()) == []  # what it wrote over the limit does not stay on the site's disk
    record(
        "task limits",
        output_limit=8 * MiB,
        output_at_stop_polling_every_0_1s=outcome.output_bytes,
        output_overshoot=outcome.output_bytes - 8 * MiB,
        output_stopped_after_s=round(time.monotonic() - started, 2),
    )


@pytest.mark.engine
def test_one_large_file_is_cut_by_the_engine_at_the_limit(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    """The engine's file-size ulimit stops a single file at the limit, between two polls."""
    out = tmp_path / "out"
    script = "busybox head -c 104857600 /dev/zero > /out/big; echo exit $?"
    outcome = runtime.run(
        make_task(tmp_path, busybox_image, script, binds=[Bind(out, "/out", False)], output_limit=MiB)
    )
    assert "MEDPERF_SITE_OUTPUT_MAX_BYTES" in outcome.exceeded and "exit 153" in outcome.log_tail  # SIGXFSZ
    assert MiB < outcome.output_bytes <= MiB + 4096  # one byte over, in whole blocks of the disk
    record("task limits", one_file_cut_by_ulimit_at=outcome.output_bytes)


@pytest.mark.engine
def test_outputs_over_the_limit_at_exit_fail_the_task(
    engine_client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> None:
    """A task that writes and exits between two polls is caught by the check after it exits."""
    engine = DockerRuntime.for_client(engine_client, output_check_seconds=60)
    out = tmp_path / "out"
    binds = [Bind(out, "/out", False)]
    outcome = engine.run(make_task(tmp_path, busybox_image, writes(12, "true"), binds=binds, output_limit=8 * MiB))
    assert outcome.exit_code == 0 and not outcome.ok
    assert "MEDPERF_SITE_OUTPUT_MAX_BYTES" in outcome.exceeded and outcome.output_bytes == 12 * MiB


def test_watching_ten_thousand_outputs_costs_little(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for shard in range(100):
        directory = out / f"s{shard:03}"
        directory.mkdir(parents=True)
        for i in range(100):
            (directory / f"case{i:03}.npy").write_bytes(b"x" * 100)
    stopped: list[int] = []
    watcher = OutputWatcher([out], limit=1024 * MiB, on_exceeded=stopped.append, interval=0.01)
    started = time.monotonic()
    with watcher:
        time.sleep(3)
    elapsed = time.monotonic() - started
    assert stopped == [] and watcher.polls >= 2
    share = watcher.busy_seconds / elapsed
    assert share < 0.1, share  # the poll interval stretches with the cost of one walk
    record(
        "task limits",
        watcher_walk_of_10000_files_ms=round(1000 * watcher.busy_seconds / watcher.polls, 1),
        watcher_share_of_a_core=round(share, 3),
    )


# --- time -----------------------------------------------------------------------------------------


def spec_of(image: str, script: str, timeout_seconds: int | None = None) -> ContainerSpec:
    spec = model(image, script)
    if timeout_seconds is not None:
        spec["tasks"]["infer"]["timeout_seconds"] = timeout_seconds
    return ContainerSpec.model_validate(spec)


def workflow_of(runtime: DockerRuntime, tmp_path: Path, task_timeout: float = 60, **limits: Any) -> Workflow:
    return Workflow(runtime, AssetCache(tmp_path / "cache", []), tmp_path, task_timeout, limits=TaskLimits(**limits))


async def run_infer(runtime: DockerRuntime, flow: Workflow, spec: ContainerSpec, tmp_path: Path) -> TaskFailed:
    """Run ``spec``'s infer task, expecting it to fail within 30 s; its containers are removed either way."""
    data, label = tmp_path / "data", {TEST_LABEL: uuid.uuid4().hex}
    data.mkdir(exist_ok=True)
    try:
        with pytest.raises(TaskFailed) as caught:
            mounts = {"data_path": data, "output_path": tmp_path / "run" / "out"}
            await asyncio.wait_for(flow.run_task(spec, "infer", tmp_path / "run", mounts, labels=label), 30)
    finally:
        await asyncio.to_thread(runtime.remove_labelled, label)
    return caught.value


@pytest.mark.engine
async def test_the_sites_timeout_caps_what_a_container_asks_for(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    spec = spec_of(busybox_image, "echo started; sleep 100000", timeout_seconds=7 * 24 * 3600)
    started = time.monotonic()
    failed = await run_infer(runtime, workflow_of(runtime, tmp_path, task_timeout=2), spec, tmp_path)
    assert time.monotonic() - started < 15
    assert "timed out after 2 s" in str(failed) and "MEDPERF_SITE_TASK_TIMEOUT" in str(failed)
    assert "604800" in str(failed)  # what it asked for, so its owner sees why it was cut short
    assert domain.fault_of_task(failed.task) == "model"


@pytest.mark.engine
async def test_a_container_timeout_below_the_sites_is_the_one_named(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    spec = spec_of(busybox_image, "sleep 100000", timeout_seconds=1)
    failed = await run_infer(runtime, workflow_of(runtime, tmp_path, task_timeout=60), spec, tmp_path)
    assert "timed out after 1 s" in str(failed) and "timeout_seconds" in str(failed)
    assert "MEDPERF_SITE_TASK_TIMEOUT" not in str(failed)


# --- results and statistics files ---------------------------------------------------------------


def test_an_oversized_results_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    with results.open("wb") as handle:
        handle.truncate(256 * MiB)  # sparse: costs the test no disk
    tracemalloc.start()
    try:
        with pytest.raises(TaskFailed) as caught:
            read_report(results, "evaluate", 4 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "MEDPERF_SITE_RESULTS_MAX_BYTES" in str(caught.value) and "256.0 MiB" in str(caught.value)
    assert peak < 1 * MiB, peak
    record("task limits", results_file_of_256_MiB_peak_memory_bytes=peak)


def test_a_deeply_nested_results_file_is_the_containers_fault(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TaskFailed, match=r"valid results\.json"):
        read_report(results, "evaluate", 4 * MiB)


def metrics_spec(image: str, script: str) -> ContainerSpec:
    outputs = {"output_path": "/out"}
    evaluate = task(script, {"predictions": "/p", "labels": "/l"}, outputs)
    return ContainerSpec.model_validate({"image": "busybox", "image_digest": image, "tasks": {"evaluate": evaluate}})


async def score_with(runtime: DockerRuntime, tmp_path: Path, metrics: ContainerSpec, **limits: Any) -> Any:
    data = tmp_path / "prepared"
    for part in ("data", "labels"):
        (data / part).mkdir(parents=True, exist_ok=True)
    prepared = PreparedData(data, "in", "out", {})
    flow = workflow_of(runtime, tmp_path, **limits)
    return await flow.score(spec_of(metrics.image_digest, "echo 1 > /out/p1"), metrics, prepared, tmp_path / "run")


@pytest.mark.engine
async def test_a_large_results_file_fails_the_metrics_container(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    metrics = metrics_spec(busybox_image, "busybox head -c 8388608 /dev/zero > /out/results.json")
    with pytest.raises(TaskFailed) as caught:
        await score_with(runtime, tmp_path, metrics, results_bytes=1 * MiB)
    assert domain.fault_of_task(caught.value.task) == "metrics"
    assert "MEDPERF_SITE_RESULTS_MAX_BYTES" in str(caught.value)


@pytest.mark.engine
async def test_a_results_link_to_a_file_of_the_host_is_refused(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    """The agent reads results.json on the host, where a link the container wrote would lead
    anywhere: to another model's results, or the site's own files."""
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"auc": 0.42}))
    metrics = metrics_spec(busybox_image, f"busybox ln -s {elsewhere} /out/results.json")
    with pytest.raises(TaskFailed, match="regular file") as caught:
        await score_with(runtime, tmp_path, metrics)
    assert domain.fault_of_task(caught.value.task) == "metrics"


@pytest.mark.engine
async def test_a_large_statistics_file_fails_the_preparation(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path
) -> None:
    preparator = ContainerSpec.model_validate(
        {
            "image": "busybox",
            "image_digest": busybox_image,
            "tasks": {
                "prepare": task("true", {"data_path": "/in"}, {"output_path": "/out", "output_labels_path": "/l"}),
                "sanity_check": task("true"),
                "statistics": task(
                    "busybox head -c 2097152 /dev/zero > /out/statistics.json", {}, {"output_path": "/out"}
                ),
            },
        }
    )
    raw = tmp_path / "raw"
    raw.mkdir()
    flow = workflow_of(runtime, tmp_path, results_bytes=64 * 1024)
    with pytest.raises(TaskFailed) as caught:
        await flow.prepare(preparator, raw, raw, tmp_path / "prepared")
    assert caught.value.task == "statistics" and domain.fault_of_task("statistics") == "data"
    assert "MEDPERF_SITE_RESULTS_MAX_BYTES" in str(caught.value)
    assert not os.path.exists(tmp_path / "prepared")
