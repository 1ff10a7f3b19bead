"""The bounds a site puts on what registered containers bring and do, with their defaults.

Each bound is a ``MEDPERF_SITE_*`` setting (``settings.SiteSettings``); the parts that enforce them
take these plain values, so they can be used (and tested) without reading the environment. Every
refusal names the setting that raises its limit (``setting``), so an operator who trusts a
container knows what to change. docs/reliability.md ("Site limits") says why each default is what
it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.limits import GiB, KiB, MiB

# Hosted tarballs (additional_files, demo data) as unpacked: model weights are rarely over 2 GiB.
EXTRACT_MAX_BYTES = 4 * GiB
EXTRACT_MAX_MEMBERS = 20_000
EXTRACT_MAX_RATIO = 200.0
# Below this many bytes written the ratio is not checked: small archives of very compressible files
# (label masks, zero-padded arrays) legitimately expand a thousandfold and cannot hurt a disk.
EXTRACT_RATIO_FLOOR = 64 * MiB
# Any hosted file: a CUDA image saved with `docker save` is 8-15 GB.
DOWNLOAD_MAX_BYTES = 20 * GiB
# 8 GB in 3 h is 6 Mbit/s: a slow hospital link still brings a large image archive.
DOWNLOAD_DEADLINE = 3 * 3600.0
RESULTS_MAX_BYTES = 4 * MiB
# What a task's writable mounts may hold: a prepared dataset is the largest legitimate output.
OUTPUT_MAX_BYTES = 50 * GiB
# A task may use this share of the engine's cores when the site sets no MEDPERF_SITE_TASK_CPUS,
# leaving the rest to the agent, the engine and whatever else the host runs.
DEFAULT_CPU_SHARE = 0.75
# Memory of one task, swap included (none beyond it): the models MedPerf benchmarks infer in 1-3 GiB.
TASK_MEMORY = 4 * GiB
# Processes and threads of one task: a data loader's workers times their threads, with room to spare.
TASK_PIDS = 512
# /dev/shm when a task asks for none: PyTorch's DataLoader workers pass batches through it, and
# the engines' own default (64 MiB) makes them fail with "bus error".
TASK_SHM_SIZE = 1 * GiB
# The writable /tmp and $HOME (tmpfs, so nothing is left behind): both count in the task's memory.
TASK_TMP_SIZE = 1 * GiB
TASK_HOME_SIZE = 256 * MiB
#: Where a task's $HOME is (a tmpfs): caches of torch, matplotlib or numba land there.
TASK_HOME = "/home/medperf"


def setting(field: str) -> str:
    """The environment variable of a ``SiteSettings`` field."""
    return f"MEDPERF_SITE_{field.upper()}"


def size(n: float) -> str:
    """``n`` bytes for people: 4.0 GiB, 12.5 MiB, 300 B."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


@dataclass(frozen=True)
class ExtractionLimits:
    """Bounds on unpacking one tarball: bytes written, members, and bytes written per byte of archive."""

    max_bytes: int = EXTRACT_MAX_BYTES
    max_members: int = EXTRACT_MAX_MEMBERS
    max_ratio: float = EXTRACT_MAX_RATIO
    ratio_floor: int = EXTRACT_RATIO_FLOOR


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds on fetching one hosted file: its size, and the time for the whole transfer."""

    max_bytes: int = DOWNLOAD_MAX_BYTES
    deadline_seconds: float = DOWNLOAD_DEADLINE


@dataclass(frozen=True)
class TaskLimits:
    """Bounds on one container task besides its time: CPUs (None: a share of the engine's cores),
    the bytes its outputs may hold, and the size of the results or statistics file it leaves."""

    cpus: float | None = None
    output_bytes: int = OUTPUT_MAX_BYTES
    results_bytes: int = RESULTS_MAX_BYTES


@dataclass(frozen=True)
class ContainerLimits:
    """How a site's engine runs every task: memory (swap included), processes, the default
    /dev/shm, the sizes of the writable /tmp and $HOME, whether the image's own filesystem is
    read-only, and which GPUs a task may be given ('all', 'none', or device IDs '0,1')."""

    memory: int = TASK_MEMORY
    pids: int = TASK_PIDS
    shm_size: int = TASK_SHM_SIZE
    tmp_size: int = TASK_TMP_SIZE
    home_size: int = TASK_HOME_SIZE
    read_only_root: bool = True
    gpus: str = "all"


class GpusRefused(ValueError):
    """A task asked for GPUs the site does not give tasks; the message names the setting."""


def allowed_gpus(asked: str | int | None, site: str) -> str | None:
    """The GPUs a task gets, as ``docker run --gpus`` reads them: what it ``asked`` for, within
    the ``site``'s ``MEDPERF_SITE_TASK_GPUS`` ('all', 'none', or device IDs '0,1')."""
    if asked in (None, "", 0, "0"):
        return None
    wanted = str(asked).strip().strip('"')
    fix = f"{setting('task_gpus')} lists the GPUs tasks may use"
    if site == "none":
        raise GpusRefused(f"it asks for GPUs ({wanted}) and this site gives tasks none ({fix})")
    if site == "all":
        return wanted
    offered = [part.strip() for part in site.split(",") if part.strip()]
    if wanted == "all":
        return "device=" + ",".join(offered)
    if wanted.isdigit():
        if int(wanted) > len(offered):
            raise GpusRefused(f"it asks for {wanted} GPUs and this site gives tasks {len(offered)} ({fix})")
        return "device=" + ",".join(offered[: int(wanted)])
    ids = [part.strip() for part in wanted.removeprefix("device=").split(",") if part.strip()]
    refused = [gpu for gpu in ids if gpu not in offered]
    if refused:
        raise GpusRefused(f"it asks for GPU {','.join(refused)}, which this site does not give tasks ({fix})")
    return "device=" + ",".join(ids)
