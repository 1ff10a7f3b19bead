"""The whole permission table (``services/ingress/permissions.py``), cell by cell, against the real
services: every role tries every endpoint on the objects it is related to.

One world per module: an approved benchmark owned by the committee, a dataset (data owner) and a
model (model owner) associated with it, both OPERATION. Endpoints that destroy or consume something
(delete, revoke, decide a pending request, request an association) get fresh objects per cell.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import pytest_asyncio
from oidc_issuer import AUDIENCE, Issuer
from users import stack_with_users
from workstations import Workstation

from services.executor.app import create_agent
from services.executor.settings import SiteSettings
from services.executor.store import Job
from services.ingress.permissions import ENTITY_PATHS, PERMISSIONS, ROLES, Role, Rule
from shared.broker import EmbeddedNats
from shared.events import DeadLetter, JobCancelled
from shared.settings import Settings
from shared.signing import SiteKey
from shared.streams import deadletter_subject

pytestmark = pytest.mark.asyncio(loop_scope="module")

USERS = ("admin", "committee", "preparer", "data-owner", "model-owner", "stranger")
ACTING_USER: dict[Role, str] = {
    "user": "stranger",
    "benchmark_owner": "committee",
    "data_owner": "data-owner",
    "model_owner": "model-owner",
    "admin": "admin",
}
DIGEST = "sha256:" + "a" * 64


def spec(*tasks: str) -> dict:
    return {
        "image": "localhost/example:1",
        "image_digest": DIGEST,
        "tasks": {t: {"command": ["run", t]} for t in tasks},
    }


async def send(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; 503 means a service is still catching up on events, so retry it a while."""
    deadline = time.monotonic() + 10
    while True:
        response = await client.request(method, url, **kwargs)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


def ok(response: httpx.Response, *statuses: int) -> dict:
    assert response.status_code in (statuses or (200, 201)), f"{response.request.url}: {response.text}"
    return response.json()


@dataclass
class World:
    clients: dict[str, httpx.AsyncClient]  # by user name, and "anonymous"
    ids: dict[str, int] = field(default_factory=dict)
    serial: itertools.count = field(default_factory=lambda: itertools.count(1))
    nats_url: str = ""
    workstations: dict[str, Workstation] = field(default_factory=dict)
    issuer: Issuer | None = None
    site: str = ""  # the data owner's site, whose agent runs for the cells that need it (AT_THE_SITE)

    def as_role(self, role: Role) -> httpx.AsyncClient:
        return self.clients["anonymous" if role == "anonymous" else ACTING_USER[role]]

    def user(self, name: str) -> httpx.AsyncClient:
        return self.clients[name]

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self.serial)}"

    async def passed(self, owner: str, kind: str, component: int, benchmark: int | None = None) -> dict:
        """A passed compatibility test of the association, signed with ``owner``'s own key."""
        station = self.workstations.setdefault(owner, Workstation(owner))

        async def post(path: str, body: dict) -> Any:
            return ok(await send(self.user(owner), "POST", path, json=body), 201)

        return await station.report(post, benchmark or self.ids["benchmark"], kind, component)

    # --- fresh objects, created by their owners ---------------------------------------------------

    async def container(self, owner: str = "model-owner", *tasks: str) -> int:
        body = {"name": self.unique("c"), "spec": spec(*(tasks or ("infer",))), "state": "OPERATION"}
        return ok(await send(self.user(owner), "POST", "/containers", json=body))["id"]

    async def model(self, owner: str = "model-owner", state: str = "OPERATION") -> int:
        body = {"name": self.unique("m"), "container_id": await self.container(owner), "state": state}
        return ok(await send(self.user(owner), "POST", "/models", json=body))["id"]

    async def dataset(self, owner: str = "data-owner") -> int:
        n = next(self.serial)
        body = {
            "name": f"d-{n}",
            "site": f"site-{n}",
            "data_preparator_id": self.ids["prep"],
            "input_hash": hashlib.sha256(f"in-{n}".encode()).hexdigest(),
            "prepared_hash": hashlib.sha256(f"prepared-{n}".encode()).hexdigest(),
            "statistics": {"cases": 40 + n},
            "state": "OPERATION",
        }
        return ok(await send(self.user(owner), "POST", "/datasets", json=body))["id"]

    def benchmark_body(self) -> dict:
        return {
            "name": self.unique("b"),
            "data_preparator_id": self.ids["prep"],
            "reference_model_id": self.ids["reference"],
            "metrics_container_id": self.ids["metrics"],
            "demo_dataset": {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64},
            "metrics": [{"name": "auc"}],
            "primary_metric": "auc",
        }

    async def reject(self, benchmark: int) -> None:
        """Reject a fresh benchmark so its owner may submit another (one pending each), and wait
        until the registry has learnt it."""
        admin = self.user("admin")
        for _ in range(200):
            decided = await send(admin, "POST", f"/benchmarks/{benchmark}/decision", json={"approve": False})
            if decided.status_code != 404:  # approvals learns of the benchmark from an event
                break
            await asyncio.sleep(0.05)
        ok(decided)
        for _ in range(200):
            if ok(await send(admin, "GET", f"/benchmarks/{benchmark}"))["approval_status"] == "REJECTED":
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the registry never learnt that benchmark {benchmark} was rejected")

    async def submitted(self, owner: str = "committee") -> int:
        """A fresh PENDING benchmark that the approvals service already knows of."""
        for _ in range(200):  # the previous fresh benchmark's rejection may still be on its way
            response = await send(self.user(owner), "POST", "/benchmarks", json=self.benchmark_body())
            if response.status_code != 409:
                break
            await asyncio.sleep(0.05)
        benchmark = ok(response)["id"]
        for _ in range(200):
            if (await send(self.user("admin"), "GET", f"/benchmarks/{benchmark}/audit")).status_code == 200:
                return benchmark
            await asyncio.sleep(0.05)
        raise AssertionError(f"the approvals service never learnt of benchmark {benchmark}")

    async def benchmark(self, owner: str = "committee") -> int:
        benchmark = await self.submitted(owner)
        await self.reject(benchmark)
        return benchmark

    async def component(self, role: Role) -> tuple[str, int]:
        """The kind and a fresh component for an association cell: a data owner acts on its own
        dataset; everyone else on a model of the model owner."""
        return ("dataset", await self.dataset()) if role == "data_owner" else ("model", await self.model())

    async def pending(self, role: Role) -> tuple[str, int]:
        kind, component = await self.component(role)
        initiator = "data-owner" if kind == "dataset" else "model-owner"
        report = await self.passed(initiator, kind, component)
        body = {"kind": kind, "component_id": component, "compatibility": report}
        ok(await send(self.user(initiator), "POST", f"/benchmarks/{self.ids['benchmark']}/associations", json=body))
        return kind, component

    async def dead_letter(self) -> int:
        """A fresh dead letter (as a consumer would park it), its message a harmless job event."""
        event = JobCancelled(actor="perm", site="perm-site", job_id=next(self.serial), benchmark_id=1)
        letter = DeadLetter(
            service="console",
            consumer="console-jobs",
            subject=event.subject,
            reason="permission test",
            deliveries=5,
            payload=event.model_dump_json(),
        )
        nc = await nats.connect(self.nats_url)
        try:
            return (await nc.jetstream().publish(deadletter_subject("console"), letter.model_dump_json().encode())).seq
        finally:
            await nc.close()

    async def token(self) -> int:
        issued = await send(self.user("admin"), "POST", "/users/holder/tokens", json={"label": self.unique("t")})
        return ok(issued, 201)["id"]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root: Path = tmp_path_factory.mktemp("permissions")
    tokens = {user: f"t-{user}" for user in USERS}
    issuer = Issuer()  # the web app's sign-in routes need an identity provider to succeed
    try:
        with EmbeddedNats(root / "nats") as nats_url:
            options = {"oidc_issuer": issuer.url, "oidc_audience": AUDIENCE}
            async with stack_with_users(root, nats_url, tokens, **options) as (stack, clients):
                world = World(clients, nats_url=stack.settings.nats_url or "", issuer=issuer)
                await _populate(world)
                yield world
    finally:
        issuer.close()


#: Endpoints the data owner's site agent answers: their cells need it running (and so an engine).
AT_THE_SITE = {("POST", "/sites/{site}/held-results/release"), ("POST", "/sites/{site}/jobs/{job_id}/log-release")}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site_agent(
    world: World, docker_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[None]:
    """The agent of the data owner's site, holding one failed job with a kept log (as a run leaves it)."""
    root = tmp_path_factory.mktemp("site-agent")
    site = SiteSettings(name=await _dataset_site(world), owner="data-owner", work_dir=root / "work")
    world.site = site.name
    agent = create_agent(Settings(nats_url=world.nats_url, state_dir=root / "state"), site)
    await agent.start()
    try:
        async with agent.uow() as uow:
            job = Job(
                key="permissions",
                kind="run",
                benchmark_id=world.ids["benchmark"],
                model_id=world.ids["model"],
                dataset_id=world.ids["dataset"],
                status="failed",
                failure="model",
            )
            uow.session.add(job)
            await uow.commit()
            world.ids["failed_job"] = job.id
        logs = site.work_dir / "runs" / f"job-{job.id}" / "logs"
        logs.mkdir(parents=True)
        (logs / "infer.log").write_text("the model stopped\n")
        yield
    finally:
        await agent.stop()


async def _populate(w: World) -> None:
    w.ids["prep"] = await w.container("preparer", "prepare", "sanity_check", "statistics")
    w.ids["metrics"] = await w.container("committee", "evaluate")
    w.ids["reference"] = await w.model("committee")
    body = {**w.benchmark_body(), "state": "OPERATION"}
    benchmark = w.ids["benchmark"] = ok(await send(w.user("committee"), "POST", "/benchmarks", json=body))["id"]
    for _ in range(200):
        approved = await send(w.user("admin"), "POST", f"/benchmarks/{benchmark}/decision", json={"approve": True})
        if approved.status_code != 404:
            break
        await asyncio.sleep(0.05)
    ok(approved)
    for kind, owner in (("dataset", "data-owner"), ("model", "model-owner")):
        component = w.ids[kind] = await (w.dataset() if kind == "dataset" else w.model())
        if kind == "model":
            w.ids["model_container"] = ok(await send(w.user(owner), "GET", f"/models/{component}"))["container_id"]
        report = await w.passed(owner, kind, component, benchmark)
        request = {"kind": kind, "component_id": component, "compatibility": report}
        for _ in range(200):  # until the registry has learnt the approval, and approvals the component
            asked = await send(w.user(owner), "POST", f"/benchmarks/{benchmark}/associations", json=request)
            if asked.status_code != 409 or "approves it" not in asked.text:
                break
            await asyncio.sleep(0.05)
        ok(asked)
        decided = await send(
            w.user("committee"),
            "POST",
            f"/benchmarks/{benchmark}/associations/{kind}/{component}/decision",
            json={"approve": True},
        )
        assert ok(decided)["status"] == "APPROVED"
    ok(await send(w.user("admin"), "POST", "/users", json={"name": "holder"}), 201)
    # The aggregator learns who participates from the approvals' events; the cells start once it has.
    for owner in ("data-owner", "model-owner"):
        for _ in range(200):
            board = await send(w.user(owner), "GET", f"/benchmarks/{benchmark}/leaderboard")
            if board.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert ok(board)["scope"] == "shared"


# --- what each cell sends -------------------------------------------------------------------------

Request = tuple[str, dict[str, Any]]  # url, keyword arguments for httpx (json=..., params=...)
Builder = Callable[[World, Role], Awaitable[Request]]
BUILDERS: dict[tuple[str, str], Builder] = {}


def builds(method: str, path: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        BUILDERS[(method, path)] = builder
        return builder

    return register


def _fixed(url: str | Callable[[World], str], **kwargs: Any) -> Builder:
    async def build(w: World, role: Role) -> Request:
        return (url(w) if callable(url) else url), kwargs

    return build


def _entity_builders(entity: str, plural: str) -> None:
    target = {"container": "model_container"}.get(entity, entity)

    async def create(w: World, role: Role) -> Request:
        if entity == "container":
            return f"/{plural}", {"json": {"name": w.unique("c"), "spec": spec("infer")}}
        if entity == "model":
            owner = ACTING_USER.get(role, "model-owner")  # a model is registered on one's own container
            return f"/{plural}", {"json": {"name": w.unique("m"), "container_id": await w.container(owner)}}
        if entity == "benchmark":
            return f"/{plural}", {"json": w.benchmark_body()}
        n = next(w.serial)
        body = {
            "name": f"d-{n}",
            "site": f"site-{n}",
            "data_preparator_id": w.ids["prep"],
            "input_hash": "1" * 64,
            "prepared_hash": hashlib.sha256(f"created-{n}".encode()).hexdigest(),
            "statistics": {"cases": 3},
        }
        return f"/{plural}", {"json": body}

    async def delete(w: World, role: Role) -> Request:
        fresh = {"container": w.container, "model": w.model, "benchmark": w.benchmark, "dataset": w.dataset}
        return f"/{plural}/{await fresh[entity]()}", {"params": {"reason": "permission test"}}

    async def edit(w: World, role: Role) -> Request:
        return f"/{plural}/{w.ids[target]}", {"json": {"changes": {"user_metadata": {"cell": next(w.serial)}}}}

    BUILDERS[("POST", f"/{plural}")] = create
    BUILDERS[("GET", f"/{plural}")] = _fixed(f"/{plural}")
    BUILDERS[("GET", f"/me/{plural}")] = _fixed(f"/me/{plural}")
    BUILDERS[("GET", f"/{plural}/{{entity_id}}")] = _fixed(lambda w: f"/{plural}/{w.ids[target]}")
    BUILDERS[("PATCH", f"/{plural}/{{entity_id}}")] = edit
    BUILDERS[("DELETE", f"/{plural}/{{entity_id}}")] = delete
    if entity != "container":
        BUILDERS[("GET", f"/{plural}/{{entity_id}}/audit")] = _fixed(lambda w: f"/{plural}/{w.ids[target]}/audit")


for _entity, _plural in ENTITY_PATHS.items():
    _entity_builders(_entity, _plural)

BENCH = "/benchmarks/{benchmark_id}"
BUILDERS[("GET", "/health")] = _fixed("/health")
BUILDERS[("GET", "/me")] = _fixed("/me")
BUILDERS[("GET", "/me/associations")] = _fixed("/me/associations")
BUILDERS[("POST", "/users")] = lambda w, role: _fixed("/users", json={"name": w.unique("person")})(w, role)
BUILDERS[("GET", f"{BENCH}/associations")] = _fixed(lambda w: f"/benchmarks/{w.ids['benchmark']}/associations")
BUILDERS[("GET", f"{BENCH}/leaderboard")] = _fixed(lambda w: f"/benchmarks/{w.ids['benchmark']}/leaderboard")
BUILDERS[("PUT", f"{BENCH}/auto-approval/{{kind}}")] = _fixed(
    lambda w: f"/benchmarks/{w.ids['benchmark']}/auto-approval/dataset", json={"mode": "NEVER"}
)


BUILDERS[("PUT", f"{BENCH}/sharing-policy")] = _fixed(
    lambda w: f"/benchmarks/{w.ids['benchmark']}/sharing-policy", json={"visibility": "participants"}
)
BUILDERS[("POST", f"{BENCH}/sharing-policy/preview")] = _fixed(
    lambda w: f"/benchmarks/{w.ids['benchmark']}/sharing-policy/preview", json={"visibility": "public"}
)


@builds("PUT", f"{BENCH}/models/{{model_id}}/priority")
async def _priority(w: World, role: Role) -> Request:
    url = f"/benchmarks/{w.ids['benchmark']}/models/{w.ids['model']}/priority"
    return url, {"json": {"priority": next(w.serial) % 100}}


@builds("POST", f"{BENCH}/associations")
async def _request(w: World, role: Role) -> Request:
    kind, component = await w.component(role)
    return f"/benchmarks/{w.ids['benchmark']}/associations", {"json": {"kind": kind, "component_id": component}}


@builds("POST", f"{BENCH}/associations/{{kind}}/{{component_id}}/decision")
async def _decide(w: World, role: Role) -> Request:
    kind, component = await w.pending(role)
    url = f"/benchmarks/{w.ids['benchmark']}/associations/{kind}/{component}/decision"
    return url, {"json": {"approve": False, "reason": "permission test"}}


@builds("POST", f"{BENCH}/decision")
async def _decide_benchmark(w: World, role: Role) -> Request:
    return f"/benchmarks/{await w.submitted()}/decision", {"json": {"approve": False, "reason": "permission test"}}


@builds("GET", f"{BENCH}/models/{{model_id}}/provenance")
async def _provenance(w: World, role: Role) -> Request:
    return f"/benchmarks/{w.ids['benchmark']}/models/{w.ids['model']}/provenance", {}


async def _dataset_site(w: World) -> str:
    return ok(await send(w.user("admin"), "GET", f"/datasets/{w.ids['dataset']}"))["site"]


@builds("GET", "/sites/{site}/keys")
async def _site_keys(w: World, role: Role) -> Request:
    return f"/sites/{await _dataset_site(w)}/keys", {}


@builds("POST", "/sites/{site}/keys")
async def _register_key(w: World, role: Role) -> Request:
    return f"/sites/{await _dataset_site(w)}/keys", {"json": {"public_key": SiteKey.generate().public_key}}


@builds("POST", "/sites/{site}/keys/{key_id}/revocation")
async def _revoke_key(w: World, role: Role) -> Request:
    site = await _dataset_site(w)
    key = {"public_key": SiteKey.generate().public_key}
    registered = ok(await send(w.user("data-owner"), "POST", f"/sites/{site}/keys", json=key), 201)
    return f"/sites/{site}/keys/{registered['key_id']}/revocation", {"json": {"reason": "permission test"}}


BUILDERS[("POST", "/sites/{site}/held-results/release")] = lambda w, role: _fixed(
    f"/sites/{w.site}/held-results/release", json={"all": True}
)(w, role)
BUILDERS[("POST", "/sites/{site}/jobs/{job_id}/log-release")] = lambda w, role: _fixed(
    f"/sites/{w.site}/jobs/{w.ids['failed_job']}/log-release"
)(w, role)


@builds("POST", "/users/{name}/tokens")
async def _issue(w: World, role: Role) -> Request:
    return "/users/holder/tokens", {"json": {"label": w.unique("label")}}


BUILDERS[("GET", "/console")] = _fixed("/console")
BUILDERS[("GET", "/app")] = _fixed("/app")
BUILDERS[("GET", "/app/assets/{name}")] = _fixed("/app/assets/app.js")
BUILDERS[("GET", "/app/sign-in")] = _fixed("/app/sign-in")
BUILDERS[("POST", "/app/sign-in/device")] = _fixed("/app/sign-in/device")


@builds("POST", "/app/sign-in/token")
async def _device_token(w: World, role: Role) -> Request:
    """A code someone started and approved at the issuer: its holder gets the token, whoever they are."""
    assert w.issuer is not None
    started = ok(await send(w.user("anonymous"), "POST", "/app/sign-in/device"))
    w.issuer.approve(started["user_code"])
    return "/app/sign-in/token", {"json": {"device_code": started["device_code"]}}


# follow=false: the history (the last few events) and the end, so the cell's request completes.
BUILDERS[("GET", "/console/events")] = _fixed("/console/events", params={"follow": "false", "last": 5})
for _path in ("/console/pending", "/console/sites", "/console/jobs", "/console/dead-letters"):
    BUILDERS[("GET", _path)] = _fixed(_path)


@builds("POST", "/console/dead-letters/{sequence}/retry")
async def _retry_letter(w: World, role: Role) -> Request:
    return f"/console/dead-letters/{await w.dead_letter()}/retry", {}


@builds("DELETE", "/console/dead-letters/{sequence}")
async def _discard_letter(w: World, role: Role) -> Request:
    return f"/console/dead-letters/{await w.dead_letter()}", {}


@builds("DELETE", "/tokens/{token_id}")
async def _revoke(w: World, role: Role) -> Request:
    return f"/tokens/{await w.token()}", {}


# --- the table, walked ----------------------------------------------------------------------------


async def test_every_rule_of_the_table_has_a_cell_builder() -> None:
    assert set(BUILDERS) == {(r.method, r.path) for r in PERMISSIONS}


def cells(at_the_site: bool) -> Any:
    rules = [rule for rule in PERMISSIONS if ((rule.method, rule.path) in AT_THE_SITE) == at_the_site]
    return pytest.mark.parametrize(
        ("rule", "role"),
        [(rule, role) for rule in rules for role in ROLES],
        ids=[f"{rule.method} {rule.path} as {role}" for rule in rules for role in ROLES],
    )


@cells(at_the_site=False)
async def test_permission_cell(world: World, rule: Rule, role: Role) -> None:
    await _walk_cell(world, rule, role)


@cells(at_the_site=True)
async def test_permission_cell_at_the_site(world: World, site_agent: None, rule: Rule, role: Role) -> None:
    await _walk_cell(world, rule, role)


async def _walk_cell(world: World, rule: Rule, role: Role) -> None:
    url, kwargs = await BUILDERS[(rule.method, rule.path)](world, role)
    response = await send(world.as_role(role), rule.method, url, **kwargs)
    where = f"{rule.method} {url} as {role}: {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, where
    # One pending benchmark per user: reject what a cell left pending, so owners can submit again.
    if (rule.method, rule.path) == ("POST", "/benchmarks") and response.status_code == 201:
        await world.reject(response.json()["id"])
    if (rule.method, rule.path) == ("POST", f"{BENCH}/decision") and response.status_code != 200:
        await world.reject(int(url.split("/")[2]))
    if role in rule.allowed:
        # Stricter than "not 401/403": every allowed cell is built to succeed.
        assert 200 <= response.status_code < 300, where
    elif role == "anonymous":
        assert response.status_code == 401, where
    else:
        assert response.status_code in (403, 404), where


async def test_dataset_statistics_are_shown_only_to_those_with_a_stake(world: World) -> None:
    """The data owner, the committee of the benchmark it joined, the preparator's owner, admins."""
    seen = {}
    for user in USERS:
        data = ok(await send(world.user(user), "GET", f"/datasets/{world.ids['dataset']}"))
        seen[user] = data["statistics"] is not None
    assert seen == {
        "admin": True,
        "committee": True,
        "preparer": True,
        "data-owner": True,
        "model-owner": False,
        "stranger": False,
    }
