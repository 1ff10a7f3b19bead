"""What every container engine adapter shares: the task to run, its outcome, the errors a site
acts on, and the ``ContainerRuntime`` protocol the workflow calls.

An engine is one adapter behind this seam: ``runtime.DockerRuntime`` speaks the Docker Engine API,
and ``podman.PodmanRuntime`` adjusts it for podman's Docker-compatible socket. A third engine
(Singularity/Apptainer) would be one more class with these five methods, applying
``limits.ContainerLimits`` its own way.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.events import LOG_TAIL_CHARS

TASK_LABEL = "org.medperf.task"
TAIL_LINES = 20
# Read no more than an event may carry (JobFailed.log_tail): at most one character per byte read.
TAIL_BYTES = LOG_TAIL_CHARS
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


class ImageRefused(LookupError):
    """The registry the image's name points to answers, and has no image of that digest: the
    container's registrant must fix its name or digest; pulling again cannot help."""


class TaskStartError(RuntimeError):
    """The engine accepted the container but could not start it (bad command, bad mount, ...)."""


class ContainerRuntime(Protocol):
    def ensure_image(self, image_digest: str) -> None:
        """Raise ``ImageNotAvailable`` unless an image whose ID, or registry manifest digest, is
        ``image_digest`` is on this host."""
        ...

    def pull_image(self, name: str, image_digest: str) -> None:
        """Pull ``name@image_digest`` from the registry ``name`` points to; ``ImageNotAvailable``
        when the registry cannot be reached, ``ImageRefused`` when it has no such image."""
        ...

    def run(self, task: TaskRun) -> TaskOutcome: ...

    def load_image(self, archive: Path) -> None:
        """Load a ``docker save`` tarball into the engine."""
        ...

    def remove_labelled(self, labels: dict[str, str]) -> int:
        """Stop and remove every container carrying all of ``labels``; returns how many."""
        ...


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


def read_tail(path: Path, max_lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - max_bytes))
        data = handle.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line was cut by the byte window; a fragment misleads
    return "\n".join(lines[-max_lines:])
