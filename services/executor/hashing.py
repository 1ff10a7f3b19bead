"""Tree hashing in bounded memory on every core.

The digest is the one sites have registered since the first release: sha256 over, for each root
(by index) and each regular file under it in sorted order, ``f"{index}:{relpath}\\0"`` then the
file's raw sha256 digest. Because the tree digest is made of per-file digests, it can be
recomputed from a manifest without reading unchanged files (``services.executor.manifest``).

Each file is read in fixed-size chunks into a buffer its thread reuses, so memory does not grow
with file size; files are hashed concurrently (hashlib and file reads release the GIL).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Bytes read per system call: large enough that hashlib releases the GIL and syscalls are rare,
#: small enough that a thread per core stays far below the 64 MiB budget.
CHUNK = 1 << 20
#: How often (in bytes hashed) the progress callback is called at most, besides at the end.
PROGRESS_EVERY = 64 << 20

#: ``progress(bytes_done, bytes_total)``; called from worker threads, one call at a time.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Found:
    """A regular file under one of the roots, with the ``os.stat`` taken while walking."""

    root: int
    relpath: str  # posix, relative to its root
    path: str
    stat: os.stat_result


def sort_key(relpath: str) -> list[str]:
    # The registered digest sorted pathlib.Path objects, which compare part by part (so "a/b"
    # comes before "a-c", unlike a plain string sort).
    return relpath.split("/")


def walk(*roots: Path) -> list[Found]:
    """Every regular file under the roots, in digest order, one ``stat`` each.

    The same files ``Path.rglob("*")`` + ``is_file()`` found: symlinks to files count (as their
    target), symlinked directories are not entered, a missing root holds nothing."""
    found: list[Found] = []
    for index, root in enumerate(roots):
        if not root.is_dir():
            continue
        files: list[Found] = []
        pending = [(str(root), "")]
        while pending:
            directory, prefix = pending.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    relpath = prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, relpath + "/"))
                    elif entry.is_file():
                        files.append(Found(index, relpath, entry.path, entry.stat()))
        files.sort(key=lambda item: sort_key(item.relpath))
        found.extend(files)
    return found


def combine(entries: Iterable[tuple[int, str, bytes]]) -> str:
    """The tree digest from ``(root index, relpath, raw file digest)`` in digest order."""
    digest = hashlib.sha256()
    for index, relpath, file_digest in entries:
        digest.update(f"{index}:{relpath}\0".encode())
        digest.update(file_digest)
    return digest.hexdigest()


def file_digest(path: str, buffer: bytearray) -> bytes:
    """A file's raw sha256, read ``len(buffer)`` bytes at a time into ``buffer``."""
    view = memoryview(buffer)
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as file:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while count := file.readinto(view):
            digest.update(view[:count])
    return digest.digest()


class _Counter:
    """Bytes hashed so far, reported to ``progress`` every ``PROGRESS_EVERY`` bytes."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress = total, progress
        self.done = self.reported = 0
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += count
            if self.done - self.reported >= PROGRESS_EVERY or self.done == self.total:
                self.reported = self.done
                self.progress(self.done, self.total)


def hash_files(files: list[Found], progress: Progress | None = None, workers: int | None = None) -> list[bytes]:
    """Raw digests of ``files`` (same order), on ``workers`` threads (default: one per core).

    The largest files start first so that one multi-GB file does not begin last and run alone."""
    digests: list[bytes | None] = [None] * len(files)
    counter = _Counter(sum(item.stat.st_size for item in files), progress)
    order: Iterator[int] = iter(sorted(range(len(files)), key=lambda i: -files[i].stat.st_size))
    take = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        buffer = bytearray(CHUNK)
        while not failures:
            with take:
                index = next(order, None)
            if index is None:
                return
            try:
                digests[index] = file_digest(files[index].path, buffer)
            except BaseException as error:  # re-raised in the caller's thread
                failures.append(error)
                return
            counter.add(files[index].stat.st_size)

    count = min(workers or os.cpu_count() or 1, max(len(files), 1))
    threads = [threading.Thread(target=work, name=f"tree-hash-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [digest for digest in digests if digest is not None]


def tree_hash(*roots: Path, progress: Progress | None = None, workers: int | None = None) -> str:
    """sha256 over every file's relative path and content: renaming or moving a file changes it
    (MedPerf's folder hash ignored names)."""
    files = walk(*roots)
    digests = hash_files(files, progress, workers)
    return combine((item.root, item.relpath, digest) for item, digest in zip(files, digests, strict=True))
