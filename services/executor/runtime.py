"""The Docker Engine API adapter: runs one task of a registered container in an isolated container,
on Docker, or on podman through its Docker-compatible socket (``engine.py`` is the seam).

The executor hands a site's data to third-party code, so every run is locked down the same way:
no network, a read-only root filesystem (unless the site allows writes), no capabilities, no
privilege escalation, bounded memory, processes and CPUs, a non-root user, inputs mounted
read-only, bounded outputs, and a hard time limit. The image is addressed by its ID or its
registry manifest digest, never a tag, so what runs is exactly what was registered.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from services.executor.engine import (
    LOG_LIMIT,
    NOBODY,
    TAIL_BYTES,
    TAIL_LINES,
    TASK_LABEL,
    Bind,
    ContainerRuntime,
    EngineUnavailable,
    ImageNotAvailable,
    ImageRefused,
    TaskOutcome,
    TaskRun,
    TaskStartError,
    container_name,
    default_user,
    parse_user,
    read_tail,
)
from services.executor.limits import DEFAULT_CPU_SHARE, TASK_HOME, ContainerLimits, allowed_gpus, setting, size
from services.executor.outputs import OutputWatcher, after_exit
from shared.containers import IMAGE_DIGEST

# The seam's names, imported from here by callers that predate engine.py.
__all__ = [
    "LOG_LIMIT",
    "NOBODY",
    "TAIL_BYTES",
    "TAIL_LINES",
    "TASK_LABEL",
    "Bind",
    "ContainerRuntime",
    "DockerRuntime",
    "EngineUnavailable",
    "ImageNotAvailable",
    "ImageRefused",
    "TaskOutcome",
    "TaskRun",
    "TaskStartError",
    "container_name",
    "default_user",
    "device_requests",
    "engine_available",
    "parse_user",
    "read_tail",
]


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


class DockerRuntime:
    #: What the engine is, for messages: podman answers on the same API.
    engine_name = "Docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        user: str | None = None,
        limits: ContainerLimits | None = None,
        log_limit: int = LOG_LIMIT,
        output_check_seconds: float = 1.0,
    ) -> None:
        """``output_check_seconds``: how often a task's outputs are measured against its limit."""
        self.client = client if client is not None else _connect()
        self.uid, self.gid = parse_user(user) if user is not None else default_user()
        self.limits = limits or ContainerLimits()
        self.log_limit = log_limit
        self.output_check_seconds = output_check_seconds
        self._engine_cpus: int | None = None

    @classmethod
    def from_env(cls, limits: ContainerLimits | None = None) -> DockerRuntime:
        """The engine at DOCKER_HOST: Docker, or podman's Docker-compatible socket."""
        return cls.for_client(_connect(), limits=limits)

    @staticmethod
    def for_client(client: docker.DockerClient, **options: Any) -> DockerRuntime:
        """The adapter for the engine ``client`` speaks to."""
        from services.executor.podman import PodmanRuntime  # it builds on this class

        return (PodmanRuntime if is_podman(client) else DockerRuntime)(client, **options)

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"

    def ensure_image(self, image_digest: str) -> str:
        """The ID of the image whose ID or registry manifest digest (a RepoDigest, MedPerf's
        ``image_hash``) is ``image_digest``; ``ImageNotAvailable`` when this host has none."""
        if not IMAGE_DIGEST.match(image_digest):
            raise ValueError(
                f"{image_digest!r} is not an image ID or manifest digest; tasks run only by "
                "'sha256:<64 hex>' so a re-pushed tag cannot swap the code that was registered"
            )
        with contextlib.suppress(ImageNotFound):
            image = self.client.images.get(image_digest)
            if image.id == image_digest:
                return image_digest
        for image in self.client.images.list():
            if any(repo_digest.endswith("@" + image_digest) for repo_digest in image.attrs.get("RepoDigests") or []):
                return str(image.id)
        raise ImageNotAvailable(
            f"Image {image_digest} is not present on this host. Load it before running, e.g. "
            "`docker load -i IMAGE.tar` or `docker pull NAME@sha256:...` / `docker build`, then check "
            f"`docker image inspect {image_digest}` (or its RepoDigests: `docker images --digests`)."
        )

    def pull_image(self, name: str, image_digest: str) -> None:
        reference = f"{repository_of(name)}@{image_digest}"
        try:
            for line in self._pull_lines(reference):
                if isinstance(line, dict) and line.get("error"):
                    raise pull_failed(reference, str(line["error"]))
        except NotFound as exc:
            raise ImageRefused(f"the registry has no image {reference}: {exc.explanation or exc}") from exc
        except APIError as exc:
            raise pull_failed(reference, str(exc.explanation or exc)) from exc
        except requests.RequestException as exc:
            raise ImageNotAvailable(f"pulling {reference} failed: {exc}") from exc
        self.ensure_image(image_digest)  # the engine checked the bytes; this checks what it recorded

    def _pull_lines(self, reference: str) -> Iterator[Any]:
        """The engine's progress lines while it pulls ``reference`` (another engine's adapter may
        pull another way)."""
        return self.client.api.pull(reference, stream=True, decode=True)

    def run(self, task: TaskRun) -> TaskOutcome:
        image_id = self.ensure_image(task.image_digest)
        self._prepare_outputs(task.binds)
        task.log_path.parent.mkdir(parents=True, exist_ok=True)
        container: Container | None = None
        try:
            container = self.client.containers.create(image_id, **self._create_kwargs(task))
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
            exceeded = exceeded or ("" if timed_out else self._out_of_memory(container))
            return TaskOutcome(exit_code, timed_out, duration, read_tail(task.log_path), exceeded, used)
        finally:
            if container is not None:
                self._remove(container)

    def _out_of_memory(self, container: Container) -> str:
        """Why the task was stopped when the kernel killed it for memory, naming the setting; else ""."""
        try:
            state = self.client.api.inspect_container(container.id)["State"]
        except (APIError, requests.RequestException):
            return ""
        return self._memory_verdict(state)

    def _memory_verdict(self, state: dict[str, Any]) -> str:
        if not state.get("OOMKilled"):
            return ""
        return f"killed for using more than its memory limit of {self._memory_advice()}"

    def _memory_advice(self) -> str:
        return (
            f"{size(self.limits.memory)} (its /tmp, $HOME and /dev/shm count in it; {setting('task_memory')} raises it)"
        )

    def _create_kwargs(self, task: TaskRun) -> dict[str, Any]:
        limits = self.limits
        kwargs: dict[str, Any] = {
            "command": list(task.command) if task.command is not None else None,
            "name": container_name(task.name),
            "labels": {**task.labels, TASK_LABEL: task.name},
            # Tools write caches under $HOME; it is a tmpfs, so they find one that leaves no trace.
            "environment": {"HOME": TASK_HOME, **task.environment},
            "user": self.user,
            "network_mode": "none",
            "read_only": limits.read_only_root,
            # Many tools insist on a writable /tmp; a tmpfs gives them one that leaves no trace.
            "tmpfs": {
                "/tmp": f"rw,nosuid,nodev,size={limits.tmp_size},mode=1777",
                TASK_HOME: f"rw,nosuid,nodev,size={limits.home_size},mode=1777",
            },
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "mem_limit": limits.memory,
            # Equal to mem_limit: swap would let a task exceed its memory budget, only slower.
            "memswap_limit": limits.memory,
            "pids_limit": limits.pids,
            "nano_cpus": self._nano_cpus(task.cpus),
            "shm_size": task.shm_size or limits.shm_size,
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
        gpus = allowed_gpus(task.gpus, limits.gpus)  # GpusRefused before any container exists
        if gpus:
            kwargs["device_requests"] = device_requests(gpus)
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


def is_podman(client: docker.DockerClient) -> bool:
    components = client.version().get("Components") or []
    return any("podman" in str(part.get("Name", "")).lower() for part in components)


def repository_of(name: str) -> str:
    """``name`` without its tag or digest: registry.example.org:5000/team/model:1.0 -> .../team/model."""
    name = name.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def pull_failed(reference: str, message: str) -> LookupError:
    # The registry answered that it has no such image: the registrant's to fix. Anything else
    # (unreachable, timeouts, a full disk) may pass, so the site retries.
    if "manifest unknown" in message or "not found" in message.lower():
        return ImageRefused(f"the registry has no image {reference}: {message}")
    return ImageNotAvailable(f"pulling {reference} failed: {message}")


def _outputs(task: TaskRun) -> list[Path]:
    return [bind.host_path for bind in task.binds if not bind.read_only]


def _walk(root: Path) -> Iterator[Path]:
    yield root
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root):
            for entry in (*dirnames, *filenames):
                yield Path(dirpath) / entry
