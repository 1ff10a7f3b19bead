"""A content-addressed store of hosted files and their unpacked trees.

Layout under ``root``::

    sha256/<hex>       a file whose bytes hash to <hex>, read-only
    extracted/<hex>/   the tarball sha256/<hex>, unpacked
    tmp/               downloads and extractions in progress

A file is only ever stored under the hash computed while downloading it, so a lookup by the
registered hash can never return bytes that were not verified against that hash. Nothing is keyed
by URL: if a registration's hash changes, the old file simply stops being asked for.

The site's limits apply here, whatever the source: each download is held to a size cap (and to
the size its registration declares) as the bytes arrive, and to one deadline for the whole
transfer, retries included; each extraction to the extraction limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path

from services.executor.assets.archive import safe_extract
from services.executor.assets.base import ProgressCallback, Source, StreamHasher
from services.executor.assets.direct import DirectSource
from services.executor.assets.errors import DownloadTimedOut, HashMismatch, UnknownSource
from services.executor.assets.synapse import SynapseSource
from services.executor.limits import DownloadLimits, ExtractionLimits, setting
from shared.containers import HostedFile
from shared.settings import Settings


def default_sources(config_dir: Path) -> list[Source]:
    """Every kind of address the executor understands; ``config_dir`` holds stored credentials."""
    return [DirectSource(), SynapseSource(config_dir)]


class AssetCache:
    def __init__(
        self,
        root: Path,
        sources: list[Source] | None = None,
        *,
        config_dir: Path | None = None,
        downloads: DownloadLimits | None = None,
        extraction: ExtractionLimits | None = None,
    ) -> None:
        """``config_dir`` (where ``medperf auth synapse_login`` stored the token) is only used to
        build the default sources; it defaults to the shared state directory. ``downloads`` and
        ``extraction`` default to the site limits' defaults."""
        self.root = root
        self.downloads = downloads or DownloadLimits()
        self.extraction = extraction or ExtractionLimits()
        if sources is None:
            if config_dir is None:
                config_dir = Settings().state_dir
            sources = default_sources(config_dir)
        self.sources = sources
        self._blobs = root / "sha256"
        self._extracted = root / "extracted"
        self._tmp = root / "tmp"
        for directory in (self._blobs, self._extracted, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)
        # One download/extraction per hash at a time within this process; other processes sharing
        # the directory are safe too (unique temp names, atomic renames), just not deduplicated.
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, sha256: str) -> Path:
        """Where the file with this hash is (or would be) stored."""
        return self._blobs / sha256

    async def fetch(self, hosted: HostedFile, *, on_progress: ProgressCallback | None = None) -> Path:
        """The local path of ``hosted``, downloading and verifying it unless already stored."""
        final = self.path_for(hosted.sha256)
        if final.is_file():
            return final
        async with self._lock(f"file:{hosted.sha256}"):
            if final.is_file():
                return final
            async with self._download(hosted.source, on_progress, hosted.size) as (tmp, actual):
                if actual != hosted.sha256:
                    raise HashMismatch(hosted.source, hosted.sha256, actual)
                _store(tmp, final)
        return final

    async def fetch_unverified(self, source: str, *, on_progress: ProgressCallback | None = None) -> tuple[Path, str]:
        """Download ``source`` without a known hash (trust on first use).

        Always downloads, since a URL says nothing about which bytes it serves today. Returns
        the stored path and the sha256 to pin in the registration.
        """
        async with self._download(source, on_progress) as (tmp, actual):
            final = self.path_for(actual)
            if not final.is_file():
                _store(tmp, final)
        return final, actual

    async def extracted(self, hosted: HostedFile, *, on_progress: ProgressCallback | None = None) -> Path:
        """The directory holding the unpacked tarball ``hosted``, extracting it on first use."""
        target = self._extracted / hosted.sha256
        if target.is_dir():
            return target
        archive = await self.fetch(hosted, on_progress=on_progress)
        async with self._lock(f"tree:{hosted.sha256}"):
            if target.is_dir():
                return target
            await asyncio.to_thread(_unpack, archive, self._tmp, target, self.extraction)
        return target

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    @asynccontextmanager
    async def _download(
        self, source: str, on_progress: ProgressCallback | None, declared: int | None = None
    ) -> AsyncIterator[tuple[Path, str]]:
        """Fetch into a fresh temp file; yields it with its sha256 and deletes it unless moved."""
        handler = next((candidate for candidate in self.sources if candidate.matches(source)), None)
        if handler is None:
            raise UnknownSource(source)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="download-")
        os.close(fd)
        tmp = Path(name)
        try:
            hasher = StreamHasher(on_progress, source=source, max_bytes=self.downloads.max_bytes, declared=declared)
            await self._within_deadline(handler.fetch(source, tmp, hasher), source, hasher)
            hasher.finish()
            yield tmp, hasher.hexdigest()
        finally:
            # Synchronous on purpose: this also runs when the task is being cancelled, where an
            # await could be interrupted and leak the file; removing one entry is quick anyway.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    async def _within_deadline(self, transfer: Awaitable[None], source: str, hasher: StreamHasher) -> None:
        """One deadline for the whole transfer, retries and resumes included: a host that sends a
        byte every few seconds never trips a per-read timeout."""
        seconds = self.downloads.deadline_seconds
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                await transfer
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            # Not the file's fault as far as anyone here can tell: a trickling host and the site's
            # own slow or congested link look the same, so this is an infrastructure failure,
            # retried like the others (four attempts bound what it costs to four deadlines).
            name = setting("download_deadline")
            reason = f"not finished within {seconds:g} s ({name} raises it); {hasher.done} bytes had arrived"
            raise DownloadTimedOut(source, reason) from exc


def _store(tmp: Path, final: Path) -> None:
    # Read-only because the file is shared by every run that names this hash and is mounted
    # into containers; an accidental write would silently corrupt a "verified" file.
    os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.replace(tmp, final)


def _unpack(archive: Path, scratch_root: Path, target: Path, limits: ExtractionLimits) -> None:
    """Extract ``archive`` to ``target`` via a scratch directory renamed into place in one step.

    A crash or a refused member therefore never leaves a half-populated directory where a run
    would find it. Runs whole in a worker thread so a cancelled caller cannot delete the scratch
    directory while extraction is still writing into it.
    """
    staging = tempfile.mkdtemp(dir=scratch_root, prefix=f"extract-{target.name[:16]}-")
    try:
        # mkdtemp makes the directory 0700; containers run as an unprivileged user and must read it.
        os.chmod(staging, 0o755)
        safe_extract(archive, Path(staging), limits)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same extraction first; theirs is as good.
            if not os.path.isdir(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
