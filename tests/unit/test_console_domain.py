"""The console's pure parts: event filters, the silent-agent rule, folding job events, what the
pending list says to run, and how the terminal renders events, sites, jobs and SSE."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta

import pytest

from cli import console as console_cli
from cli import console_render as render
from cli.client import ApiError
from services.console import domain

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
FAILED = {
    "type": "job.failed",
    "actor": "hospital",
    "site": "site-a",
    "job_id": 4,
    "kind": "run",
    "benchmark_id": 1,
    "model_id": 7,
    "dataset_id": 2,
    "failure": "model",
    "reason": "infer failed: exited with 3",
    "will_retry": False,
    "log_tail": "dying",
}
REQUESTED = {"type": "association.requested", "actor": "bob", "benchmark_id": 1, "kind": "model", "component_id": 7}
EDITED = {"type": "entity.edited", "actor": "alice", "entity": "model", "entity_id": 7, "changes": {}}


def test_filters_keep_events_that_match_every_criterion() -> None:
    assert domain.EventFilter().matches(FAILED)
    assert domain.EventFilter.parse(benchmark=1, site="site-a", types="job.*").matches(FAILED)
    assert not domain.EventFilter.parse(site="site-b").matches(FAILED)
    assert not domain.EventFilter.parse(benchmark=2).matches(FAILED)
    assert not domain.EventFilter.parse(types="association.*,result.reported").matches(FAILED)
    assert domain.EventFilter.parse(types="association.*, result.reported").matches(REQUESTED)
    assert not domain.EventFilter.parse(site="site-a").matches(REQUESTED)  # no site on central events


def test_an_entity_filter_finds_the_entity_in_ids_associations_and_edits() -> None:
    model7 = domain.EventFilter.parse(entity="model:7")
    assert model7.matches(FAILED) and model7.matches(REQUESTED) and model7.matches(EDITED)
    assert not domain.EventFilter.parse(entity="model:8").matches(FAILED)
    assert not domain.EventFilter.parse(entity="dataset:7").matches(REQUESTED)  # kind matters
    assert domain.EventFilter.parse(entity="user:alice").matches(EDITED)
    assert domain.EventFilter.parse(entity="job:4").matches(FAILED)


@pytest.mark.parametrize("text", ["model", "model:", "planet:3", "model:seven"])
def test_an_entity_filter_that_cannot_be_read_says_how_to_write_it(text: str) -> None:
    with pytest.raises(domain.InvalidFilter, match=r"model:7|by its number"):
        domain.parse_entity(text)


def test_an_agent_is_silent_after_three_missed_heartbeats_plus_slack() -> None:
    assert domain.silent(None, 1.0, NOW)  # known only from job events
    assert not domain.silent(NOW - timedelta(seconds=7.9), 1.0, NOW)  # 3 x 1 s + 5 s slack
    assert domain.silent(NOW - timedelta(seconds=8.1), 1.0, NOW)
    assert not domain.silent(NOW - timedelta(seconds=30), None, NOW)  # default: every 10 s
    assert domain.silent(NOW - timedelta(seconds=36), None, NOW)


def test_folding_job_events_keeps_the_failure_and_ignores_older_late_events() -> None:
    queued = {**FAILED, "type": "job.queued", "reason": "association approved"}
    state = domain.fold(None, queued, NOW)
    assert state is not None and state.status == "queued" and state.owner == "hospital"
    state = domain.fold(state, {**FAILED, "type": "job.started", "attempt": 2}, NOW + timedelta(seconds=1))
    assert state is not None and state.status == "running" and state.attempt == 2
    state = domain.fold(state, FAILED, NOW + timedelta(seconds=2))
    assert state is not None and (state.status, state.failure, state.log_tail) == ("failed", "model", "dying")
    # The started event delivered late (another consumer, a retry) must not undo the failure.
    assert domain.fold(state, {**FAILED, "type": "job.started", "attempt": 1}, NOW) is None
    state = domain.fold(state, {**FAILED, "type": "job.succeeded", "held": True}, NOW + timedelta(seconds=3))
    assert state is not None and state.status == "succeeded" and state.held and state.failure is None


def test_pending_items_name_who_decides_and_the_commands_that_do() -> None:
    item = domain.association_decision(
        {"id": 3, "benchmark_id": 1, "kind": "model", "component_id": 7, "initiated_by": "bob",
         "compatibility": {"passed": False}}
    )  # fmt: skip
    assert item["approve"] == "medperf console approve model 7 --benchmark 1"
    assert item["reject"] == "medperf console reject model 7 --benchmark 1"
    assert item["action"] == {"method": "POST", "path": "/benchmarks/1/associations/model/7/decision"}
    assert "test FAILED" in item["summary"]
    bench = domain.benchmark_decision({"id": 5, "name": "b", "owner": "carol"})
    assert bench["approve"] == "medperf console approve benchmark 5" and bench["decides"] == "an admin"
    held = domain.held_result({"job_id": 9, "site": "site-a", "benchmark_id": 1, "model_id": 7, "dataset_id": 2})
    assert held["approve"].startswith("medperf result release 9") and held["action"] is None
    assert held["release"] == {"method": "POST", "path": "/sites/site-a/held-results/release", "body": {"job_ids": [9]}}


def test_event_lines_are_coloured_only_when_asked() -> None:
    item = {"seq": 42, "stored_at": "2026-01-31 12:00:00", "event": {**FAILED, "occurred_at": "2026-01-31T12:00:05Z"}}
    plain = render.event_line(item, colour=False)
    assert "\033[" not in plain and "#42" in plain and "12:00:05" in plain
    assert "model fault (final): infer failed: exited with 3" in plain
    coloured = render.event_line(item, colour=True)
    assert coloured.startswith("12:00:05") and render.COLOURS["red"] in coloured
    assert render.colour_of("association.approved") == "green"
    assert render.colour_of("association.requested") == "yellow"


def test_server_sent_events_are_parsed_and_keep_alives_skipped() -> None:
    lines = ["id: 3", 'data: {"a":1}', "", ": keep-alive", "", "event: live", 'data: {"seq":3}', ""]
    assert list(render.parse_sse(lines)) == [("message", "3", '{"a":1}'), ("live", None, '{"seq":3}')]


def test_since_accepts_ages_and_times_and_explains_anything_else() -> None:
    assert render.since_time("10m", NOW) == NOW - timedelta(minutes=10)
    assert render.since_time("2026-01-31T09:00:00+00:00") == datetime(2026, 1, 31, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="30s, 10m"):
        render.since_time("yesterday")


def test_sites_and_jobs_tables_say_who_is_silent_and_why_jobs_failed() -> None:
    sites = [
        {"site": "site-a", "silent": False, "draining": False, "seconds_since_heartbeat": 1.2, "running": [4],
         "queued": 2, "failed": 0},
        {"site": "ghost", "silent": True, "draining": False, "seconds_since_heartbeat": None, "running": [],
         "queued": 0, "failed": 1},
    ]  # fmt: skip
    text = render.sites_text(sites)
    ghost = next(line for line in text.splitlines() if line.startswith("ghost"))
    assert "SILENT" in ghost and "never" in ghost
    assert "SILENT" not in next(line for line in text.splitlines() if line.startswith("site-a"))
    jobs = render.jobs_text([{**FAILED, "status": "failed", "failure_reason": FAILED["reason"], "attempt": 1}])
    assert "site-a job 4: model fault: infer failed: exited with 3" in jobs and "log tail: dying" in jobs
    assert render.pending_text({"benchmarks": [], "associations": [], "held_results": []}) == (
        "Nothing waits for a decision."
    )


def test_deciding_an_association_from_the_terminal_needs_its_benchmark() -> None:
    parser = argparse.ArgumentParser()
    console_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["console", "approve", "model", "7"])
    with pytest.raises(ApiError, match="--benchmark ID"):
        console_cli.run(args, client=None, out=io.StringIO())  # type: ignore[arg-type]
