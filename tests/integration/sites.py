"""A small federation for site tests: busybox containers written as shell scripts, the HTTP
calls of a committee, an admin and a model owner, and readers of the site's jobs and events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from history import stream_messages
from waiting import eventually
from workstations import Workstation

from cli.client import Client
from cli.stack import Stack
from services.executor import operations
from services.executor.runtime import ContainerRuntime
from services.executor.settings import LocalDataset, SiteSettings
from services.executor.store import Job
from services.ingress.auth import token_digest
from shared.db import UnitOfWork
from shared.settings import Settings

USERS = {
    "admin": "t-admin",
    "committee": "t-committee",
    "modeler": "t-modeler",
    "stranger": "t-stranger",
    "hospital-a": "t-hospital-a",  # the site's data owner
}
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
    nats_url: str
    clients: dict[str, Client]
    image: str
    site: SiteSettings
    uow: Callable[[], UnitOfWork]  # a unit of work on the site's own database
    benchmark_id: int = 0
    stack: Stack | None = None  # to stop the site's agent and start it again
    workstations: dict[str, Workstation] = field(default_factory=dict)

    async def call(self, user: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.clients[user], method), *args, **kwargs)

    async def signed_test(self, user: str, kind: str, component_id: int, passed: bool = True) -> dict:
        """A compatibility report ``user`` signed with their own key (registered on first use)."""
        station = self.workstations.setdefault(user, Workstation(user))

        async def post(path: str, body: dict) -> Any:
            return await self.call(user, "post", path, body)

        return await station.report(post, self.benchmark_id, kind, component_id, passed)

    async def jobs(self) -> list[Job]:
        return await operations.jobs(self.uow())

    async def job_of_model(self, model_id: int) -> Job | None:
        return next((j for j in await self.jobs() if j.model_id == model_id), None)

    async def events(self, suffix: str) -> list[dict]:
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            return [json.loads(m.data) for m in await stream_messages(js, "SITES") if m.subject.endswith(suffix)]
        finally:
            await nc.close()

    async def heartbeat(self) -> dict | None:
        """The site's latest heartbeat (the stream keeps one per site)."""
        nc = await nats.connect(self.nats_url)
        try:
            msg = await nc.jetstream().get_last_msg("HEARTBEATS", f"medperf.heartbeat.{self.site.name}")
            return json.loads(msg.data)
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await nc.close()

    async def join(self, sites: int = 1, demo_dataset: dict | None = None, prep_spec: dict | None = None) -> None:
        """Committee registers and submits, admin approves, the site (each of ``sites``) prepares and
        asks to join, the committee approves the dataset(s). ``demo_dataset``: a hosted file;
        ``prep_spec``: the data preparator's container spec (default ``preparator``)."""
        committee = "committee"
        spec = prep_spec or preparator(self.image)
        prep = await self.call(committee, "post", "/containers", {"name": "prep", "spec": spec, "state": "OPERATION"})
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
            demo_dataset=demo_dataset or {"source": "https://example.org/demo.tgz", "sha256": "ab" * 32},
            metrics=[{"name": "auc"}],
            primary_metric="auc",
            state="OPERATION",
        )
        await self.call("admin", "decide_benchmark", self.benchmark_id, approve=True)

        async def pending() -> list[dict]:
            return await self.call(committee, "associations", self.benchmark_id, kind="dataset", status="PENDING")

        async def all_pending() -> bool:
            return len(await pending()) >= sites

        await eventually(all_pending, f"{sites} site(s) to prepare their data and ask to join", timeout=60)
        for request in await pending():
            await self.call(
                committee, "decide_association", self.benchmark_id, "dataset", request["component_id"], approve=True
            )

    async def add_model(self, name: str, script: str) -> int:
        container = (
            await self.call(
                "modeler",
                "post",
                "/containers",
                {"name": name, "spec": model(self.image, script), "state": "OPERATION"},
            )
        )["id"]
        return await self.register_and_associate(name, container)

    async def register_and_associate(self, name: str, container: int) -> int:
        """Register a model on ``container``, ask to join with a passing test, and approve it."""
        model_id = (
            await self.call(
                "modeler", "post", "/models", {"name": name, "container_id": container, "state": "OPERATION"}
            )
        )["id"]
        # Signed by the model's owner here instead of by a committee site testing it on hosted demo data.
        report = await self.signed_test("modeler", "model", model_id)
        body = {"kind": "model", "component_id": model_id, "compatibility": report}
        for _ in range(100):  # the approvals service learns of the model from an event
            try:
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


def site_settings(tmp_path: Path, **options: Any) -> SiteSettings:
    """Site ``SITE`` with one tiny local dataset for benchmark "bench"."""
    raw = tmp_path / "raw"
    (raw / "data").mkdir(parents=True, exist_ok=True)
    (raw / "labels").mkdir(exist_ok=True)
    (raw / "data" / "case1.txt").write_text("1\n")
    (raw / "labels" / "case1.txt").write_text("0\n")
    defaults: dict[str, Any] = {
        "name": SITE,
        "owner": "hospital-a",
        "datasets": [LocalDataset(name="d1", benchmark="bench", data_path=raw / "data", labels_path=raw / "labels")],
        "work_dir": tmp_path / "site",
        "task_timeout": 120,
    }
    return SiteSettings(**(defaults | options))


@asynccontextmanager
async def federation(
    tmp_path: Path,
    image: str,
    *,
    name: str = SITE,
    runtime: ContainerRuntime | None = None,
    max_deliveries: int = 5,
    committee_for: list[str] | None = None,
    **site_options: Any,
) -> AsyncIterator[Federation]:
    """The central services and one site agent called ``name`` (with ``site_options``), in this process;
    with ``committee_for``, also the committee's own agent (site ``committee-site``, no data), whose
    signed tests of models count because the committee registered its key."""
    settings = Settings(
        max_deliveries=max_deliveries,
        state_dir=tmp_path / "state",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    site = site_settings(tmp_path, name=name, **site_options)
    sites = [site]
    if committee_for:
        committee = {"name": "committee-site", "owner": "committee", "datasets": [], "committee_for": committee_for}
        sites.append(site_settings(tmp_path / "committee", **committee))
    async with Stack(settings, sites=sites, runtime=runtime) as stack:
        assert stack.ingress and stack.settings.nats_url
        clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        try:
            yield Federation(
                stack.settings.nats_url, clients, image, site, stack.hosts[f"site-{name}"].uow, stack=stack
            )
        finally:
            for client in clients.values():
                client.close()
