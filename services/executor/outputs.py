"""How much a task has written, measured while it runs: the site's output limit.

The engine sites run (Docker 20.10 on overlay2 over ext4, cgroup v1) cannot cap the size of a
bind mount: ``--storage-opt size`` needs xfs with project quotas, a tmpfs would hold outputs in
memory, and a loop-mounted filesystem per run needs root and mount rights on the host. So the
runtime bounds outputs in two parts:

- the engine's file-size ulimit (RLIMIT_FSIZE) stops any single file at the limit as it is written;
- ``OutputWatcher`` measures the task's writable mounts while it runs and reports when they hold
  more than the limit, so the runtime stops the container; one more measurement after the task
  exits catches what was written between two polls.

A task writing many files can overshoot by its write speed times the poll interval before it is
stopped; what it wrote is then deleted.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from services.executor.limits import setting, size

#: A walk may take at most this share of the time between two walks, so a tree of many files
#: stretches the poll interval instead of costing a core.
BUSY_SHARE = 0.05


def output_bytes(roots: Iterable[Path]) -> int:
    """Bytes the trees under ``roots`` hold: each file once however many hard links name it, at the
    larger of its length and its allocated blocks (a sparse file counts at its length, since
    whatever reads it reads that much). Links are not followed."""
    total, seen, pending = 0, set(), []
    for root in roots:
        try:
            info = os.stat(root, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):  # an output bound as a file (MedPerf's ``type: file``)
            total += max(info.st_size, info.st_blocks * 512)
        else:
            pending.append(os.fspath(root))
    while pending:
        for entry in _entries(pending.pop()):
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we looked
            if stat.S_ISDIR(info.st_mode):
                pending.append(entry.path)
            elif info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += max(info.st_size, info.st_blocks * 512)
    return total


def _entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except PermissionError:
        # A task running as the agent's own user can lock its directories; the owner can reopen them.
        try:
            os.chmod(directory, stat.S_IRWXU)
            with os.scandir(directory) as entries:
                return list(entries)
        except OSError:
            return []
    except (FileNotFoundError, NotADirectoryError):
        return []


class OutputWatcher:
    """Measures ``roots`` every ``interval`` seconds (or more, see ``BUSY_SHARE``) in a thread of
    its own while in a ``with`` block, and calls ``on_exceeded(bytes)`` once, the first time they
    hold more than ``limit`` bytes."""

    def __init__(
        self, roots: list[Path], limit: int, on_exceeded: Callable[[int], None], interval: float = 1.0
    ) -> None:
        self.roots, self.limit, self.on_exceeded, self.interval = roots, limit, on_exceeded, interval
        self.exceeded: int | None = None
        self.polls = 0
        self.busy_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="output-watcher", daemon=True)

    def __enter__(self) -> OutputWatcher:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            started = time.perf_counter()
            used = output_bytes(self.roots)
            spent = time.perf_counter() - started
            self.polls += 1
            self.busy_seconds += spent
            if used > self.limit:
                self.exceeded = used
                self.on_exceeded(used)
                return
            delay = max(self.interval, spent / BUSY_SHARE)


def after_exit(roots: list[Path], limit: int | None, watcher: OutputWatcher | None) -> tuple[str, int]:
    """Once the task has exited: what its outputs hold, and, when that is over ``limit`` (or the
    watcher stopped it), why it failed. Outputs over the limit are deleted: the limit is there to
    keep the site's disk. Without a limit nothing is measured: ``("", 0)``."""
    if limit is None:
        return "", 0
    used = output_bytes(roots)
    stopped = watcher is not None and watcher.exceeded is not None
    if used <= limit and not stopped:
        return "", used
    for path in roots:
        if path.is_file() and not path.is_symlink():
            path.write_bytes(b"")  # a bound file stays, emptied
            continue
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    how = "it was stopped and what it wrote was deleted" if stopped else "what it wrote was deleted"
    reason = (
        f"its outputs reached {size(used)}, more than the site's limit of {size(limit)} "
        f"({setting('output_max_bytes')} raises it); {how}"
    )
    return reason, used
