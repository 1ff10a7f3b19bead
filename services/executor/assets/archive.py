"""Unpacking hosted tarballs without letting them write anywhere but their own directory, or more
than the site allows.

Archives come from whoever registered a container, so every member is checked twice: once on
its own (name, type, link target as written) before anything is written, and again against the
directory as it stands just before that member is written, because links extracted earlier can
make an innocent-looking later path resolve elsewhere. A last pass re-checks every link, since a
link that was harmless when created can be redirected by a link extracted after it.

Members are read one at a time as the archive streams in, and the site's extraction limits
(``ExtractionLimits``: bytes written, members, bytes per byte of archive) are enforced as they go:
file contents are copied here, chunk by chunk, counting what is actually written rather than what
headers declare, so a gzip bomb stops at the limit. Every byte the decompressor produces counts
too, against a slightly larger allowance, because a bomb can also hide in what is never written.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import posixpath
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from services.executor.assets.errors import ArchiveTooLarge, InvalidArchive, UnsafeArchive
from services.executor.limits import ExtractionLimits, setting, size

# Python's own "data" filter (3.11.4+) is a second line of defence: it also clears setuid bits
# and group/other write permission, which our checks don't concern themselves with.
_DATA_FILTER = getattr(tarfile, "data_filter", None)
_CHUNK = 2**20
# The largest single read the tar layer may ask of the stream: real headers (pax records, long
# names) take a few hundred bytes, and tarfile would hold a header of any size in memory.
_MAX_READ = 4 * 2**20
# Errors of the site's own disk: not the archive's fault, so not reported as a refused archive.
_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def safe_extract(tar_path: Path, dest: Path, limits: ExtractionLimits | None = None) -> None:
    """Extract the tar archive ``tar_path`` (plain, gzip, bzip2 or xz) into ``dest``.

    Raises ``UnsafeArchive`` naming the first member that is absolute, contains ``..``, is a link
    resolving outside ``dest``, or is a device file or FIFO; ``ArchiveTooLarge`` at the first of
    ``limits`` it goes over; ``InvalidArchive`` if the file is not a readable tarball. On error
    ``dest`` may hold a partial tree: extract into a scratch directory and discard it on failure
    (as ``AssetCache.extracted`` does).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    budget = _Budget(tar_path, limits or ExtractionLimits())
    try:
        with _decompressed(tar_path) as raw, tarfile.open(fileobj=_Metered(raw, budget), mode="r:") as tar:
            for member in tar:  # one header at a time: nothing is read ahead
                budget.add_member()
                _check_member(member)
                _check_against_disk(member, root)
                _extract(tar, member, root, budget)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, RecursionError) as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
            raise
        raise InvalidArchive(f"{tar_path.name} is not a readable tar archive (.tar or .tar.gz): {exc}") from exc
    _check_extracted_links(root)


class _Budget:
    """What one extraction has written and may still write, and the limit it would go over."""

    def __init__(self, archive: Path, limits: ExtractionLimits) -> None:
        self.archive, self.limits = archive.name, limits
        compressed = archive.stat().st_size
        by_ratio = max(int(limits.max_ratio * compressed), limits.ratio_floor)
        if by_ratio < limits.max_bytes:
            self.allowed, self.field = by_ratio, "extract_max_ratio"
            self.rule = f"it unpacks to more than {limits.max_ratio:g} times its own {size(compressed)}"
        else:
            self.allowed, self.field = limits.max_bytes, "extract_max_bytes"
            self.rule = f"it unpacks to more than {size(limits.max_bytes)}"
        # Headers and padding come on top of the data: 1.5 KiB per member covers a header, a pax
        # record and the padding after the data; the rest is slack for long names.
        self.stream_allowed = self.allowed + 1536 * (limits.max_members + 1) + 16 * _MAX_READ
        self.written = self.members = self.streamed = 0

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            reason = f"it holds more than {self.limits.max_members} files, directories and links"
            raise self._refuse(reason, "extract_max_members")

    def declare(self, member: tarfile.TarInfo) -> None:
        """Refuse a member whose header alone would go over, before writing any of it."""
        if self.written + member.size > self.allowed:
            raise self._refuse(f"{self.rule}: member {member.name!r} declares {size(member.size)}", self.field)

    def write(self, n: int) -> None:
        if self.written + n > self.allowed:
            raise self._refuse(self.rule, self.field)
        self.written += n

    def stream(self, n: int) -> None:
        self.streamed += n
        if self.streamed > self.stream_allowed:
            raise self._refuse(f"{self.rule}, counting its headers", self.field)

    def _refuse(self, reason: str, field: str) -> ArchiveTooLarge:
        return ArchiveTooLarge(self.archive, reason, setting(field), self.written)


class _Metered:
    """The decompressed stream as tarfile reads it, every byte counted by ``budget``."""

    def __init__(self, raw: BinaryIO, budget: _Budget) -> None:
        self._raw, self._budget = raw, budget

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > _MAX_READ:
            raise InvalidArchive(
                f"{self._budget.archive}: refusing a tar header of {size(n)} (pax records or a long name); "
                "real ones take a few hundred bytes"
            )
        data = self._raw.read(n)
        self._budget.stream(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # tarfile seeks to absolute offsets: forward over padding, which the decompressor produces
        # all the same; backward means decompressing again from the start.
        assert whence == os.SEEK_SET, "tarfile seeks to absolute offsets"
        here = self._raw.tell()
        self._budget.stream(offset - here if offset >= here else offset)
        return self._raw.seek(offset)

    def tell(self) -> int:
        return self._raw.tell()


def _decompressed(path: Path) -> BinaryIO:
    """The archive's tar stream, decompressed as it is read (chosen by the file's magic bytes)."""
    with path.open("rb") as probe:
        magic = probe.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, budget: _Budget) -> None:
    if member.isreg():
        _write_file(tar, _filtered(member, root), root, budget)
    elif member.islnk():
        _hard_link(_filtered(member, root), root)
    else:
        try:
            # Directory modes are not restored: a read-only directory from the archive would stop
            # its own contents from being extracted, and us from cleaning up.
            tar.extract(member, root, set_attrs=not member.isdir(), filter=_DATA_FILTER)
        except tarfile.FilterError as exc:
            raise UnsafeArchive(member.name, str(exc)) from exc


def _filtered(member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
    if _DATA_FILTER is None:
        return member
    try:
        return _DATA_FILTER(member, root)
    except tarfile.FilterError as exc:
        raise UnsafeArchive(member.name, str(exc)) from exc


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, budget: _Budget) -> None:
    """Copy a regular member's contents, counting every chunk before it is written."""
    budget.declare(member)
    path = _fresh_path(root, member.name)
    source = tar.extractfile(member)
    assert source is not None  # a regular member always has contents, if only empty
    # O_EXCL | O_NOFOLLOW: a new file, never one reached through a link or shared with a hard link.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with source, os.fdopen(descriptor, "wb") as out:
        while chunk := source.read(_CHUNK):
            budget.write(len(chunk))
            out.write(chunk)
    os.chmod(path, member.mode if member.mode is not None else 0o644)
    os.utime(path, (member.mtime, member.mtime))


def _hard_link(member: tarfile.TarInfo, root: str) -> None:
    # tarfile copies the target's contents when the link's target does not resolve as written
    # (say 'missing/../weights'): bytes that no header declares. A hard link here is a link to a
    # file already on disk, or refused.
    target = os.path.realpath(os.path.join(root, member.linkname))
    if not (_inside(target, root) and os.path.isfile(target)):
        raise UnsafeArchive(member.name, f"a hard link must name a file extracted before it, not {member.linkname!r}")
    os.link(target, _fresh_path(root, member.name))


def _fresh_path(root: str, name: str) -> str:
    """Where member ``name`` goes, its directories made and any earlier entry of that name gone
    (a later member replaces an earlier one, as tar does)."""
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    return path


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if not name:
        raise UnsafeArchive(name, "the member has no name")
    if name.startswith("/") or Path(name).is_absolute():
        raise UnsafeArchive(name, "absolute path")
    if ".." in name.split("/"):
        raise UnsafeArchive(name, "the path contains a '..' component")
    if member.ischr() or member.isblk():
        raise UnsafeArchive(name, "device files are not allowed")
    if member.isfifo():
        raise UnsafeArchive(name, "FIFOs are not allowed")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(name, "only regular files, directories and links are allowed")
    if member.issym() or member.islnk():
        target = member.linkname
        if not target:
            raise UnsafeArchive(name, "the link has no target")
        if target.startswith("/"):
            raise UnsafeArchive(name, f"the link points to the absolute path {target!r}")
        # A symlink's target is relative to the link's directory, a hardlink's to the archive root.
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(name, f"the link target {target!r} is outside the extraction directory")


def _check_against_disk(member: tarfile.TarInfo, root: str) -> None:
    """Resolve the member's path (and link target) through links already extracted."""
    name = member.name
    parent = os.path.realpath(os.path.join(root, posixpath.dirname(name)))
    if not _inside(parent, root):
        raise UnsafeArchive(name, "its directory is a link that leads outside the extraction directory")
    if member.issym():
        target = os.path.realpath(os.path.join(parent, member.linkname))
    elif member.islnk():
        target = os.path.realpath(os.path.join(root, member.linkname))
    else:
        # A file written over an existing symlink is written through it, so follow it.
        target = os.path.realpath(os.path.join(root, name))
    if not _inside(target, root):
        raise UnsafeArchive(name, "it resolves outside the extraction directory through a link")


def _check_extracted_links(root: str) -> None:
    for directory, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = os.path.join(directory, entry)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                raise UnsafeArchive(
                    os.path.relpath(path, root), "after extraction the link resolves outside the extraction directory"
                )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
