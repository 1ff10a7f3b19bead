"""A site's jobs against the real services, a real nats-server and Docker: consent, cancel, drain,
failures and partial results. The containers are busybox shell scripts, so each run takes well
under a second unless a test asks the model to sleep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import nats
import pytest
from waiting import eventually

from cli.client import Client
from cli.stack import Stack
from services.executor import operations
from services.executor.runner import JOB_LABEL
from services.executor.settings import LocalDataset, SiteSettings
from services.executor.store import Job
from services.ingress.auth import token_digest
from shared.db import UnitOfWork
from shared.service import ServiceHost
from shared.settings import Settings

pytestmark = pytest.mark.engine
USERS = {"admin": "t-admin", "committee": "t-committee", "modeler": "t-modeler"}
SITE = "site-a"


def task(script: str, inputs: dict[str, str] | None = None, outputs: dict[str, str] | None = None) -> dict:
    return {
        "command": ["sh", "-c", script],
        "inputs": {k: {"mount_path": v} for k, v in (inputs or {}).items()},
        "outputs": {k: {"mount_path": v} for k, v in (outputs or {}).items()},
    }


def preparator(image: str) -> dict:
    return {
        "image": "localhost/busybox",
        "image_digest": image,
        "tasks": {
            "prepare": task(
                "cp -r /in/data/. /out/data/ && cp -r /in/labels/. /out/labels/",
                {"data_path": "/in/data", "labels_path": "/in/labels"},
                {"output_path": "/out/data", "output_labels_path": "/out/labels"},
            ),
            "sanity_check": task("true"),
            "statistics": task("echo '{\"cases\": 3}' > /out/statistics.json", outputs={"output_path": "/out"}),
        },
    }


def model(image: str, script: str = "echo 1 > /out/p1") -> dict:
    return {
        "image": "localhost/busybox",
        "image_digest": image,
        "tasks": {"infer": task(script, {"data_path": "/in"}, {"output_path": "/out"})},
    }


def metrics(image: str) -> dict:
    script = "if [ -f /p/p2 ]; then echo '{\"auc\": 0.9}'; else echo '{\"auc\": 0.5}'; fi > /out/results.json"
    return {
        "image": "localhost/busybox",
        "image_digest": image,
        "tasks": {"evaluate": task(script, {"predictions": "/p", "labels": "/l"}, {"output_path": "/out"})},
    }


@dataclass
class Federation:
    stack: Stack
    clients: dict[str, Client]
    image: str
    benchmark_id: int = 0

    @property
    def site(self) -> ServiceHost:
        return self.stack.hosts[f"site-{SITE}"]

    def uow(self) -> UnitOfWork:
        return self.site.uow()

    async def call(self, user: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.clients[user], method), *args, **kwargs)

    async def jobs(self) -> list[Job]:
        return await operations.jobs(self.uow())

    async def job_of_model(self, model_id: int) -> Job | None:
        return next((j for j in await self.jobs() if j.model_id == model_id), None)

    async def events(self, suffix: str) -> list[dict]:
        nc = await nats.connect(self.stack.settings.nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("SITES")
            messages = [await js.get_msg("SITES", s) for s in range(info.state.first_seq, info.state.last_seq + 1)]
            return [json.loads(m.data) for m in messages if m.subject.endswith(suffix)] if info.state.messages else []
        finally:
            await nc.close()

    async def join(self) -> None:
        """Committee registers and submits, admin approves, the site prepares and asks to join,
        the committee approves the dataset."""
        committee = "committee"
        prep = await self.call(
            committee, "post", "/containers", {"name": "prep", "spec": preparator(self.image), "state": "OPERATION"}
        )
        prep_id = prep["id"]
        ref_container = (
            await self.call(
                committee, "post", "/containers", {"name": "ref", "spec": model(self.image), "state": "OPERATION"}
            )
        )["id"]
        ref = (
            await self.call(
                committee, "post", "/models", {"name": "ref", "container_id": ref_container, "state": "OPERATION"}
            )
        )["id"]
        metrics_id = (
            await self.call(
                committee, "post", "/containers", {"name": "metrics", "spec": metrics(self.image), "state": "OPERATION"}
            )
        )["id"]
        self.benchmark_id = await self.call(
            committee,
            "submit_benchmark",
            name="bench",
            data_preparator_id=prep_id,
            reference_model_id=ref,
            metrics_container_id=metrics_id,
            demo_dataset={"source": "https://example.org/demo.tgz", "sha256": "ab" * 32},
            metrics=[{"name": "auc"}],
            primary_metric="auc",
            state="OPERATION",
        )
        await self.call("admin", "decide_benchmark", self.benchmark_id, approve=True)

        async def pending() -> list[dict]:
            return await self.call(committee, "associations", self.benchmark_id, kind="dataset", status="PENDING")

        await eventually(pending, "the site to prepare its data and ask to join", timeout=60)
        dataset = (await pending())[0]["component_id"]
        await self.call(committee, "decide_association", self.benchmark_id, "dataset", dataset, approve=True)

    async def add_model(self, name: str, script: str) -> int:
        container = (
            await self.call(
                "modeler",
                "post",
                "/containers",
                {"name": name, "spec": model(self.image, script), "state": "OPERATION"},
            )
        )["id"]
        model_id = (
            await self.call(
                "modeler", "post", "/models", {"name": name, "container_id": container, "state": "OPERATION"}
            )
        )["id"]
        for _ in range(100):  # the approvals service learns of the model from an event
            try:
                # Attached here instead of by a committee site testing it on hosted demo data.
                body = {"kind": "model", "component_id": model_id, "compatibility": {"passed": True}}
                await self.call("modeler", "post", f"/benchmarks/{self.benchmark_id}/associations", body)
                break
            except Exception:
                await asyncio.sleep(0.1)
        await self.call("committee", "decide_association", self.benchmark_id, "model", model_id, approve=True)
        return model_id

    async def job_reaches(self, model_id: int, *statuses: str) -> Job:
        async def check() -> Job | None:
            job = await self.job_of_model(model_id)
            return job if job is not None and job.status in statuses else None

        await eventually(check, f"model {model_id}'s job to become {' or '.join(statuses)}", timeout=60)
        job = await check()
        assert job is not None
        return job


@asynccontextmanager
async def federation(tmp_path: Path, image: str, **site_options: Any) -> AsyncIterator[Federation]:
    raw = tmp_path / "raw"
    (raw / "data").mkdir(parents=True)
    (raw / "labels").mkdir()
    (raw / "data" / "case1.txt").write_text("1\n")
    (raw / "labels" / "case1.txt").write_text("0\n")
    settings = Settings(
        state_dir=tmp_path / "state",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    site = SiteSettings(
        name=SITE,
        owner="hospital-a",
        datasets=[LocalDataset(name="d1", benchmark="bench", data_path=raw / "data", labels_path=raw / "labels")],
        work_dir=tmp_path / "site",
        task_timeout=120,
        **site_options,
    )
    async with Stack(settings, sites=[site]) as stack:
        assert stack.ingress
        clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        try:
            yield Federation(stack, clients, image)
        finally:
            for client in clients.values():
                client.close()


async def test_review_policy_holds_results_until_the_data_owner_releases_them(
    tmp_path: Path, busybox_image: str
) -> None:
    async with federation(tmp_path, busybox_image, release="review") as fed:
        await fed.join()
        model_id = await fed.add_model("m2", "echo 1 > /out/p1")
        job = await fed.job_reaches(model_id, "succeeded")
        assert job.release == "held"
        pending = {j.id for j in await operations.jobs(fed.uow(), pending_release=True)}
        assert job.id in pending  # so is the reference model's kept compatibility run
        await asyncio.sleep(1.5)  # a relay sweep: had anything been released, it would be out by now
        assert await fed.events(".result.reported") == []
        assert (await fed.events(".job.succeeded"))[-1]["held"] is True

        await operations.release_result(fed.uow(), fed.stack.sites[0], job.id)

        async def released() -> list[dict]:
            return [e for e in await fed.events(".result.reported") if e["model_id"] == model_id]

        await eventually(released, "the released result to leave the site")
        (result,) = await released()
        assert result["metrics"] == {"auc": 0.5}
        assert result["dataset_hash"] == job.dataset_hash and result["container_digests"]["model"] == busybox_image
        with pytest.raises(operations.NotPossible, match="no result waiting"):
            await operations.release_result(fed.uow(), fed.stack.sites[0], job.id)


async def test_a_running_job_is_cancelled_and_its_container_removed(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        model_id = await fed.add_model("slow", "sleep 300; echo 1 > /out/p1")
        job = await fed.job_reaches(model_id, "running")
        engine = docker.from_env()

        def containers() -> list:
            return engine.containers.list(all=True, filters={"label": f"{JOB_LABEL}={job.id}"})

        await eventually(lambda: asyncio.to_thread(containers), "the model's container to start")
        await operations.cancel(fed.uow(), job.id)
        await fed.job_reaches(model_id, "cancelled")
        await eventually(lambda: asyncio.to_thread(lambda: not containers()), "its container to be removed")
        engine.close()
        cancelled = [e for e in await fed.events(".job.cancelled") if e["job_id"] == job.id]
        assert len(cancelled) == 1
        assert not [e for e in await fed.events(".result.reported") if e["model_id"] == model_id]
        with pytest.raises(operations.NotPossible, match="only queued or running"):
            await operations.cancel(fed.uow(), job.id)


async def test_model_failures_are_not_retried_and_partial_scores_are_flagged(
    tmp_path: Path, busybox_image: str
) -> None:
    async with federation(tmp_path, busybox_image, ignore_model_errors=True) as fed:
        await fed.join()
        broken = await fed.add_model("broken", "exit 3")
        partial = await fed.add_model("partial", "echo 1 > /out/p1; echo 2 > /out/p2; exit 4")
        failed = await fed.job_reaches(broken, "failed")
        assert (failed.failure, failed.attempts) == ("model", 1)
        (event,) = [e for e in await fed.events(".job.failed") if e["job_id"] == failed.id]
        assert event["failure"] == "model" and event["will_retry"] is False and "exited with 3" in event["reason"]

        done = await fed.job_reaches(partial, "succeeded")
        assert done.partial and done.metrics == {"auc": 0.9}

        async def reported() -> list[dict]:
            return [e for e in await fed.events(".result.reported") if e["model_id"] == partial]

        await eventually(reported, "the partial result")
        assert (await reported())[0]["partial"] is True


async def test_a_draining_site_keeps_jobs_queued_until_it_resumes(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        await operations.set_draining(fed.uow(), True)
        model_id = await fed.add_model("later", "echo 1 > /out/p1")
        await fed.job_reaches(model_id, "queued")
        await asyncio.sleep(2.5)  # two runner rounds
        assert (await fed.job_of_model(model_id)).status == "queued"  # type: ignore[union-attr]
        await operations.set_draining(fed.uow(), False)
        done = await fed.job_reaches(model_id, "succeeded")

        # Asked again, the same work is queued again; without asking it would not be.
        again = await operations.rerun(fed.uow(), fed.stack.sites[0], done.id)
        assert again.key == done.key and again.id != done.id
        # The runner polls the site's database, so the CLI's re-run needs no wake-up call.
        await eventually(lambda: _status(fed, again.id, "succeeded"), "the re-run to finish", timeout=60)
        await eventually(lambda: _count_results(fed, model_id, 2), "both runs' results to be reported")


async def _status(fed: Federation, job_id: int, status: str) -> bool:
    return any(j.id == job_id and j.status == status for j in await fed.jobs())


async def _count_results(fed: Federation, model_id: int, n: int) -> bool:
    return len([e for e in await fed.events(".result.reported") if e["model_id"] == model_id]) == n
