"""The contract between the cache and the places files are hosted."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from services.executor.assets.errors import DownloadTooLarge, DownloadTooShort
from services.executor.limits import setting, size

#: Called as bytes arrive: ``on_progress(done_bytes, total_bytes_or_None)``. ``done_bytes`` can go
#: back to 0 when a source has to restart a transfer from the beginning.
ProgressCallback = Callable[[int, int | None], None]


class StreamHasher:
    """A sha256 fed as bytes are written, so a download is hashed in the same pass that stores it.

    It wraps hashlib rather than being a bare ``hashlib.sha256()`` because a source sometimes has to
    throw away what it received (a server that ignores a resume request resends the whole file),
    and a hashlib object cannot be rewound.

    Every source feeds it every byte, so it also holds the transfer to the site's size cap
    (``max_bytes``) and to the size the registration declares (``declared``): checked against the
    size a source learns up front (``expect``), and again as the bytes arrive (``update``), so an
    endless body is cut off at the cap instead of after the hash check.
    """

    def __init__(
        self,
        on_progress: ProgressCallback | None = None,
        *,
        source: str = "",
        max_bytes: int | None = None,
        declared: int | None = None,
    ) -> None:
        self._digest = hashlib.sha256()
        self._on_progress = on_progress
        self.source, self.max_bytes, self.declared = source, max_bytes, declared
        self.done = 0
        self.total: int | None = None

    def expect(self, total: int | None) -> None:
        """Record the full size of the file once a source learns it: for progress reports, and
        to refuse a file of the wrong size before reading it."""
        self.total = total
        if total is None:
            return
        if self.max_bytes is not None and total > self.max_bytes:
            raise self._over_cap(f"the host announces {size(total)}")
        if self.declared is not None and total != self.declared:
            announced = f"the host announces {total} bytes; the registration declares {self.declared} bytes"
            if total > self.declared:
                raise DownloadTooLarge(self.source, announced, "the hosted file's registered size")
            raise DownloadTooShort(self.source, announced)

    def update(self, chunk: bytes) -> None:
        """Count and hash ``chunk``; call it before writing the chunk, so nothing over a cap is stored."""
        self.done += len(chunk)
        if self.max_bytes is not None and self.done > self.max_bytes:
            raise self._over_cap(f"more than that arrived ({self.done} bytes)")
        if self.declared is not None and self.done > self.declared:
            reason = f"the registration declares {self.declared} bytes and the host sent more ({self.done})"
            raise DownloadTooLarge(self.source, reason, "the hosted file's registered size")
        self._digest.update(chunk)
        if self._on_progress is not None:
            self._on_progress(self.done, self.total)

    def finish(self) -> None:
        """After the last byte: a transfer shorter than the declared size is refused too."""
        if self.declared is not None and self.done != self.declared:
            raise DownloadTooShort(
                self.source,
                f"the transfer ended after {self.done} bytes; the registration declares {self.declared} bytes",
            )

    def _over_cap(self, what: str) -> DownloadTooLarge:
        name = setting("download_max_bytes")
        assert self.max_bytes is not None
        reason = f"it is larger than the {size(self.max_bytes)} the site accepts ({name} raises it): {what}"
        return DownloadTooLarge(self.source, reason, name)

    def reset(self) -> None:
        self._digest = hashlib.sha256()
        self.done = 0
        if self._on_progress is not None:
            self._on_progress(0, self.total)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Source(ABC):
    """One kind of place hosted files live (direct URL, Synapse, ...).

    Supporting a new kind of address means writing one subclass and adding an instance to the
    list given to ``AssetCache``; the cache never looks at addresses itself.
    """

    @abstractmethod
    def matches(self, source: str) -> bool:
        """Whether this source understands the address ``source``."""

    @abstractmethod
    async def fetch(self, source: str, dest: Path, hasher: StreamHasher) -> None:
        """Write the file's bytes to ``dest`` (created or truncated), feeding each byte to ``hasher``.

        ``dest`` is a private temporary file; the caller verifies the hash and moves it into place,
        so an implementation must not verify, cache or rename anything itself.
        """
