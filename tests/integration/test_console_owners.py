"""Each owner reads the failures of what they own: a model owner their model's jobs at every site
(whose fault, the reason, but not the log tail, which may quote the site's patient data), a
committee every job of its benchmark, a data owner its sites' jobs with their tails. Real services,
a real nats-server and SQLite; owners come from real registrations, the sites are stood in for by
publishing the job events an agent publishes."""

from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from waiting import eventually

from cli import console as console_cli
from cli.client import Client
from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.events import Event, JobFailed, JobLogReleased, JobSucceeded
from shared.settings import Settings

USERS = ("admin", "committee", "modeler", "rival", "hospital", "clinic", "stranger")
DIGEST = "sha256:" + "a" * 64
TAIL = "Traceback: case 17 (age 54) broke the model"


@dataclass
class World:
    clients: dict[str, Client]
    nc: nats.NATS
    benchmark: int
    model: int  # the modeler's
    rival_model: int

    async def publish(self, event: Event) -> None:
        await self.nc.jetstream().publish(event.subject, event.model_dump_json().encode())

    async def jobs(self, user: str, **filters: Any) -> list[dict]:
        return await asyncio.to_thread(self.clients[user].console_jobs, **filters)

    def cli(self, user: str, *argv: str) -> str:
        parser = argparse.ArgumentParser()
        console_cli.add_commands(parser.add_subparsers(dest="command"))
        out = io.StringIO()
        assert console_cli.run(parser.parse_args(["console", *argv]), self.clients[user], out) == 0
        return out.getvalue()


def spec(*tasks: str) -> dict:
    return {"image": "x", "image_digest": DIGEST, "tasks": {task: {"command": ["true"]} for task in tasks}}


@pytest.fixture
async def world(tmp_path: Path, nats_url: str) -> AsyncIterator[World]:
    settings = Settings(
        nats_url=nats_url,
        state_dir=tmp_path,
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(f"t-{u}"): u for u in USERS},
    )
    async with Stack(settings) as stack:
        assert stack.ingress is not None
        clients = {u: Client(stack.ingress.url, f"t-{u}") for u in USERS}
        nc = await nats.connect(nats_url)
        try:
            ids = await asyncio.to_thread(_register, clients)
            yield World(clients, nc, *ids)
        finally:
            await nc.close()
            for client in clients.values():
                client.close()


def _register(clients: dict[str, Client]) -> tuple[int, int, int]:
    committee = clients["committee"]
    prep = committee.post("/containers", {"name": "prep", "spec": spec("prepare", "sanity_check", "statistics")})["id"]
    ref_container = committee.post("/containers", {"name": "ref", "spec": spec("infer")})["id"]
    ref = committee.post("/models", {"name": "ref", "container_id": ref_container})["id"]
    metrics = committee.post("/containers", {"name": "metrics", "spec": spec("evaluate")})["id"]
    benchmark = committee.submit_benchmark(
        name="bench",
        data_preparator_id=prep,
        reference_model_id=ref,
        metrics_container_id=metrics,
        demo_dataset={"source": "https://example.org/demo.tgz", "sha256": "ab" * 32},
        metrics=[{"name": "auc"}],
        primary_metric="auc",
    )
    models = []
    for owner in ("modeler", "rival"):
        container = clients[owner].post("/containers", {"name": f"{owner}-c", "spec": spec("infer")})["id"]
        models.append(clients[owner].post("/models", {"name": f"{owner}-m", "container_id": container})["id"])
    return benchmark, models[0], models[1]


def failed(w: World, site: str, owner: str, job_id: int, model_id: int) -> JobFailed:
    return JobFailed(
        actor=owner,
        site=site,
        job_id=job_id,
        benchmark_id=w.benchmark,
        model_id=model_id,
        dataset_id=job_id,
        failure="model",
        reason="infer failed: exited with 3",  # a site keeps its log tails unless it shares them
    )


async def test_each_owner_reads_the_failures_of_what_they_own(world: World) -> None:
    w = world
    await w.publish(failed(w, "hospital-x", "hospital", 1, w.model))  # the modeler's model at the hospital
    await w.publish(failed(w, "hospital-x", "hospital", 2, w.rival_model))  # another owner's model there
    done = JobSucceeded(actor="clinic", site="clinic-y", job_id=1, benchmark_id=w.benchmark, model_id=w.model)
    await w.publish(done)

    def seen(jobs: list[dict]) -> set[tuple[str, int]]:
        return {(j["site"], j["job_id"]) for j in jobs}

    async def folded() -> bool:
        return len(await w.jobs("admin")) == 3 and len(await w.jobs("modeler")) == 2  # owners arrive by events

    await eventually(folded, "the console to learn the jobs and who owns the model")

    mine = {(j["site"], j["job_id"]): j for j in await w.jobs("modeler")}
    assert set(mine) == {("hospital-x", 1), ("clinic-y", 1)}  # not the rival's job at the same site
    failure = mine[("hospital-x", 1)]
    assert (failure["status"], failure["failure"], failure["failure_reason"]) == (
        "failed",
        "model",
        "infer failed: exited with 3",
    )
    assert failure["log_tail"] == "" and failure["log_tail_kept_at_site"] is True
    assert seen(await w.jobs("rival")) == {("hospital-x", 2)}
    committee = await w.jobs("committee")
    assert seen(committee) == {("hospital-x", 1), ("hospital-x", 2), ("clinic-y", 1)}
    hospital = await w.jobs("hospital")  # the data owner: its own site
    assert seen(hospital) == {("hospital-x", 1), ("hospital-x", 2)}
    assert seen(await w.jobs("clinic")) == {("clinic-y", 1)}
    assert await w.jobs("stranger") == []
    # No tail has left the site: nobody central reads one, admins included.
    for who in ("committee", "hospital", "admin"):
        assert all(j["log_tail"] == "" for j in await w.jobs(who)), who

    text = await asyncio.to_thread(w.cli, "modeler", "jobs", "--status", "failed")
    assert "hospital-x job 1: model fault: infer failed: exited with 3" in text
    assert "case 17" not in text and "stay at the site (hospital-x)" in text and "release-log" in text
    assert "hospital-x job 2" not in text

    # The hospital's data owner releases job 1's tail: its model owner and the committee read it.
    released = JobLogReleased(
        actor="hospital", site="hospital-x", job_id=1, benchmark_id=w.benchmark, model_id=w.model, log_tail=TAIL
    )
    await w.publish(released)

    async def tail_arrived() -> bool:
        return {j["job_id"]: j["log_tail"] for j in await w.jobs("modeler") if j["site"] == "hospital-x"} == {1: TAIL}

    await eventually(tail_arrived, "the released log tail to reach the model owner")
    assert {(j["job_id"], j["log_tail"]) for j in await w.jobs("committee") if j["site"] == "hospital-x"} == {
        (1, TAIL),
        (2, ""),
    }
    assert "case 17" in await asyncio.to_thread(w.cli, "modeler", "jobs", "--status", "failed")
