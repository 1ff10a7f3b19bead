"""The figures the trust tests report: each test records its counts here, and the session prints
them all at the end (``conftest.pytest_terminal_summary``), so they show without ``-s``.
``MEDPERF_FIGURES_FILE=path.json`` also writes them as JSON, for docs/reliability.md."""

from __future__ import annotations

from typing import Any

FIGURES: dict[str, dict[str, Any]] = {}


def record(section: str, **values: Any) -> None:
    FIGURES.setdefault(section, {}).update(values)
    print(f"\n[figures] {section}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def render() -> list[str]:
    lines = []
    for section, values in FIGURES.items():
        lines.append(f"{section}:")
        lines.extend(f"  {key}: {value}" for key, value in values.items())
    return lines
