"""What the integration tests share: a client of the test's nats-server, and session-wide reporting
of the trust figures (tests/integration/figures.py)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from figures import FIGURES, render


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    """A plain nats-py client of the test's nats-server."""
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for line in render():
        terminalreporter.write_line(line)
    target = os.environ.get("MEDPERF_FIGURES_FILE")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, default=str) + "\n")
