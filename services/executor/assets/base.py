"""The contract between the cache and the places files are hosted."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

#: Called as bytes arrive: ``on_progress(done_bytes, total_bytes_or_None)``. ``done_bytes`` can go
#: back to 0 when a source has to restart a transfer from the beginning.
ProgressCallback = Callable[[int, int | None], None]


class StreamHasher:
    """A sha256 fed as bytes are written, so a download is hashed in the same pass that stores it.

    It wraps hashlib rather than being a bare ``hashlib.sha256()`` because a source sometimes has to
    throw away what it received (a server that ignores a resume request resends the whole file),
    and a hashlib object cannot be rewound.
    """

    def __init__(self, on_progress: ProgressCallback | None = None) -> None:
        self._digest = hashlib.sha256()
        self._on_progress = on_progress
        self.done = 0
        self.total: int | None = None

    def expect(self, total: int | None) -> None:
        """Record the full size of the file once a source learns it (for progress reports)."""
        self.total = total

    def update(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.done += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.done, self.total)

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
