"""Test data of any size without holding it in memory (tests/ is on sys.path via its conftest)."""

from __future__ import annotations

import io


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read as a file: archives of any size without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n
