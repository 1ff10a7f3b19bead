"""A prepared dataset's manifest: what each file looked like when it was last hashed.

Before every job the agent must know the prepared data is still the data the site registered.
Re-hashing 200 GB takes minutes, so ``verify`` stats every file (one ``stat`` each, no reads) and
re-hashes only files whose size, mtime_ns, ctime_ns or inode changed, and files added since; the
tree digest is recomputed from the per-file digests (``hashing.combine``).

What the metadata check can miss: content changed while size, mtime_ns, ctime_ns and inode all
stayed the same. Writing through the file system always moves ctime to "now" and nobody can set it
back (``os.utime`` restores mtime but moves ctime again), so a same-size rewrite that restores mtime
and keeps the inode is still found. Left are changes that bypass the file system: a disk edited
offline or from another host (a network share's server, a disk image), the clock set back to the
exact nanosecond, silent corruption (bit rot), and file systems that do not keep ctime honestly
(some FUSE and network mounts). A scheduled ``verify(..., full=True)`` re-reads everything and
covers them.

A file changed in the same clock tick as its stat can keep its ctime (time stamps are coarse), so
files changed within ``RACY_NS`` of the scan that recorded them are re-hashed next time ("racy
git" has the same rule).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.executor.hashing import Found, Progress, combine, hash_files, walk

FORMAT = 1
#: Wider than any file system's time stamp granularity and a network share's clock skew.
RACY_NS = 2_000_000_000

Key = tuple[int, str]  # (root index, relative path)


@dataclass(frozen=True)
class Record:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    digest: bytes  # raw sha256 of the content

    def matches(self, stat: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode) == (
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
            stat.st_ino,
        )


@dataclass(frozen=True)
class Manifest:
    roots: int
    scanned_ns: int  # wall clock just before the scan's first stat
    files: dict[Key, Record]

    @property
    def digest(self) -> str:
        ordered = sorted(self.files.items(), key=lambda item: (item[0][0], item[0][1].split("/")))
        return combine((index, relpath, record.digest) for (index, relpath), record in ordered)

    def racy(self, record: Record) -> bool:
        # ctime only: mtime can be set at will (even into the future), ctime cannot.
        return record.ctime_ns > self.scanned_ns - RACY_NS

    def save(self, path: Path) -> None:
        """Atomically: a crash leaves the previous manifest or this one, never half of one."""
        rows = [[i, rel, r.size, r.mtime_ns, r.ctime_ns, r.inode, r.digest.hex()] for (i, rel), r in self.files.items()]
        body = json.dumps({"format": FORMAT, "roots": self.roots, "scanned_ns": self.scanned_ns, "files": rows})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, path)
        except BaseException:
            os.unlink(staging)
            raise

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Raises ``ValueError`` for a file that is not a manifest of this format."""
        try:
            body = json.loads(path.read_text())
            if body["format"] != FORMAT:
                raise ValueError(f"manifest format {body['format']}, expected {FORMAT}")
            files = {
                (int(i), str(rel)): Record(int(size), int(mtime), int(ctime), int(inode), bytes.fromhex(digest))
                for i, rel, size, mtime, ctime, inode, digest in body["files"]
            }
            return cls(int(body["roots"]), int(body["scanned_ns"]), files)
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not a dataset manifest: {error}") from error


@dataclass(frozen=True)
class Verification:
    digest: str  # the tree digest of the data as it is now
    manifest: Manifest  # describes the data as it is now; save it for the next check
    changed: list[str] = field(default_factory=list)  # "<root dir name>/<relpath>", content differs
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rehashed: int = 0  # files read (metadata changed, racy, added, or all with full=True)

    @property
    def unchanged(self) -> bool:
        return not (self.changed or self.added or self.removed)


def build(*roots: Path, progress: Progress | None = None) -> Manifest:
    """Hash every file under ``roots`` (on every core) and record what each looked like."""
    return verify(Manifest(len(roots), 0, {}), *roots, full=True, progress=progress).manifest


def verify(manifest: Manifest, *roots: Path, full: bool = False, progress: Progress | None = None) -> Verification:
    """The data's current digest and what changed since ``manifest``, reading only files whose
    metadata changed (or every file with ``full``)."""
    if manifest.roots != len(roots):
        raise ValueError(f"the manifest describes {manifest.roots} roots, not {len(roots)}")
    scanned_ns = time.time_ns()
    found = walk(*roots)
    stale: list[Found] = []
    files: dict[Key, Record] = {}
    for item in found:
        known = manifest.files.get((item.root, item.relpath))
        if full or known is None or manifest.racy(known) or not known.matches(item.stat):
            stale.append(item)
        else:
            files[(item.root, item.relpath)] = known
    for item, digest in zip(stale, hash_files(stale, progress), strict=True):
        stat = item.stat
        files[(item.root, item.relpath)] = Record(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, digest)

    def named(key: Key) -> str:
        return f"{roots[key[0]].name}/{key[1]}"

    now = Manifest(len(roots), scanned_ns, files)
    changed = [named(k) for k in files if k in manifest.files and manifest.files[k].digest != files[k].digest]
    return Verification(
        digest=now.digest,
        manifest=now,
        changed=sorted(changed),
        added=sorted(named(k) for k in files if k not in manifest.files),
        removed=sorted(named(k) for k in manifest.files if k not in files),
        rehashed=len(stale),
    )


#: The manifest's file name, next to ``data/`` and ``labels/`` (outside what containers see).
MANIFEST_FILE = "manifest.json"
#: File names an error message lists at most per kind of change.
NAMED = 10


class DatasetChanged(Exception):
    """The prepared data no longer has its registered digest; says which files changed when the
    manifest knows (it does not when there was none, or it was unreadable)."""

    def __init__(self, verification: Verification, known: bool) -> None:
        self.verification = verification
        parts = []
        kinds = (("changed", verification.changed), ("added", verification.added), ("removed", verification.removed))
        for kind, names in kinds if known else ():
            if names:
                more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
                parts.append(f"{kind} {', '.join(names[:NAMED])}{more}")
        super().__init__("; ".join(parts) or "its digest differs from the registered one")


def check_prepared(
    manifest_path: Path,
    roots: tuple[Path, ...],
    registered: str,
    *,
    full: bool = False,
    progress: Progress | None = None,
) -> Verification:
    """Before a job: is the data under ``roots`` still the registered data? Reads only the files
    whose metadata changed since the manifest (every file with ``full``, or when there is no
    manifest yet), and raises ``DatasetChanged`` naming them if the digest is not ``registered``.

    The manifest is only saved while the data matches, so it always describes the registered data
    and every later check names the same changed files again."""
    try:
        manifest, known = Manifest.load(manifest_path), True
    except (FileNotFoundError, ValueError):
        manifest, known = Manifest(len(roots), 0, {}), False
    result = verify(manifest, *roots, full=full, progress=progress)
    if result.digest != registered:
        raise DatasetChanged(result, known)
    if result.rehashed or not known:
        result.manifest.save(manifest_path)
    return result


#: Beside the manifest: when every byte was last read (a full check), as wall-clock nanoseconds.
FULL_CHECK_FILE = "full-check"


def check_before_job(
    prepared: Path, roots: tuple[Path, ...], registered: str, full_every: float, progress: Progress | None = None
) -> Verification:
    """``check_prepared`` before a job, reading every byte again once ``full_every`` seconds have
    passed since the last full check (what the metadata check can miss; see the module docstring);
    ``progress`` is told the bytes read so far, and of how many."""
    marker = prepared / FULL_CHECK_FILE
    try:
        last_full = int(marker.read_text())
    except (OSError, ValueError):
        last_full = 0
    full = time.time_ns() - last_full >= full_every * 1e9
    started = time.time_ns()
    result = check_prepared(prepared / MANIFEST_FILE, roots, registered, full=full, progress=progress)
    if full:
        marker.write_text(str(started))
    return result
