"""The live feed (``GET /console/events``) for every signed-in user, filtered by the ingress to what
each one owns: real services, a real nats-server and SQLite, owners from real registrations through
the HTTP API; the sites are stood in for by publishing the job events an agent publishes.

hospital owns dataset at site hospital-a, clinic one at clinic-b; modeler owns a model associated
with the committee's benchmark; both sites fail the modeler's model and share their log tails."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import pytest
from users import central_settings
from waiting import eventually

from cli.stack import Stack
from shared.events import Event, JobFailed, JobQueued

USERS = ("admin", "committee", "modeler", "hospital", "clinic", "stranger", "newcomer")
DIGEST = "sha256:" + "a" * 64
TAIL = "Traceback: case 17 (age 54) broke the model"


@dataclass
class World:
    http: dict[str, httpx.AsyncClient]
    nc: nats.NATS
    ids: dict[str, int]

    async def publish(self, event: Event) -> None:
        await self.nc.jetstream().publish(event.subject, event.model_dump_json().encode())

    async def post(self, user: str, path: str, body: dict) -> dict:
        for _ in range(200):  # 404/409/503 while a service catches up on another's events
            response = await self.http[user].post(path, json=body)
            if response.status_code not in (404, 409, 503):
                break
            await asyncio.sleep(0.05)
        assert response.status_code in (200, 201), f"{path} as {user}: {response.text}"
        return response.json()

    async def feed(self, user: str) -> list[dict]:
        """The whole history this user receives (follow=false), as parsed SSE data."""
        response = await self.http[user].get("/console/events", params={"follow": "false", "since_seq": 1})
        assert response.status_code == 200, response.text
        data = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
        return data[:-1]  # the 'live' marker last


def spec(*tasks: str) -> dict:
    return {"image": "x/y:1", "image_digest": DIGEST, "tasks": {task: {"command": ["true"]} for task in tasks}}


def dataset(name: str, site: str, prep: int) -> dict:
    return {
        "name": name,
        "site": site,
        "data_preparator_id": prep,
        "input_hash": "1" * 64,
        "prepared_hash": hashlib.sha256(name.encode()).hexdigest(),
        "statistics": {"cases": 10},
    }


@pytest.fixture
async def world(tmp_path: Path, nats_url: str) -> AsyncIterator[World]:
    settings = central_settings(tmp_path, {u: f"t-{u}" for u in USERS}, nats_url=nats_url)
    async with Stack(settings) as stack:
        assert stack.ingress is not None
        http = {
            u: httpx.AsyncClient(base_url=stack.ingress.url, headers={"Authorization": f"Bearer t-{u}"}, timeout=30)
            for u in USERS
        }
        nc = await nats.connect(nats_url)
        try:
            w = World(http, nc, {})
            await _register(w)
            yield w
        finally:
            await nc.close()
            for client in http.values():
                await client.aclose()


async def _register(w: World) -> None:
    async def post(user: str, path: str, body: dict) -> int:
        return (await w.post(user, path, body))["id"]

    prep = w.ids["prep"] = await post(
        "committee", "/containers", {"name": "prep", "spec": spec("prepare", "sanity_check", "statistics")}
    )
    ref = await post(
        "committee",
        "/models",
        {"name": "ref", "container_id": await post("committee", "/containers", {"name": "r", "spec": spec("infer")})},
    )
    metrics = await post("committee", "/containers", {"name": "metrics", "spec": spec("evaluate")})
    body = {
        "name": "bench",
        "data_preparator_id": prep,
        "reference_model_id": ref,
        "metrics_container_id": metrics,
        "demo_dataset": {"source": "https://example.org/demo.tgz", "sha256": "ab" * 32},
        "metrics": [{"name": "auc"}],
        "primary_metric": "auc",
    }
    benchmark = w.ids["benchmark"] = await post("committee", "/benchmarks", body)
    await w.post("admin", f"/benchmarks/{benchmark}/decision", {"approve": True})
    container = await post("modeler", "/containers", {"name": "m-c", "spec": spec("infer"), "state": "OPERATION"})
    model = w.ids["model"] = await post(
        "modeler", "/models", {"name": "m", "container_id": container, "state": "OPERATION"}
    )
    w.ids["hospital"] = await post("hospital", "/datasets", dataset("h", "hospital-a", prep))
    w.ids["clinic"] = await post("clinic", "/datasets", dataset("c", "clinic-b", prep))
    await w.post("modeler", f"/benchmarks/{benchmark}/associations", {"kind": "model", "component_id": model})


def failed(w: World, site: str, owner: str, job_id: int) -> JobFailed:
    return JobFailed(
        actor=owner,
        site=site,
        job_id=job_id,
        benchmark_id=w.ids["benchmark"],
        model_id=w.ids["model"],
        dataset_id=w.ids["hospital" if site == "hospital-a" else "clinic"],
        failure="model",
        reason="infer failed: exited with 3",
        log_tail=TAIL,  # these sites share their tails (share_log_tails)
    )


def jobs(feed: list[dict]) -> list[dict]:
    return [e["event"] for e in feed if e["event"]["type"].startswith("job.")]


async def test_each_user_receives_only_what_concerns_them(world: World) -> None:
    w = world
    await w.publish(failed(w, "hospital-a", "hospital", 1))
    await w.publish(failed(w, "clinic-b", "clinic", 1))
    queued = JobQueued(actor="clinic", site="clinic-b", job_id=2, benchmark_id=w.ids["benchmark"], reason="again")
    await w.publish(queued)

    async def everything_arrived() -> list[dict] | None:
        feed = await w.feed("admin")
        kinds = [e["event"]["type"] for e in feed]
        return feed if len(jobs(feed)) == 3 and "association.requested" in kinds else None

    await eventually(everything_arrived, "the admin to read the three job events and the association request")
    admin = await w.feed("admin")
    assert {e["event"]["type"] for e in admin} >= {
        "container.registered",
        "model.registered",
        "benchmark.submitted",
        "benchmark.approved",
        "dataset.registered",
        "association.requested",
        "job.failed",
        "job.queued",
    }
    assert [j["log_tail"] for j in jobs(admin) if j["type"] == "job.failed"] == [TAIL, TAIL]

    # The data owner at hospital-a: its site's job, tail and all; nothing of clinic-b, nor of others' entities.
    hospital = await w.feed("hospital")
    assert [(j["site"], j["type"], j["log_tail"]) for j in jobs(hospital)] == [("hospital-a", "job.failed", TAIL)]
    assert not [e for e in hospital if "clinic-b" in json.dumps(e)], "site B's events reached site A's owner"
    registered = [e["event"] for e in hospital if e["event"]["type"].endswith(".registered")]
    assert [(e["type"], e["owner"]) for e in registered] == [("dataset.registered", "hospital")]
    assert not [e for e in hospital if e["event"]["type"].startswith(("association.", "benchmark."))]

    clinic = await w.feed("clinic")
    assert {(j["site"], j["job_id"]) for j in jobs(clinic)} == {("clinic-b", 1), ("clinic-b", 2)}
    assert not [e for e in clinic if "hospital-a" in json.dumps(e)]

    # The model owner: its model's jobs at every site, without their tails; not clinic-b's other job.
    modeler = jobs(await w.feed("modeler"))
    assert {(j["site"], j["type"]) for j in modeler} == {("hospital-a", "job.failed"), ("clinic-b", "job.failed")}
    assert all(j["log_tail"] == "" and j["log_tail_withheld"] is True for j in modeler)
    assert all(j["reason"] == "infer failed: exited with 3" for j in modeler)

    # The committee: its benchmark's association request and every job of it, tails withheld.
    committee = await w.feed("committee")
    requests = [e["event"] for e in committee if e["event"]["type"] == "association.requested"]
    assert [(r["benchmark_id"], r["kind"], r["component_id"]) for r in requests] == [
        (w.ids["benchmark"], "model", w.ids["model"])
    ]
    assert len(jobs(committee)) == 3 and TAIL not in json.dumps(committee)
    assert not [e for e in committee if e["event"]["type"] == "dataset.registered"]  # the owners' registrations

    assert await w.feed("stranger") == []


async def test_a_dataset_registered_while_the_feed_is_open_brings_its_sites_jobs(world: World) -> None:
    w = world
    async with w.http["newcomer"].stream("GET", "/console/events") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()

        async def next_data(wanted: str | None = None) -> dict:
            name = None
            async for line in lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data, seen, name = json.loads(line[6:]), name, None
                    if wanted is None or seen == wanted:
                        return data
            raise AssertionError("the feed ended")

        await asyncio.wait_for(next_data("live"), timeout=10)  # the consumer exists: what follows is live
        other = JobQueued(actor="clinic", site="clinic-b", job_id=9, benchmark_id=w.ids["benchmark"], reason="x")
        await w.publish(other)  # not the newcomer's: must not arrive
        new = await w.post("newcomer", "/datasets", dataset("n", "newsite", w.ids["prep"]))
        first = await asyncio.wait_for(next_data(), timeout=10)
        assert first["event"]["type"] == "dataset.registered" and first["event"]["dataset_id"] == new["id"]
        # A job on the dataset just registered: only the dataset, just learnt, makes it the newcomer's
        # (naming a site in a dataset does not: anyone may, so a site's events are its agent owner's).
        run = JobQueued(
            actor="site-agent",
            site="newsite",
            job_id=1,
            benchmark_id=w.ids["benchmark"],
            dataset_id=new["id"],
            reason="y",
        )
        await w.publish(run)
        arrived = await asyncio.wait_for(next_data(), timeout=10)
        assert (arrived["event"]["site"], arrived["event"]["job_id"]) == ("newsite", 1), arrived
