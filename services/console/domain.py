"""The console's rules, free of I/O: which events a filter keeps, when an agent counts as silent,
how a job's events fold into its current state, and what waits for whose decision."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: What ``--entity KIND:ID`` can name, and the event fields that refer to each kind.
ENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "benchmark": ("benchmark_id",),
    "model": ("model_id",),
    "dataset": ("dataset_id",),
    "container": ("container_id", "data_preparator_id", "metrics_container_id"),
    "job": ("job_id",),
    "user": ("actor", "user", "owner"),
}

#: An agent heartbeating without saying how often is assumed to use the executor's default.
DEFAULT_HEARTBEAT_SECONDS = 10.0
#: Missed heartbeats before an agent counts as silent, and slack for the agent's clock.
MISSED_BEATS = 3
CLOCK_SLACK_SECONDS = 5.0


class InvalidFilter(ValueError):
    """A filter a user typed that cannot be understood; the message says what to type instead."""


@dataclass(frozen=True)
class EventFilter:
    """Keeps the events that match every criterion given (none given: every event)."""

    benchmark_id: int | None = None
    site: str | None = None
    entity: tuple[str, str] | None = None  # (kind, id as text)
    types: tuple[str, ...] = ()  # exact types or shell patterns: "job.*", "association.*"

    @classmethod
    def parse(
        cls, benchmark: int | None = None, site: str | None = None, entity: str | None = None, types: str | None = None
    ) -> EventFilter:
        return cls(
            benchmark_id=benchmark,
            site=site or None,
            entity=parse_entity(entity) if entity else None,
            types=tuple(t.strip() for t in (types or "").split(",") if t.strip()),
        )

    def matches(self, event: dict[str, Any]) -> bool:
        if self.benchmark_id is not None and event.get("benchmark_id") != self.benchmark_id:
            return False
        if self.site is not None and event.get("site") != self.site:
            return False
        if self.types and not any(fnmatch.fnmatchcase(str(event.get("type", "")), p) for p in self.types):
            return False
        return self.entity is None or mentions(event, *self.entity)


def parse_entity(text: str) -> tuple[str, str]:
    kind, sep, ident = text.partition(":")
    kind, ident = kind.strip().lower(), ident.strip()
    if not sep or kind not in ENTITY_FIELDS or not ident:
        kinds = ", ".join(ENTITY_FIELDS)
        raise InvalidFilter(f"entity {text!r}: write KIND:ID with KIND one of {kinds}, e.g. model:7 or user:alice")
    if kind != "user" and not ident.isdigit():
        raise InvalidFilter(f"entity {text!r}: a {kind} is named by its number, e.g. {kind}:7")
    return kind, ident


def mentions(event: dict[str, Any], kind: str, ident: str) -> bool:
    """Does ``event`` concern the entity? Its own id fields, an association's component, an edit's target."""
    if any(str(event.get(name)) == ident for name in ENTITY_FIELDS[kind] if event.get(name) is not None):
        return True
    if event.get("kind") == kind and str(event.get("component_id")) == ident:  # association events
        return True
    return event.get("entity") == kind and str(event.get("entity_id")) == ident  # edits and deletions


def silent(last_heartbeat: datetime | None, every: float | None, now: datetime) -> bool:
    """An agent is silent when it missed ``MISSED_BEATS`` heartbeats (plus slack for its clock),
    or was only ever heard of through its job events."""
    if last_heartbeat is None:
        return True
    interval = every if every and every > 0 else DEFAULT_HEARTBEAT_SECONDS
    return (now - last_heartbeat).total_seconds() > MISSED_BEATS * interval + CLOCK_SLACK_SECONDS


@dataclass
class JobState:
    """What the console knows of one job, folded from its events."""

    status: str
    kind: str
    benchmark_id: int
    model_id: int | None
    dataset_id: int | None
    owner: str
    last_event_at: datetime
    queued_reason: str = ""
    attempt: int = 0
    failure: str | None = None
    failure_reason: str = ""
    will_retry: bool = False
    log_tail: str = ""
    held: bool = False
    partial: bool = False


def fold(state: JobState | None, event: dict[str, Any], occurred_at: datetime) -> JobState | None:
    """The job's state after ``event``; None when the event is older than what is known (each
    transition type has its own consumer, so a late one must not undo a newer one)."""
    if state is not None and occurred_at < state.last_event_at:
        return None
    if state is None:
        state = JobState(
            status="queued",
            kind=event.get("kind", "run"),
            benchmark_id=event["benchmark_id"],
            model_id=event.get("model_id"),
            dataset_id=event.get("dataset_id"),
            owner=event.get("actor", ""),
            last_event_at=occurred_at,
        )
    state.last_event_at = occurred_at
    kind = event["type"]
    if kind == "job.queued":
        state.status, state.queued_reason = "queued", event.get("reason", "")
    elif kind == "job.started":
        state.status, state.attempt = "running", event.get("attempt", state.attempt + 1)
    elif kind == "job.succeeded":
        state.status, state.held, state.partial = "succeeded", event.get("held", False), event.get("partial", False)
        state.failure, state.failure_reason, state.will_retry = None, "", False
    elif kind == "job.failed":
        state.status = "failed"
        state.failure, state.failure_reason = event.get("failure"), event.get("reason", "")
        state.will_retry, state.log_tail = event.get("will_retry", False), event.get("log_tail", "")
    elif kind == "job.log_released":
        state.log_tail = event.get("log_tail", "")
    elif kind == "job.cancelled":
        state.status = "cancelled"
    return state


@dataclass(frozen=True)
class Reader:
    """A non-admin reading jobs, and what they own as the registry's events told the console: a
    data owner reads their sites' jobs, a model owner their models' at every site, a committee
    every job of its benchmarks (``handlers.list_jobs`` asks the database for exactly those)."""

    user: str
    models: frozenset[int]
    benchmarks: frozenset[int]


def association_decision(item: dict[str, Any]) -> dict[str, Any]:
    """A pending association as the console shows it: what it is, and the commands that decide it."""
    bench, kind, component = item["benchmark_id"], item["kind"], item["component_id"]
    target = f"{kind} {component} --benchmark {bench}"
    path = f"/benchmarks/{bench}/associations/{kind}/{component}/decision"
    compatibility = item.get("compatibility") or {}
    tested = "" if not compatibility else " (test passed)" if compatibility.get("passed") else " (test FAILED)"
    return {
        "what": "association",
        "id": item["id"],
        "benchmark_id": bench,
        "kind": kind,
        "component_id": component,
        "summary": f"{kind} {component} asks to join benchmark {bench}; asked by {item.get('initiated_by')}{tested}",
        "decides": "the other party (benchmark committee or component owner), or an admin",
        "approve": f"medperf console approve {target}",
        "reject": f"medperf console reject {target}",
        "action": {"method": "POST", "path": path},
    }


def benchmark_decision(item: dict[str, Any]) -> dict[str, Any]:
    bench = item["id"]
    return {
        "what": "benchmark",
        "id": bench,
        "benchmark_id": bench,
        "summary": f"benchmark {bench} {item.get('name', '')!r} submitted by {item.get('owner')}",
        "decides": "an admin",
        "approve": f"medperf console approve benchmark {bench}",
        "reject": f"medperf console reject benchmark {bench}",
        "action": {"method": "POST", "path": f"/benchmarks/{bench}/decision"},
    }


def held_result(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "what": "held_result",
        "id": item["job_id"],
        "benchmark_id": item["benchmark_id"],
        "model_id": item.get("model_id"),
        "dataset_id": item.get("dataset_id"),
        "site": item["site"],
        "summary": f"result of model {item.get('model_id')} on dataset {item.get('dataset_id')} at {item['site']} "
        f"is held for its data owner ({item.get('owner')})",
        "decides": f"the data owner of site {item['site']}",
        "approve": f"medperf result release {item['job_id']}  (run at site {item['site']})",
        "reject": None,
        # Not an approve/reject ``action``: only the site's data owner releases, with this body,
        # and the site's agent acts on it (services/ingress/routes_consent.py).
        "action": None,
        "release": {
            "method": "POST",
            "path": f"/sites/{item['site']}/held-results/release",
            "body": {"job_ids": [item["job_id"]]},
        },
    }
