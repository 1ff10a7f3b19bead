"""DockerRuntime against real engines, Docker and podman: each isolation promise is checked from
inside a container.

Engine tests skip (with the reason) when no engine answers; the image is a busybox built here,
since no registry is reachable from sites or CI.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from unittest.mock import MagicMock

import docker
import pytest
from docker.models.containers import Container

from examples.busybox import TAG as IMAGE_TAG
from services.executor.limits import TASK_HOME, ContainerLimits, GpusRefused, MiB, allowed_gpus
from services.executor.runtime import (
    TASK_LABEL,
    Bind,
    DockerRuntime,
    ImageNotAvailable,
    TaskOutcome,
    TaskRun,
    TaskStartError,
    container_name,
    default_user,
    device_requests,
    is_podman,
    parse_user,
    read_tail,
)
from services.executor.settings import SiteSettings


@pytest.fixture(scope="session")
def client(engine_client: docker.DockerClient) -> docker.DockerClient:
    return engine_client


@pytest.fixture(scope="session")
def image_digest(engine_image: str) -> str:
    return engine_image


@pytest.fixture
def runtime(client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime.for_client(client, limits=ContainerLimits(memory=256 * MiB, pids=64))


def make_task(tmp_path: Path, digest: str, command: list[str] | str, **overrides: object) -> TaskRun:
    """A string command is a shell script, which keeps the tests short."""
    fields: dict[str, object] = {
        # Unique per test so leftover checks by label cannot see another run's containers.
        "name": f"test/{uuid.uuid4().hex[:6]} run",
        "image_digest": digest,
        "command": ["sh", "-c", command] if isinstance(command, str) else command,
        "binds": [],
        "environment": {},
        "timeout_seconds": 30.0,
        "log_path": tmp_path / "logs" / "task.log",
    }
    fields.update(overrides)
    return TaskRun(**fields)  # type: ignore[arg-type]


def leftovers(client: docker.DockerClient, task: TaskRun) -> list[Container]:
    return list(client.containers.list(all=True, filters={"label": f"{TASK_LABEL}={task.name}"}))


@pytest.mark.engine
def test_output_is_written_and_owned_by_the_container_user(
    runtime: DockerRuntime, client: docker.DockerClient, image_digest: str, tmp_path: Path
) -> None:
    out = tmp_path / "site" / "predictions"  # absent: the runtime must create it
    binds, environment = [Bind(out, "/out", read_only=False)], {"GREETING": "hello"}
    task = make_task(tmp_path, image_digest, "echo $GREETING > /out/result.txt", binds=binds, environment=environment)
    outcome = runtime.run(task)
    assert outcome.ok, outcome.log_tail
    written = out / "result.txt"
    assert written.read_text() == "hello\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (runtime.uid, runtime.gid)
    assert leftovers(client, task) == []


@pytest.mark.engine
def test_an_explicit_user_gets_the_output_dir(client: docker.DockerClient, image_digest: str, tmp_path: Path) -> None:
    runtime = DockerRuntime.for_client(client, user="4321:4322")
    out = tmp_path / "out"
    outcome = runtime.run(make_task(tmp_path, image_digest, ["touch", "/out/x"], binds=[Bind(out, "/out", False)]))
    assert outcome.ok, outcome.log_tail
    assert ((out / "x").stat().st_uid, (out / "x").stat().st_gid) == (4321, 4322)


@pytest.mark.engine
def test_inputs_are_read_only(runtime: DockerRuntime, image_digest: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "case.txt").write_text("original\n")
    data.chmod(0o755)  # readable by nobody, so only the ro mount can stop the write
    script, binds = "cat /in/case.txt && echo tampered > /in/case.txt", [Bind(data, "/in", read_only=True)]
    task = make_task(tmp_path, image_digest, script, binds=binds)
    outcome = runtime.run(task)
    assert outcome.exit_code not in (0, None) and not outcome.ok
    assert "original" in outcome.log_tail  # it could read, so the failure is the write
    assert (data / "case.txt").read_text() == "original\n"


@pytest.mark.engine
def test_runs_as_non_root(runtime: DockerRuntime, image_digest: str, tmp_path: Path) -> None:
    outcome = runtime.run(make_task(tmp_path, image_digest, "id -u; id -g"))
    assert outcome.ok, outcome.log_tail
    assert outcome.log_tail.split() == [str(runtime.uid), str(runtime.gid)]
    assert runtime.uid != 0 and runtime.gid != 0


@pytest.mark.engine
def test_has_no_network_but_loopback(runtime: DockerRuntime, image_digest: str, tmp_path: Path) -> None:
    outcome = runtime.run(make_task(tmp_path, image_digest, ["cat", "/proc/net/dev"]))
    assert outcome.ok, outcome.log_tail
    interfaces = {line.split(":")[0].strip() for line in outcome.log_tail.splitlines() if ":" in line}
    assert interfaces == {"lo"}


@pytest.mark.engine
def test_root_is_read_only_tmp_is_writable_and_privileges_are_gone(
    runtime: DockerRuntime, image_digest: str, tmp_path: Path
) -> None:
    script = "touch /tmp/ok && echo tmp-ok; touch /bin/x 2>/dev/null && echo root-writable; cat /proc/self/status"
    task = make_task(tmp_path, image_digest, script)
    runtime.run(task)
    log = task.log_path.read_text()  # the status dump is longer than the tail
    assert "tmp-ok" in log and "root-writable" not in log
    status = dict(line.split(":", 1) for line in log.splitlines() if ":" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"


@pytest.mark.engine
def test_engine_side_configuration_while_running(
    runtime: DockerRuntime, client: docker.DockerClient, image_digest: str, tmp_path: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    binds = [Bind(data, "/in", True), Bind(out, "/out", False)]
    task = make_task(tmp_path, image_digest, ["sleep", "3"], shm_size="64m", binds=binds)
    outcomes: list[TaskOutcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(runtime.run(task)))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not (running := leftovers(client, task)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running, "task container never appeared"
        attrs = client.api.inspect_container(running[0].id)
    finally:
        worker.join()
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True and host["Privileged"] is False
    # podman lists the capabilities it dropped (all it would grant) instead of "ALL"; the
    # capabilities test above reads the empty sets from inside.
    assert host["CapDrop"] == ["ALL"] or (is_podman(client) and "SYS_CHROOT" in host["CapDrop"])
    assert not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 256 * 2**20 and host["PidsLimit"] == 64
    assert host["ShmSize"] == 64 * 2**20 and not host.get("DeviceRequests")
    # podman's --read-only also mounts tmpfs at /run and /var/tmp (its read_only_tmpfs, which its
    # Docker-compatible API cannot turn off); they count in the task's memory like /tmp.
    extra = {"/run", "/var/tmp"} if is_podman(client) else set()
    assert set(host["Tmpfs"]) == {"/tmp", TASK_HOME, *extra}
    assert not host.get("Binds") or is_podman(client)  # podman reports the mounts as Binds as well
    mounts = {(m["Destination"], not m["RW"]) for m in attrs["Mounts"]}
    assert mounts == {("/in", True), ("/out", False)}
    assert attrs["Config"]["User"] == runtime.user and attrs["Image"] == image_digest
    assert attrs["Config"]["Labels"][TASK_LABEL] == task.name
    assert outcomes and outcomes[0].ok and leftovers(client, task) == []


def mounts_seen(log: str) -> dict[str, tuple[str, int]]:
    """Mount point -> (options, size in KiB) from a task's ``cat /proc/mounts; busybox df -k``."""
    rows = [line.split() for line in log.splitlines()]
    options = {row[1]: row[3] for row in rows if len(row) == 6 and row[4:] == ["0", "0"]}
    sizes = {row[5]: int(row[1]) for row in rows if len(row) == 6 and row[4].endswith("%")}
    return {path: (options[path], sizes.get(path, 0)) for path in options}


@pytest.mark.engine
def test_the_sites_container_limits_reach_the_task(
    client: docker.DockerClient, image_digest: str, tmp_path: Path
) -> None:
    limits = ContainerLimits(tmp_size=8 * MiB, home_size=4 * MiB, shm_size=16 * MiB, pids=32)
    runtime = DockerRuntime.for_client(client, limits=limits)
    script = f"touch $HOME/cache && echo home=$HOME; cat /proc/mounts; busybox df -k / /tmp {TASK_HOME} /dev/shm"
    task = make_task(tmp_path, image_digest, script)
    assert runtime.run(task).ok, task.log_path.read_text()
    log = task.log_path.read_text()
    seen = mounts_seen(log)
    assert f"home={TASK_HOME}" in log
    assert seen["/tmp"][1] == 8 * 1024 and seen[TASK_HOME][1] == 4 * 1024 and seen["/dev/shm"][1] == 16 * 1024
    assert seen["/"][0].split(",")[0] == "ro"
    writable = DockerRuntime.for_client(client, limits=ContainerLimits(read_only_root=False))
    task = make_task(tmp_path, image_digest, "cat /proc/mounts")
    assert writable.run(task).ok
    assert mounts_seen(task.log_path.read_text())["/"][0].split(",")[0] == "rw"


@pytest.mark.engine
def test_timeout_kills_and_removes_the_container(
    runtime: DockerRuntime, client: docker.DockerClient, image_digest: str, tmp_path: Path
) -> None:
    task = make_task(tmp_path, image_digest, "echo started; sleep 30", timeout_seconds=1.0)
    outcome = runtime.run(task)
    assert outcome.timed_out and outcome.exit_code is None and not outcome.ok
    assert outcome.duration_seconds < 10
    assert "started" in task.log_path.read_text()
    assert leftovers(client, task) == []


@pytest.mark.engine
def test_full_log_on_disk_and_a_bounded_tail(runtime: DockerRuntime, image_digest: str, tmp_path: Path) -> None:
    task = make_task(tmp_path, image_digest, ["seq", "1", "10000"], log_path=tmp_path / "a" / "b" / "seq.log")
    outcome = runtime.run(task)
    assert outcome.ok
    assert task.log_path.read_text().splitlines() == [str(i) for i in range(1, 10001)]
    tail = outcome.log_tail.splitlines()
    assert tail == [str(i) for i in range(9981, 10001)]
    assert len(outcome.log_tail.encode()) <= 4096


@pytest.mark.engine
def test_start_failure_leaves_no_container(
    runtime: DockerRuntime, client: docker.DockerClient, image_digest: str, tmp_path: Path
) -> None:
    task = make_task(tmp_path, image_digest, ["/no/such/binary"])
    with pytest.raises(TaskStartError, match="no/such/binary"):
        runtime.run(task)
    assert leftovers(client, task) == []
    assert "failed to start" in task.log_path.read_text()


@pytest.mark.engine
def test_unknown_digest_is_reported_with_a_remedy(runtime: DockerRuntime) -> None:
    digest = "sha256:" + "0" * 64
    with pytest.raises(ImageNotAvailable) as caught:
        runtime.ensure_image(digest)
    assert digest in str(caught.value) and "docker load" in str(caught.value)


@pytest.mark.engine
def test_tags_are_refused(runtime: DockerRuntime, image_digest: str) -> None:
    runtime.ensure_image(image_digest)
    for reference in (IMAGE_TAG, image_digest[:19], image_digest.removeprefix("sha256:")):
        with pytest.raises(ValueError, match="not an image ID"):
            runtime.ensure_image(reference)


@pytest.mark.engine
def test_overhead_against_the_engines_cli(
    runtime: DockerRuntime, client: docker.DockerClient, engine_url: str, image_digest: str, tmp_path: Path
) -> None:
    if is_podman(client):
        # The docker CLI cannot attach to podman 4.3 ("unable to upgrade to tcp"); podman's own can,
        # given the same open-file and process limits the runtime asks for.
        ulimits = [
            f"--ulimit={u['Name']}={u['Soft']}:{u['Hard']}"
            for u in runtime._create_kwargs(make_task(tmp_path, image_digest, ["true"]))["ulimits"]
            if u["Name"] in ("nofile", "nproc")
        ]
        cli, argv = shutil.which("podman"), ["--remote", "--url", engine_url, "run", "--rm", *ulimits]
    else:
        cli, argv = shutil.which("docker"), ["run", "--rm"]
    if cli is None:
        pytest.skip("the engine's CLI is not installed; nothing to compare against")

    def timed(action: Callable[[], object]) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    task = make_task(tmp_path, image_digest, ["true"])
    argv = [cli, *argv, "--network", "none", IMAGE_TAG, "true"]
    cli_env = {**os.environ, "DOCKER_HOST": engine_url}
    ours = [timed(lambda: runtime.run(task)) for _ in range(10)]
    bare = [timed(lambda: subprocess.run(argv, check=True, capture_output=True, env=cli_env)) for _ in range(10)]
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    print(
        f"\n{runtime.engine_name}: DockerRuntime.run median {ours_median * 1000:.0f} ms; `{Path(cli).name} run --rm` "
        f"median {bare_median * 1000:.0f} ms; overhead {(ours_median - bare_median) * 1000:+.0f} ms"
    )
    assert ours_median < 3 * bare_median + 1.0


# Pure helpers: no engine needed.


def test_parse_user() -> None:
    assert parse_user("1000:1001") == (1000, 1001)
    assert parse_user("1000") == (1000, 1000)
    for bad in ("root", "0", "0:0", "1000:0", "nobody:nogroup"):
        with pytest.raises(ValueError):
            parse_user(bad)


def test_default_user_is_never_root() -> None:
    expected = (65534, 65534) if os.getuid() == 0 or os.getgid() == 0 else (os.getuid(), os.getgid())
    assert default_user() == expected


def test_container_name_is_sanitised() -> None:
    name = container_name("infer b1/m2 ✓ d3")
    assert name.startswith("medperf-infer-b1-m2-d3-") and all(c.isalnum() or c in "_.-" for c in name)
    assert container_name("///").startswith("medperf-task-")


def test_gpu_requests_only_when_asked(tmp_path: Path) -> None:
    assert device_requests(None) == []
    assert device_requests("all")[0]["Count"] == -1
    assert device_requests("2")[0]["Count"] == 2
    assert device_requests("device=0,1")[0]["DeviceIDs"] == ["0", "1"]
    runtime = DockerRuntime(MagicMock(), user="1000")
    task = make_task(tmp_path, "sha256:" + "a" * 64, ["true"])
    assert "device_requests" not in runtime._create_kwargs(task)
    with_gpu = runtime._create_kwargs(make_task(tmp_path, task.image_digest, ["true"], gpus="all"))
    assert with_gpu["device_requests"][0]["Count"] == -1


def test_read_tail_drops_a_cut_first_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("x" * 5000 + "\nlast\n")
    assert read_tail(log) == "last"
    log.write_text("\n".join(str(i) for i in range(50)))
    assert read_tail(log).splitlines() == [str(i) for i in range(30, 50)]


def test_a_task_gets_only_the_gpus_the_site_gives() -> None:
    assert allowed_gpus(None, "none") is None and allowed_gpus("all", "all") == "all"
    assert allowed_gpus("2", "all") == "2" and allowed_gpus(1, "0,3") == "device=0"
    assert allowed_gpus("all", "0,3") == "device=0,3" and allowed_gpus("device=3", "0,3") == "device=3"
    for asked, site in (("all", "none"), ("3", "0,1"), ("device=2", "0,1"), ("1,2", "1")):
        with pytest.raises(GpusRefused, match="MEDPERF_SITE_TASK_GPUS"):
            allowed_gpus(asked, site)


def test_site_settings_become_the_runtimes_container_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "NAME": "a",
        "OWNER": "o",
        "TASK_MEMORY": "1GiB",
        "TASK_PIDS": "99",
        "TASK_GPUS": "0,1",
    }.items():
        monkeypatch.setenv(f"MEDPERF_SITE_{name}", value)
    monkeypatch.setenv("MEDPERF_SITE_READ_ONLY_ROOT", "false")
    limits = SiteSettings().container_limits()
    assert (limits.memory, limits.pids, limits.gpus, limits.read_only_root) == (2**30, 99, "0,1", False)
    kwargs = DockerRuntime(MagicMock(), user="1000", limits=limits)._create_kwargs(
        make_task(tmp_path, "sha256:" + "a" * 64, ["true"], gpus="all")
    )
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 2**30 and kwargs["read_only"] is False
    assert kwargs["device_requests"][0]["DeviceIDs"] == ["0", "1"] and kwargs["pids_limit"] == 99
