"""Container runtime adapter: runs one task of a registered container in an isolated container.

The executor hands a site's data to third-party code, so every run is locked down the same way:
no network, read-only root filesystem, no capabilities, no privilege escalation, bounded memory,
processes and CPUs, a non-root user, inputs mounted read-only, bounded outputs, and a hard time
limit. The image is addressed by its ID, never a tag, so what runs is exactly what was registered.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from services.executor.limits import DEFAULT_CPU_SHARE
from services.executor.outputs import OutputWatcher, after_exit
from shared.containers import IMAGE_DIGEST

TASK_LABEL = "org.medperf.task"
TAIL_LINES = 20
TAIL_BYTES = 4096
# Running as root must not leak into the container; "nobody" is the conventional stand-in.
NOBODY = (65534, 65534)
# A task's log is kept up to this size, on the engine and in the site's work directory: a model
# that floods its output must not fill the disk its site's other work needs.
LOG_LIMIT = 8 * 2**20


@dataclass(frozen=True)
class Bind:
    host_path: Path
    container_path: str
    read_only: bool


@dataclass(frozen=True)
class TaskRun:
    name: str
    image_digest: str
    #: None: the image's own CMD (MedPerf's run_args.command is optional).
    command: list[str] | None
    binds: list[Bind]
    environment: dict[str, str]
    timeout_seconds: float
    log_path: Path
    gpus: str | None = None
    shm_size: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: CPUs the task may use; None: ``DEFAULT_CPU_SHARE`` of the engine's.
    cpus: float | None = None
    #: Bytes its writable mounts may hold; None: no limit.
    output_limit: int | None = None
    #: Replaces the image's ENTRYPOINT; None: the image's own.
    entrypoint: list[str] | None = None


@dataclass(frozen=True)
class TaskOutcome:
    exit_code: int | None
    timed_out: bool
    duration_seconds: float
    log_tail: str
    #: Which site limit the task went over (it was stopped, or failed at exit), for people; else "".
    exceeded: str = ""
    #: What its writable mounts held when it ended (measured only under an output limit).
    output_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0 and not self.exceeded


class EngineUnavailable(RuntimeError):
    """No container engine answers; nothing can run on this site until one does."""


class ImageNotAvailable(LookupError):
    """The registered image is not on this host; the site must load it before running."""


class TaskStartError(RuntimeError):
    """The engine accepted the container but could not start it (bad command, bad mount, ...)."""


class ContainerRuntime(Protocol):
    def ensure_image(self, image_digest: str) -> None: ...

    def run(self, task: TaskRun) -> TaskOutcome: ...

    def load_image(self, archive: Path) -> None:
        """Load a ``docker save`` tarball into the engine."""
        ...

    def remove_labelled(self, labels: dict[str, str]) -> int:
        """Stop and remove every container carrying all of ``labels``; returns how many."""
        ...


def engine_available() -> bool:
    try:
        client = docker.from_env(timeout=3)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, requests.RequestException):
        return False
    finally:
        client.close()


def parse_user(user: str) -> tuple[int, int]:
    """Numeric ``uid[:gid]``: names would be resolved inside the image, so the host could not chown."""
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    if not match:
        raise ValueError(f"user must be numeric 'uid' or 'uid:gid', got {user!r}")
    uid = int(match[1])
    # Docker would pick gid 0 for a bare uid without a passwd entry; pin it to the uid instead.
    gid = int(match[2]) if match[2] is not None else uid
    if uid == 0 or gid == 0:
        raise ValueError("tasks never run as root (uid or gid 0)")
    return uid, gid


def default_user() -> tuple[int, int]:
    uid, gid = os.getuid(), os.getgid()
    return NOBODY if uid == 0 or gid == 0 else (uid, gid)


def container_name(task_name: str) -> str:
    # Docker accepts [a-zA-Z0-9][a-zA-Z0-9_.-]*; the suffix keeps retries of one task from colliding.
    safe = re.sub(r"[^a-zA-Z0-9_.-]+", "-", task_name).strip("-._")[:60] or "task"
    return f"medperf-{safe}-{uuid.uuid4().hex[:8]}"


def device_requests(gpus: str | None) -> list[DeviceRequest]:
    """Mirror ``docker run --gpus``: 'all', a count, or 'device=0,1' / '0,1'."""
    if not gpus:
        return []
    spec = gpus.strip().strip('"')
    if spec == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if spec.isdigit():
        return [DeviceRequest(count=int(spec), capabilities=[["gpu"]])]
    ids = [part.strip() for part in spec.removeprefix("device=").split(",") if part.strip()]
    if not ids:
        raise ValueError(f"cannot read gpus={gpus!r}; use 'all', a count, or 'device=0,1'")
    return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def read_tail(path: Path, max_lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - max_bytes))
        data = handle.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut by the byte window; a fragment misleads
    return "\n".join(lines[-max_lines:])


class DockerRuntime:
    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        user: str | None = None,
        memory_limit: str = "4g",
        pids_limit: int = 512,
        log_limit: int = LOG_LIMIT,
        output_check_seconds: float = 1.0,
    ) -> None:
        """``output_check_seconds``: how often a task's outputs are measured against its limit."""
        self.client = client if client is not None else _connect()
        self.uid, self.gid = parse_user(user) if user is not None else default_user()
        self.memory_limit = memory_limit
        self.pids_limit = pids_limit
        self.log_limit = log_limit
        self.output_check_seconds = output_check_seconds
        self._engine_cpus: int | None = None

    @classmethod
    def from_env(cls) -> DockerRuntime:
        return cls(_connect())

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"

    def ensure_image(self, image_digest: str) -> None:
        if not IMAGE_DIGEST.match(image_digest):
            raise ValueError(
                f"{image_digest!r} is not an image ID; tasks run only by 'sha256:<64 hex>' so a re-pushed "
                "tag cannot swap the code that was registered"
            )
        try:
            image = self.client.images.get(image_digest)
        except ImageNotFound:
            image = None
        if image is None or image.id != image_digest:
            raise ImageNotAvailable(
                f"Image {image_digest} is not present on this host. Load it before running, e.g. "
                "`docker load -i IMAGE.tar` or `docker pull NAME@sha256:...` / `docker build`, then check "
                f"`docker image inspect {image_digest}`."
            )

    def run(self, task: TaskRun) -> TaskOutcome:
        self.ensure_image(task.image_digest)
        self._prepare_outputs(task.binds)
        task.log_path.parent.mkdir(parents=True, exist_ok=True)
        container: Container | None = None
        try:
            container = self.client.containers.create(task.image_digest, **self._create_kwargs(task))
            started = time.monotonic()
            try:
                container.start()
            except APIError as exc:
                task.log_path.write_text(f"container failed to start: {exc.explanation or exc}\n")
                raise TaskStartError(f"task {task.name} could not start: {exc.explanation or exc}") from exc
            with self._watch_outputs(task, container) as watcher:
                exit_code, timed_out = self._wait(container, task.timeout_seconds)
            duration = time.monotonic() - started
            self._save_logs(container, task.log_path, self.log_limit)
            exceeded, used = after_exit(_outputs(task), task.output_limit, watcher)
            return TaskOutcome(exit_code, timed_out, duration, read_tail(task.log_path), exceeded, used)
        finally:
            if container is not None:
                self._remove(container)

    def _create_kwargs(self, task: TaskRun) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "command": list(task.command) if task.command is not None else None,
            "name": container_name(task.name),
            "labels": {**task.labels, TASK_LABEL: task.name},
            "environment": dict(task.environment),
            "user": self.user,
            "network_mode": "none",
            "read_only": True,
            # Many tools insist on a writable /tmp; a tmpfs gives them one that leaves no trace.
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g,mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "mem_limit": self.memory_limit,
            # Equal to mem_limit: swap would let a task exceed its memory budget, only slower.
            "memswap_limit": self.memory_limit,
            "pids_limit": self.pids_limit,
            "nano_cpus": self._nano_cpus(task.cpus),
            # One file of at most the limit: the engine drops older output instead of growing without bound.
            "log_config": LogConfig(
                type=LogConfig.types.JSON, config={"max-size": str(self.log_limit), "max-file": "1"}
            ),
            "mounts": [
                Mount(target=b.container_path, source=str(b.host_path.resolve()), type="bind", read_only=b.read_only)
                for b in task.binds
            ],
            "detach": True,
        }
        if task.entrypoint is not None:
            kwargs["entrypoint"] = list(task.entrypoint)
        if task.gpus:
            kwargs["device_requests"] = device_requests(task.gpus)
        if task.shm_size:
            kwargs["shm_size"] = task.shm_size
        # No core dumps: a crashing task's memory image would land on the host, outside every limit.
        kwargs["ulimits"] = [Ulimit(name="core", soft=0, hard=0)]
        if task.output_limit is not None:
            # No single file may pass the limit, stopped by the kernel as it is written; one byte
            # over it, so that the check after exit sees the limit was reached and names it.
            fsize = task.output_limit + 1
            kwargs["ulimits"].append(Ulimit(name="fsize", soft=fsize, hard=fsize))
        return kwargs

    def _nano_cpus(self, cpus: float | None) -> int:
        if self._engine_cpus is None:
            self._engine_cpus = int(self.client.info()["NCPU"])
        wanted = cpus if cpus is not None else max(1.0, DEFAULT_CPU_SHARE * self._engine_cpus)
        # The engine refuses a limit above the CPUs it has; asking for more means all of them.
        return int(min(wanted, self._engine_cpus) * 1e9)

    def _watch_outputs(self, task: TaskRun, container: Container) -> contextlib.AbstractContextManager[Any]:
        """While the task runs, stop it once its writable mounts hold more than its limit."""
        if task.output_limit is None:
            return contextlib.nullcontext()

        def stop(_: int) -> None:
            with contextlib.suppress(APIError, requests.RequestException):
                self.client.api.kill(container.id)  # its wait returns at once; the outcome says why

        return OutputWatcher(_outputs(task), task.output_limit, stop, self.output_check_seconds)

    def _prepare_outputs(self, binds: list[Bind]) -> None:
        """Hand output dirs to the container user up front, so the container never needs root."""
        running_as_root = os.geteuid() == 0
        for bind in binds:
            if bind.read_only:
                continue
            if not bind.host_path.exists():
                bind.host_path.mkdir(parents=True)
            if running_as_root:
                for path in _walk(bind.host_path):
                    os.chown(path, self.uid, self.gid, follow_symlinks=False)
            elif self.uid != os.getuid() and bind.host_path.is_dir():
                # Cannot chown without root; opening the dir is the only way a foreign uid can write.
                bind.host_path.chmod(0o777)

    def _wait(self, container: Container, timeout: float) -> tuple[int | None, bool]:
        asked = time.monotonic()
        try:
            result = container.wait(timeout=timeout)
        except requests.RequestException:
            # Over a unix socket a read timeout surfaces as ConnectionError, indistinguishable by
            # type from a dead engine; only the elapsed time tells the two apart.
            if time.monotonic() - asked < timeout * 0.95:
                raise
            try:
                container.kill()
                container.wait(timeout=30)  # so the log stream is complete before it is read
            except APIError:
                pass  # it exited between the timeout and the kill; still over its limit
            return None, True
        return int(result.get("StatusCode", -1)), False

    @staticmethod
    def _save_logs(container: Container, log_path: Path, limit: int = LOG_LIMIT) -> None:
        """The log up to ``limit`` bytes, then a note of what was dropped and the last bytes, so the
        tail a failure report quotes is still the end of the output."""
        written, dropped, tail = 0, 0, b""
        with log_path.open("wb") as handle:
            try:
                for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=False):
                    keep = chunk[: max(0, limit - written)]
                    handle.write(keep)
                    written += len(keep)
                    if len(keep) < len(chunk):
                        dropped += len(chunk) - len(keep)
                        tail = (tail + chunk[len(keep) :])[-TAIL_BYTES:]
            except APIError as exc:
                # A log driver without read support must not turn a finished task into an error.
                handle.write(f"\n[executor] could not read container logs: {exc.explanation or exc}\n".encode())
            if dropped:
                handle.write(f"\n[executor] log cut at {limit} bytes; {dropped} bytes dropped; the end:\n".encode())
                handle.write(tail)

    def load_image(self, archive: Path) -> None:
        with archive.open("rb") as tarball:  # streamed: image archives can be many gigabytes
            for line in self.client.api.load_image(tarball):
                if isinstance(line, dict) and line.get("error"):
                    raise ImageNotAvailable(f"the image archive {archive.name} could not be loaded: {line['error']}")

    def remove_labelled(self, labels: dict[str, str]) -> int:
        found = self.client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        for container in found:
            self._remove(container)
        return len(found)

    @staticmethod
    def _remove(container: Container) -> None:
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)


def _connect() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except (DockerException, requests.RequestException) as exc:
        host = os.environ.get("DOCKER_HOST", "the default socket unix:///var/run/docker.sock")
        raise EngineUnavailable(
            f"No Docker engine answers at {host} ({exc}). Start Docker (e.g. `systemctl start docker`) "
            "or set DOCKER_HOST to the engine's socket, then retry."
        ) from exc
    return client


def _outputs(task: TaskRun) -> list[Path]:
    return [bind.host_path for bind in task.binds if not bind.read_only]


def _walk(root: Path) -> Iterator[Path]:
    yield root
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root):
            for entry in (*dirnames, *filenames):
                yield Path(dirpath) / entry
