"""Session-wide reporting for the integration tests: the trust figures (tests/integration/figures.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from figures import FIGURES, render


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for line in render():
        terminalreporter.write_line(line)
    target = os.environ.get("MEDPERF_FIGURES_FILE")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, default=str) + "\n")
