"""How the terminal console shows things: one line per event (coloured on a terminal), and tables
of pending decisions, sites, jobs and dead letters. Pure functions of the API's JSON."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

RESET = "\033[0m"
COLOURS = {"red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "magenta": "\033[35m", "cyan": "\033[36m"}


def colour_of(event_type: str) -> str:
    """Failures red, good news green, things waiting yellow, refusals magenta, the rest cyan."""
    if event_type.endswith(("failed", "deleted", "revoked")) or event_type == "unreadable":
        return "red"
    if event_type.endswith(("succeeded", "approved", "reported", "tested")):
        return "green"
    if event_type.endswith(("requested", "queued", "submitted", "started")):
        return "yellow"
    if event_type.endswith(("rejected", "cancelled")):
        return "magenta"
    return "cyan"


def describe(event: dict[str, Any]) -> str:
    """The facts of an event worth a glance, in words."""
    parts = []
    for key in ("site", "benchmark_id", "kind", "model_id", "dataset_id", "component_id", "job_id", "entity", "name"):
        if event.get(key) is not None and event.get(key) != "":
            label = key.removesuffix("_id")
            parts.append(f"{label} {event[key]}" if key != "kind" else f"{event[key]}")
    if event.get("entity_id") is not None:
        parts.append(f"#{event['entity_id']}")
    if event.get("type") == "job.failed":
        retry = "will retry" if event.get("will_retry") else "final"
        parts.append(f"-- {event.get('failure')} fault ({retry}): {event.get('reason', '')}")
    elif event.get("reason"):
        parts.append(f"-- {event['reason']}")
    if event.get("type") == "job.progress":
        parts.append(progress_text(event))
    if event.get("metrics"):
        parts.append(" ".join(f"{k}={v:.4g}" for k, v in event["metrics"].items() if isinstance(v, int | float)))
    if event.get("held"):
        parts.append("(held for the data owner)")
    if event.get("type") == "unreadable":
        parts.append(repr(event.get("raw", ""))[:120])
    return " ".join(str(p) for p in parts)


def progress_text(event: dict[str, Any]) -> str:
    """A job.progress event's stage, count and report summary (an aggregate: no case in it)."""
    text = f"-- {event.get('stage')}"
    if event.get("total") is not None:
        text += f": {event.get('done') or 0} of {event['total']}"
    report = event.get("report")
    if isinstance(report, dict):
        statuses = ", ".join(f"{k}: {v}" for k, v in (report.get("statuses") or {}).items())
        text += f"; report: {report.get('cases')} cases" + (f" ({statuses})" if statuses else "")
    if event.get("message"):
        text += f" ({event['message']})"
    return text


def event_line(item: dict[str, Any], colour: bool) -> str:
    event = item["event"]
    when = str(event.get("occurred_at") or item.get("stored_at") or "")[11:19]
    kind = str(event.get("type", "?"))
    label = f"{kind:28}"
    if colour:
        label = f"{COLOURS[colour_of(kind)]}{label}{RESET}"
    return f"{when}  #{item['seq']:<6} {label} {event.get('actor', ''):14} {describe(event)}".rstrip()


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, str | None, str]]:
    """(event name, id, data) for each server-sent event; comments (keep-alives) are skipped."""
    name, ident, data = "message", None, []
    for line in lines:
        if not line:
            if data:
                yield name, ident, "\n".join(data)
            name, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
            elif field == "id":
                ident = value


RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")


def since_time(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1d`` ago, or an ISO 8601 time (without a zone: this machine's local time)."""
    if match := RELATIVE.match(text.strip()):
        amount, unit = int(match.group(1)), match.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        hint = "give an ISO time (2026-01-31T09:00) or an age (30s, 10m, 2h, 1d)"
        raise ValueError(f"--since {text!r}: {hint}") from None
    return moment if moment.tzinfo else moment.astimezone()


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def pending_text(pending: dict[str, list[dict[str, Any]]]) -> str:
    sections = []
    titles = {
        "benchmarks": "Benchmarks waiting for an admin",
        "associations": "Associations waiting for a decision",
        "held_results": "Results held at sites for their data owners",
    }
    for key, title in titles.items():
        items = pending.get(key, [])
        if not items:
            continue
        lines = [f"{title} ({len(items)})"]
        for item in items:
            lines.append(f"  - {item['summary']}; decided by {item['decides']}")
            lines.append(f"      approve: {item['approve']}")
            if item.get("reject"):
                lines.append(f"      reject:  {item['reject']}")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) or "Nothing waits for a decision."


def sites_text(sites: list[dict[str, Any]]) -> str:
    if not sites:
        return "No site agent has been heard of yet."
    rows = []
    for s in sites:
        age = s.get("seconds_since_heartbeat")
        beat = "never" if age is None else f"{age:.0f}s ago"
        state = "SILENT" if s["silent"] else "draining" if s.get("draining") else "ok"
        running = ",".join(str(j) for j in s["running"]) or "-"
        rows.append([s["site"], state, beat, running, str(s["queued"]), str(s["failed"])])
    return table(["site", "state", "heartbeat", "running jobs", "queued", "failed"], rows)


def jobs_text(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "No jobs."
    rows, failures = [], []
    for j in jobs:
        what = f"b{j['benchmark_id']} m{j.get('model_id') or '-'} d{j.get('dataset_id') or '-'}"
        status = j["status"] + (" (held)" if j.get("held") else "") + (" (retrying)" if j.get("will_retry") else "")
        rows.append([j["site"], str(j["job_id"]), j["kind"], what, status, str(j.get("attempt") or "-")])
        if j["status"] == "failed":
            failures.append(
                f"{j['site']} job {j['job_id']}: {j.get('failure')} fault: {j.get('failure_reason')}"
                + (f"\n    log tail: {j['log_tail'].strip()[-400:]}" if j.get("log_tail") else "")
            )
    out = table(["site", "job", "kind", "what", "status", "attempt"], rows)
    return out + ("\n\nWhy jobs failed:\n" + "\n".join(failures) if failures else "")


def dead_letters_text(letters: list[dict[str, Any]]) -> str:
    if not letters:
        return "No dead letters."
    rows = [[str(d["sequence"]), d["service"], d["subject"], str(d["deliveries"]), d["reason"][:100]] for d in letters]
    out = table(["seq", "service", "subject", "tries", "reason"], rows)
    hint = "retry: medperf console dead-letters retry SEQ    discard: medperf console dead-letters discard SEQ"
    return f"{out}\n\n{hint}"
