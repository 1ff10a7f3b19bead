"""Unpacking hosted tarballs without letting them write anywhere but their own directory.

Archives come from whoever registered a container, so every member is checked twice: once on
its own (name, type, link target as written) before anything is written, and again against the
directory as it stands just before that member is written, because links extracted earlier can
make an innocent-looking later path resolve elsewhere. A last pass re-checks every link, since a
link that was harmless when created can be redirected by a link extracted after it.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zlib
from pathlib import Path

from services.executor.assets.errors import InvalidArchive, UnsafeArchive

# Python's own "data" filter (3.11.4+) is a second line of defence: it also clears setuid bits
# and group/other write permission, which our checks don't concern themselves with.
_DATA_FILTER = getattr(tarfile, "data_filter", None)


def safe_extract(tar_path: Path, dest: Path) -> None:
    """Extract the tar archive ``tar_path`` (plain or compressed) into ``dest``.

    Raises ``UnsafeArchive`` naming the first member that is absolute, contains ``..``, is a link
    resolving outside ``dest``, or is a device file or FIFO; ``InvalidArchive`` if the file is
    not a readable tarball. On error ``dest`` may hold a partial tree: extract into a scratch
    directory and discard it on failure (as ``AssetCache.extracted`` does).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            for member in members:
                _check_against_disk(member, root)
                try:
                    # Directory modes are not restored: a read-only directory from the archive
                    # would stop its own contents from being extracted, and us from cleaning up.
                    tar.extract(member, root, set_attrs=not member.isdir(), filter=_DATA_FILTER)
                except tarfile.FilterError as exc:
                    raise UnsafeArchive(member.name, str(exc)) from exc
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise InvalidArchive(f"{tar_path.name} is not a readable tar archive (.tar or .tar.gz): {exc}") from exc
    _check_extracted_links(root)


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
