"""Bounded waiting for the integration tests: facts arrive through the broker a moment later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEADLINE = 10.0


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = DEADLINE, interval: float = 0.02
) -> None:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
