"""The admin console's endpoints against the real services on a real nats-server and SQLite: the
sites read model fed by job events and heartbeats, the event feed (history, filters, live), what
waits for decisions, dead letters retried and discarded, and the terminal commands on top.

Site agents are stood in for by publishing the events an agent publishes (no container engine
needed); tests/integration/test_console_browser.py runs real agents."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from waiting import eventually

from cli import console as console_cli
from cli.client import ApiError, Client
from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.events import (
    DeadLetter,
    Event,
    JobFailed,
    JobQueued,
    JobStarted,
    JobSucceeded,
    ResultReported,
    SiteHeartbeat,
)
from shared.settings import Settings
from shared.streams import heartbeat_subject

TOKENS = {"admin": "t-admin", "committee": "t-committee", "hospital": "t-hospital", "stranger": "t-stranger"}
DIGEST = "sha256:" + "a" * 64


@dataclass
class Console:
    url: str
    nc: nats.NATS
    http: dict[str, httpx.AsyncClient]

    async def publish(self, event: Event) -> None:
        await self.nc.jetstream().publish(event.subject, event.model_dump_json().encode())

    async def beat(self, site: str, at: datetime, **fields: Any) -> None:
        beat = SiteHeartbeat(site=site, at=at, **fields)
        await self.nc.jetstream().publish(heartbeat_subject(site), beat.model_dump_json().encode())

    async def get(self, user: str, path: str, **params: Any) -> Any:
        response = await self.http[user].get(path, params=params)
        assert response.status_code == 200, f"{path} as {user}: {response.status_code} {response.text}"
        return response.json()

    async def feed(self, user: str = "admin", **params: Any) -> list[dict]:
        """The history the feed sends with follow=false (from the start unless told), as parsed SSE data."""
        if not {"since_seq", "since_time", "last"} & params.keys():
            params["since_seq"] = 1
        response = await self.http[user].get("/console/events", params={"follow": "false", **params})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        assert data and "event" not in data[-1], "the history ends with the 'live' marker"
        return data[:-1]

    def cli(self, user: str, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        parser_args = _parse(["console", *argv])
        try:
            code = console_cli.run(parser_args, Client(self.url, TOKENS[user], patience=2.0), out)
        except ApiError as exc:
            return 1, exc.message
        return code, out.getvalue()


def _parse(argv: list[str]) -> Any:
    parser = argparse.ArgumentParser()
    console_cli.add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.fixture
async def console(tmp_path: Path, nats_url: str) -> AsyncIterator[Console]:
    settings = Settings(
        nats_url=nats_url,
        state_dir=tmp_path,
        http_port=0,
        admins=["admin"],
        max_deliveries=2,
        api_token_digests={token_digest(t): user for user, t in TOKENS.items()},
    )
    async with Stack(settings) as stack:
        assert stack.ingress is not None
        http = {
            u: httpx.AsyncClient(base_url=stack.ingress.url, headers={"Authorization": f"Bearer {t}"})
            for u, t in TOKENS.items()
        }
        http["anonymous"] = httpx.AsyncClient(base_url=stack.ingress.url)
        nc = await nats.connect(nats_url)
        try:
            yield Console(stack.ingress.url, nc, http)
        finally:
            await nc.close()
            for client in http.values():
                await client.aclose()


def job(event_type: type, site: str = "hospital-x", job_id: int = 1, **fields: Any) -> Any:
    return event_type(actor="hospital", site=site, job_id=job_id, benchmark_id=1, model_id=5, dataset_id=2, **fields)


async def test_sites_show_heartbeats_jobs_failures_and_silent_agents(console: Console) -> None:
    now = datetime.now(UTC)
    await console.beat("hospital-x", now, running=[2], queued=1, every=1.0)
    await console.beat("ghost", now - timedelta(hours=1), every=1.0)  # stopped an hour ago
    await console.publish(job(JobQueued, reason="association 3 approved"))
    await console.publish(job(JobStarted, attempt=1))
    await console.publish(
        job(JobFailed, failure="model", reason="the model's container exited with 3", log_tail="Traceback: boom")
    )
    await console.publish(job(JobQueued, job_id=2, reason="association 4 approved"))
    await console.publish(job(JobStarted, job_id=2, attempt=1))
    await console.publish(job(JobQueued, job_id=3, reason="association 5 approved"))

    async def settled() -> list[dict] | None:
        sites = await console.get("admin", "/console/sites")
        x = next((s for s in sites if s["site"] == "hospital-x"), None)
        return sites if len(sites) == 2 and x and x["failed"] == 1 and x["running"] == [2] else None

    await eventually(settled, "the console to fold the heartbeats and job events")
    sites = {s["site"]: s for s in await console.get("admin", "/console/sites")}
    assert sites["hospital-x"]["silent"] is False and sites["hospital-x"]["queued"] == 1
    assert sites["ghost"]["silent"] is True and sites["ghost"]["seconds_since_heartbeat"] > 3000

    (failed,) = await console.get("admin", "/console/jobs", status="failed")
    assert failed["failure"] == "model" and failed["failure_reason"] == "the model's container exited with 3"
    assert failed["log_tail"] == "Traceback: boom" and failed["will_retry"] is False

    code, text = await asyncio.to_thread(console.cli, "admin", "sites")
    assert code == 0 and "ghost" in text and "SILENT" in text
    code, text = await asyncio.to_thread(console.cli, "admin", "jobs", "--status", "failed")
    assert "model fault: the model's container exited with 3" in text and "Traceback: boom" in text

    # Admins only, decided by the ingress before any service is asked.
    assert (await console.http["committee"].get("/console/sites")).status_code == 403
    assert (await console.http["anonymous"].get("/console/jobs")).status_code == 401


async def test_the_feed_replays_history_with_filters_and_then_streams_live(console: Console) -> None:
    await console.publish(job(JobQueued, reason="first"))
    await console.publish(job(JobQueued, site="hospital-y", job_id=7, reason="other site"))
    await console.publish(job(JobStarted, attempt=1))

    async def three() -> list[dict]:
        return len(await console.feed(type="job.*")) == 3

    await eventually(three, "three job events in the feed")
    everything = await console.feed(type="job.*")
    assert [e["event"]["type"] for e in everything] == ["job.queued", "job.queued", "job.started"]
    x_only = await console.feed(site="hospital-x")
    assert [e["event"]["reason"] for e in x_only if "reason" in e["event"]] == ["first"]
    assert [e["event"]["job_id"] for e in await console.feed(entity="job:7")] == [7]
    later = await console.feed(since_seq=everything[1]["seq"])
    assert [e["seq"] for e in later] == [everything[1]["seq"], everything[2]["seq"]]
    assert len(await console.feed(last=1)) == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await console.feed(since_time=future) == []

    # Live: a consumer that follows sees an event published after it connected.
    async with console.http["admin"].stream("GET", "/console/events", params={"type": "job.failed"}) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()

        async def next_data() -> dict:
            async for line in lines:
                if line.startswith("data: ") and "event" in json.loads(line[6:]):
                    return json.loads(line[6:])
            raise AssertionError("the feed ended")

        await console.publish(job(JobFailed, failure="infrastructure", reason="disk full", will_retry=True))
        arrived = await asyncio.wait_for(next_data(), timeout=10)
        assert arrived["event"]["reason"] == "disk full"

    refused = await console.http["admin"].get("/console/events", params={"entity": "model:seven", "follow": "false"})
    assert refused.status_code == 422 and "model:7" in refused.json()["error"]
    # Every user reads the feed, filtered to what they own: this committee owns nothing here yet.
    assert await console.feed("committee") == []

    argv = ("events", "--no-follow", "--since-seq", "1", "--type", "job.*", "--site", "hospital-x")
    code, text = await asyncio.to_thread(console.cli, "admin", *argv)
    assert code == 0 and "job.queued" in text and "hospital-y" not in text
    assert "\033[" not in text  # no colour off a terminal


async def _benchmark(console: Console) -> int:
    c = console.http["committee"]

    async def post(path: str, body: dict) -> int:
        response = await c.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def spec(*tasks: str) -> dict:
        return {"image": "localhost/x:1", "image_digest": DIGEST, "tasks": {t: {"command": [t]} for t in tasks}}

    prep = await post("/containers", {"name": "prep", "spec": spec("prepare", "sanity_check", "statistics")})
    metrics = await post("/containers", {"name": "metrics", "spec": spec("evaluate")})
    ref = await post(
        "/models", {"name": "ref", "container_id": await post("/containers", {"name": "r", "spec": spec("infer")})}
    )
    body = {
        "name": "bench",
        "data_preparator_id": prep,
        "reference_model_id": ref,
        "metrics_container_id": metrics,
        "demo_dataset": {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64},
        "metrics": [{"name": "auc"}],
        "primary_metric": "auc",
    }
    return await post("/benchmarks", body)


async def test_pending_lists_decisions_with_their_commands_and_the_commands_decide(console: Console) -> None:
    benchmark = await _benchmark(console)
    await console.publish(job(JobSucceeded, job_id=9, held=True))

    async def both() -> dict | None:
        pending = await console.get("admin", "/console/pending")
        return pending if pending["benchmarks"] and pending["held_results"] else None

    await eventually(both, "the pending benchmark and the held result")
    pending = await console.get("admin", "/console/pending")
    (item,) = pending["benchmarks"]
    assert item["approve"] == f"medperf console approve benchmark {benchmark}"
    assert item["action"] == {"method": "POST", "path": f"/benchmarks/{benchmark}/decision"}
    (held,) = pending["held_results"]
    assert held["approve"].startswith("medperf result release 9") and held["site"] == "hospital-x"
    # The data owner sees its own site's held result; a stranger sees nothing of it.
    assert len((await console.get("hospital", "/console/pending"))["held_results"]) == 1
    stranger = await console.get("stranger", "/console/pending")
    assert stranger == {"benchmarks": [], "associations": [], "held_results": []}

    code, text = await asyncio.to_thread(console.cli, "admin", "pending")
    assert code == 0 and f"approve: medperf console approve benchmark {benchmark}" in text
    code, text = await asyncio.to_thread(console.cli, "committee", "approve", "benchmark", str(benchmark))
    assert code == 1 and "admins only" in text
    code, text = await asyncio.to_thread(console.cli, "admin", "approve", "benchmark", str(benchmark))
    assert code == 0 and "approved" in text

    async def decided() -> bool:  # the registry hears of the decision from the approvals' event
        return (await console.get("admin", "/console/pending"))["benchmarks"] == []

    await eventually(decided, "the approved benchmark gone from the pending list")

    # Releasing the result at the site ends the wait.
    released = ResultReported(
        actor="hospital",
        site="hospital-x",
        benchmark_id=1,
        model_id=5,
        dataset_id=2,
        metrics={"auc": 0.8},
        container_digests={},
        dataset_hash="h",
    )
    await console.publish(released)

    async def cleared() -> bool:
        return (await console.get("admin", "/console/pending"))["held_results"] == []

    await eventually(cleared, "the released result to leave the pending list")


async def test_dead_letters_are_listed_retried_and_discarded(console: Console) -> None:
    js = console.nc.jetstream()
    # A message no consumer can read: the console's own consumer parks it at once with the reason.
    await js.publish("medperf.site.hospital-x.job.failed", b"{not json")
    # A letter whose message is fine (as if the handler had failed for a passing reason).
    event = job(JobQueued, site="hospital-z", job_id=4, reason="retried from a dead letter")
    letter = DeadLetter(
        service="console",
        consumer="console-jobs",
        subject=event.subject,
        reason="failed 2 times; last error: boom",
        deliveries=2,
        payload=event.model_dump_json(),
    )
    await js.publish("medperf.deadletter.console", letter.model_dump_json().encode())

    async def two() -> list[dict] | None:
        letters = await console.get("admin", "/console/dead-letters")
        return letters if len(letters) >= 2 else None

    await eventually(two, "both dead letters")
    letters = await console.get("admin", "/console/dead-letters")
    broken = next(d for d in letters if d["payload"] == "{not json")
    assert broken["reason"].startswith("rejected: malformed") and broken["subject"].endswith("job.failed")
    fine = next(d for d in letters if d["subject"] == event.subject)

    code, text = await asyncio.to_thread(console.cli, "admin", "dead-letters", "retry", str(fine["sequence"]))
    assert code == 0 and event.subject in text

    async def handled() -> list[dict]:
        return await console.get("admin", "/console/jobs", site="hospital-z")

    await eventually(handled, "the retried event to reach the console's jobs")
    assert (await handled())[0]["queued_reason"] == "retried from a dead letter"

    deleted = await console.http["admin"].delete(f"/console/dead-letters/{broken['sequence']}")
    assert deleted.status_code == 200
    remaining = {d["sequence"] for d in await console.get("admin", "/console/dead-letters")}
    assert broken["sequence"] not in remaining and fine["sequence"] not in remaining
    again = await console.http["admin"].delete(f"/console/dead-letters/{broken['sequence']}")
    assert again.status_code == 404 and "retried or discarded" in again.json()["error"]
    assert (await console.http["committee"].get("/console/dead-letters")).status_code == 403


async def test_the_web_page_is_served_without_a_token_and_needs_no_internet(console: Console) -> None:
    response = await console.http["anonymous"].get("/console")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/console/events" in page and "Authorization" in page
    assert "http://" not in page and "https://" not in page  # no CDN: everything is inline
