"""The files a container leaves for the site to read: statistics and results.

Each is read on the host with care (``read_report``), as JSON or, MedPerf's way, YAML, whatever
file the task declares (``statistics.yaml``, ``/mlcommons/volumes/results/results.yaml``, or a
directory holding ``statistics.json`` / ``results.json``). Only what is checked here leaves the site.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from services.executor.failed import TaskFailed
from services.executor.limits import setting, size
from shared.events import STATISTICS_DEPTH, Statistics, flatten_statistics
from shared.limits import LimitExceeded, check_statistics_size
from shared.medperf_format import load_yaml

#: What the executor looks for in an output *directory* (a ``type: file`` output is read as is).
STATISTICS_FILES = ("statistics.json", "statistics.yaml", "statistics.yml")
RESULTS_FILES = ("results.json", "results.yaml", "results.yml")


def report_file(output: Path, names: tuple[str, ...]) -> Path:
    """The report inside ``output``: the file itself for a ``type: file`` output, else the first of
    ``names`` the container wrote in the directory (the first name when it wrote none)."""
    if output.is_file() or not output.is_dir():
        return output
    return next((output / n for n in names if (output / n).exists()), output / names[0])


def leaving_metrics(results: dict, declared: tuple[str, ...] = ()) -> dict[str, float]:
    """The numbers of the results file, nested ones under dotted names (``AUC.pneumonia``): the only
    part of it that leaves the site. JSON allows NaN, infinities and integers too large for a float;
    no consumer can read them, so they are the metrics container's fault, not a failure to retry.
    A metric the benchmark ``declared`` that is missing fails the task, naming those it did write."""
    numbers = {}
    for name, value in _numbers_of(results):
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise TaskFailed("evaluate", None, f"metric {name!r} in its results is {value!r}; only finite numbers")
        numbers[name] = number
    if missing := [name for name in declared if name not in numbers]:
        wrote = ", ".join(sorted(numbers)[:20]) or "no numbers at all"
        detail = f"the benchmark declares {', '.join(missing)}, which its results lack; it wrote: {wrote}"
        raise TaskFailed("evaluate", None, detail, fault="metrics")
    return numbers


def _numbers_of(results: dict, prefix: str = "", level: int = 0) -> list[tuple[str, object]]:
    """Every value under a mapping, nested ones by dotted name; lists (per-case values) are no metrics."""
    found: list[tuple[str, object]] = []
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and level < STATISTICS_DEPTH:
            found.extend(_numbers_of(value, f"{name}.", level + 1))
        else:
            found.append((name, value))
    return found


def leaving_statistics(report: dict) -> Statistics:
    """The statistics as they leave the site with the dataset's registration: names to numbers,
    strings, or mappings and lists of them (MedPerf's ``labels_count: {...}``), finite, and small
    enough for every list and event that carries them."""
    if _depth(report) > STATISTICS_DEPTH:
        raise TaskFailed("statistics", None, f"its statistics nest deeper than {STATISTICS_DEPTH} levels")
    try:
        statistics = _STATISTICS.validate_python(report, strict=True)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        message = f"its statistics must map names to numbers, strings, or mappings of them ({where})"
        raise TaskFailed("statistics", None, message) from exc
    for name, value in flatten_statistics(statistics).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise TaskFailed("statistics", None, f"its statistics: {name!r} is {value}; only finite numbers")
    try:
        check_statistics_size(statistics)
    except LimitExceeded as exc:
        raise TaskFailed("statistics", None, f"its statistics: {exc}") from exc
    return statistics


_STATISTICS: TypeAdapter[Statistics] = TypeAdapter(Statistics)


def _depth(value: object, level: int = 0) -> int:
    if level > STATISTICS_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def read_report(path: Path, task: str, limit: int) -> dict:
    """The mapping a container left in ``path`` (JSON, or YAML unless the name ends in .json),
    read on the host with care: at most ``limit`` bytes are read, the file must be a regular file
    (a link the container wrote would lead anywhere on the host; a FIFO would block the agent),
    and anything unreadable is the container's fault."""
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
    if not data.strip():
        raise TaskFailed(task, None, f"it left {path.name} empty")
    try:
        report = json.loads(data) if path.suffix == ".json" else load_yaml(data, path.name)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise TaskFailed(task, None, f"it did not write a valid {path.name}: {str(exc)[:200]}") from exc
    if not isinstance(report, dict):
        raise TaskFailed(task, None, f"{path.name} must hold a mapping (JSON object or YAML keys)")
    return report


def _too_large(path: Path, task: str, found: int, limit: int) -> Exception:
    reason = f"{path.name} is {size(found)}, more than the site's limit of {size(limit)}"
    return TaskFailed(task, None, f"{reason} ({setting('results_max_bytes')} raises it)")
