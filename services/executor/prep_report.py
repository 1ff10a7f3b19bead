"""A MedPerf data preparator's report file, read while it is being written.

MedPerf's preparators (the RANO pipeline, ``examples/DataPrepManualSteps``) keep a report of every
case as they go: a pandas frame dumped as YAML, column first (``{status: {case: 2.0}, comment:
{case: ...}}``); some write one mapping per case instead (``{case: {status: ...}}``). MedPerf sends
the share of cases per status to its server. Here the file is read a bounded number of bytes at a
time, and a half-written one (the container rewrites it in place) is skipped until the next look.

The report is keyed by case (subject id): per-case output, which never leaves the site. What may
leave is ``summarise``'s aggregate only: how many cases, and how many at each status value. Its
last lines, verbatim, go to the site's own database for the data owner's terminal.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from services.executor.progress import Progress
from shared.events import REPORT_STATUS_KEYS, ReportSummary

#: The largest report summarised (MedPerf's RANO report runs to ~1 KiB per case); past it, only its
#: last lines are shown, and the progress says why there is no summary.
REPORT_READ_BYTES = 4 << 20
#: What the data owner's terminal shows of it: the last lines, each cut to a width.
REPORT_LINES = 10
LINE_CHARS = 200
TAIL_BYTES = REPORT_LINES * (LINE_CHARS + 1) * 4
#: A status value that is text counts under its own name only if it looks like a label.
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_ .-]{0,31}")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def report_path(output: Path) -> Path | None:
    """The report file a task writes to ``output`` (the file, or a directory holding it)."""
    if output.is_file():
        return output
    if output.is_dir():
        files = [entry for entry in os.scandir(output) if entry.is_file()]
        if files:
            return Path(max(files, key=lambda entry: entry.stat().st_mtime_ns).path)
    return None


def read(output: Path, stage: str = "prepare") -> Progress | None:
    """The report as progress: its aggregate and its last lines; None while there is none."""
    path = report_path(output)
    if path is None:
        return None
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return None
            handle.seek(max(0, size - (REPORT_READ_BYTES if size <= REPORT_READ_BYTES else TAIL_BYTES)))
            data = handle.read(REPORT_READ_BYTES)
    except OSError:  # replaced while we looked
        return None
    text = data.decode("utf-8", errors="replace")
    lines = tuple(line[:LINE_CHARS] for line in text.splitlines() if line.strip())[-REPORT_LINES:]
    if size > REPORT_READ_BYTES:
        return Progress(stage, message="the preparator's report is too large to summarise", lines=lines)
    return Progress(stage, report=summarise(_parse(text)), lines=lines)


class ReportReader:
    """``read`` of one task's report for ``watching``: again only when the file changed (its size or
    time), and no sooner than ten times the last read took, so that parsing a large report (pure
    Python YAML where libyaml is missing) never takes more than a tenth of a core."""

    def __init__(self, output: Path, stage: str = "prepare", clock: Callable[[], float] = time.monotonic) -> None:
        self.output, self.stage, self.clock = output, stage, clock
        self._seen: tuple[int, int] | None = None
        self._last: Progress | None = None
        self._next_at = 0.0

    def __call__(self) -> Progress | None:
        path = report_path(self.output)
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            return self._last
        seen = (stat.st_mtime_ns, stat.st_size) if stat is not None else None
        if seen == self._seen or self.clock() < self._next_at:
            return self._last
        started = self.clock()
        found = read(self.output, self.stage)
        self._next_at = self.clock() + 10 * (self.clock() - started)
        if found is not None and found.report is None and not found.message and self._last is not None:
            found = replace(found, report=self._last.report)  # half-written: the last whole count stands
        self._seen, self._last = seen, found if found is not None else self._last
        return self._last


def _parse(text: str) -> Any:
    try:
        if text.lstrip().startswith(("{", "[")):
            return json.loads(text)
        return yaml.load(text, Loader=_Loader)  # a safe loader: the C one where built
    except (ValueError, yaml.YAMLError):  # half-written: the next look finds it whole
        return None


def summarise(report: Any) -> ReportSummary | None:
    """How many cases the report lists, and how many at each status value; no case ids, no text
    but short status labels that are not themselves a case's id."""
    if not isinstance(report, dict):
        return None
    status = report.get("status")
    if isinstance(status, dict):  # column first, as pandas writes it
        cases = {str(case) for column in report.values() if isinstance(column, dict) for case in column}
        values = list(status.values())
    else:  # one mapping per case
        rows = {str(case): row for case, row in report.items() if isinstance(row, dict)}
        cases = set(rows)
        values = [row["status"] for row in rows.values() if "status" in row]
    counts = Counter(_label(value, cases) for value in values)
    counts.pop(None, None)
    kept = dict(counts.most_common(REPORT_STATUS_KEYS - 1))
    rest = sum(counts.values()) - sum(kept.values())
    if rest:
        kept["other"] = kept.get("other", 0) + rest
    return ReportSummary(cases=len(cases), statuses={str(k): v for k, v in kept.items()})


def _label(value: Any, cases: set[str]) -> str | None:
    label = _plain(value, cases)
    return "other" if label is not None and len(label) > 32 else label


def _plain(value: Any, cases: set[str]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(value, "g") if math.isfinite(value) else "other"
    if isinstance(value, str) and _LABEL.fullmatch(value) and value not in cases:
        return value
    return "other"  # free text, or something that could name a case
