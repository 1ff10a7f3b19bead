"""What a caller may not see is 404 on every route that names it, never 403, and its 404 says no
more than a truly missing id's: a walk over every route of the OpenAPI document with an id in its
path, against the real services and ingress, as an ordinary user.

Hidden from that user: another user's pending benchmark, and another user's invalidated container,
model and dataset (the registry shows these to their owner and admins only), another user's
API token, and a site known only by such a dataset. Each route is called once with the hidden ids
and once with ids that do not exist; the two answers must be the same 404 (ids aside). A second
walk names an invalidated model in the model slot of an approved, visible benchmark's routes.

403 stays for what the caller can see but may not touch, and two kinds of route are exceptions,
each for a reason: the ``admin_only`` ones (the ingress refuses every non-admin with the same 403
before any service looks at the id, so the answer cannot depend on it) and the site routes (sites
and their public keys are public; nothing there is hidden).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from users import stack_with_users

from services.aggregator import listings
from services.aggregator.store import TABLES, Base
from services.ingress.gateway import INT32_MAX
from services.ingress.permissions import RULES, rule_for
from shared.broker import EmbeddedNats
from shared.db import Database, UnitOfWork
from shared.events import BenchmarkApproved, BenchmarkRejected

pytestmark = pytest.mark.asyncio(loop_scope="module")

USERS = ("admin", "owner", "stranger")
MISSING = INT32_MAX  # a valid id that nothing has
DIGEST = "sha256:" + "a" * 64
PLURAL = {"containers": "container", "models": "model", "benchmarks": "benchmark", "datasets": "dataset"}
PUBLIC = {
    ("GET", "/sites/{site}/keys"): "a site's keys are public, for anyone to check signatures",
    ("POST", "/sites/{site}/keys"): "sites are not hidden: the 403 names the site's owners, as GET shows them",
    ("POST", "/sites/{site}/keys/{key_id}/revocation"): "sites and their keys are public (GET lists them)",
    ("GET", "/app/assets/{name}"): "the web app's built files: code, the same for everyone, no data",
}
#: A valid body (or query) for each route that needs one, so that the answer is about the ids.
REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/{plural}/{entity_id}"): {"json": {"changes": {"user_metadata": {"probe": 1}}}},
    ("DELETE", "/{plural}/{entity_id}"): {"params": {"reason": "probe"}},
    ("POST", "/benchmarks/{benchmark_id}/decision"): {"json": {"approve": False}},
    ("POST", "/benchmarks/{benchmark_id}/associations/{kind}/{component_id}/decision"): {"json": {"approve": False}},
    ("PUT", "/benchmarks/{benchmark_id}/auto-approval/{kind}"): {"json": {"mode": "NEVER"}},
    ("PUT", "/benchmarks/{benchmark_id}/models/{model_id}/priority"): {"json": {"priority": 1}},
    ("PUT", "/benchmarks/{benchmark_id}/sharing-policy"): {"json": {"visibility": "public"}},
    ("POST", "/benchmarks/{benchmark_id}/sharing-policy/preview"): {"json": {"visibility": "public"}},
    ("POST", "/users/{name}/tokens"): {"json": {"label": "probe"}},
    ("POST", "/sites/{site}/held-results/release"): {"json": {"all": True}},
}


def spec(*tasks: str) -> dict:
    return {"image": "localhost/example:1", "image_digest": DIGEST, "tasks": {t: {"command": [t]} for t in tasks}}


@dataclass
class World:
    clients: dict[str, httpx.AsyncClient]
    ids: dict[str, int] = field(default_factory=dict)

    async def send(self, user: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """503 means a service is still catching up on events: retry it a while."""
        for _ in range(200):
            response = await self.clients[user].request(method, url, **kwargs)
            if response.status_code != 503:
                break
            await asyncio.sleep(0.05)
        return response

    async def ok(self, user: str, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.send(user, method, url, **kwargs)
        assert response.status_code in (200, 201), f"{method} {url}: {response.text}"
        return response.json()

    async def until(self, user: str, url: str, status: int, patience: int = 200) -> int:
        """Poll until ``url`` answers ``status`` (a projection caught up); the last status seen."""
        for _ in range(patience):
            seen = (await self.send(user, "GET", url)).status_code
            if seen == status:
                break
            await asyncio.sleep(0.05)
        return seen


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root: Path = tmp_path_factory.mktemp("invisible")
    tokens = {user: f"t-{user}" for user in USERS}
    with EmbeddedNats(root / "nats") as nats_url:
        async with stack_with_users(root, nats_url, tokens) as (_, clients):
            world = World(clients)
            await _populate(world)
            yield world


async def _benchmark(w: World, name: str) -> int:
    body = {
        "name": name,
        "data_preparator_id": w.ids["prep"],
        "reference_model_id": w.ids["reference"],
        "metrics_container_id": w.ids["metrics"],
        "demo_dataset": {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64},
        "metrics": [{"name": "auc"}],
        "primary_metric": "auc",
    }
    return (await w.ok("owner", "POST", "/benchmarks", json=body))["id"]


async def _invalidated(w: World, plural: str, body: dict) -> int:
    entity = (await w.ok("owner", "POST", f"/{plural}", json=body))["id"]
    await w.ok("owner", "PATCH", f"/{plural}/{entity}", json={"changes": {"is_valid": False}})
    return entity


async def _populate(w: World) -> None:
    w.ids["prep"] = (
        await w.ok(
            "owner", "POST", "/containers", json={"name": "prep", "spec": spec("prepare", "sanity_check", "statistics")}
        )
    )["id"]
    metrics = await w.ok("owner", "POST", "/containers", json={"name": "metrics", "spec": spec("evaluate")})
    w.ids["metrics"] = metrics["id"]
    infer = (await w.ok("owner", "POST", "/containers", json={"name": "ref", "spec": spec("infer")}))["id"]
    w.ids["reference"] = (await w.ok("owner", "POST", "/models", json={"name": "ref", "container_id": infer}))["id"]
    # An approved benchmark first (one pending benchmark per owner), then the pending one.
    approved = w.ids["approved"] = await _benchmark(w, "approved")
    for _ in range(200):
        decided = await w.send("admin", "POST", f"/benchmarks/{approved}/decision", json={"approve": True})
        if decided.status_code != 404:  # approvals learns of the benchmark from an event
            break
        await asyncio.sleep(0.05)
    assert decided.status_code == 200, decided.text
    assert await w.until("stranger", f"/benchmarks/{approved}", 200) == 200
    w.ids["pending"] = await _benchmark(w, "pending")
    w.ids["container"] = await _invalidated(w, "containers", {"name": "hidden", "spec": spec("infer")})
    w.ids["model"] = await _invalidated(w, "models", {"name": "hidden", "container_id": infer})
    dataset = {
        "name": "hidden",
        "site": "site-hidden",
        "data_preparator_id": w.ids["prep"],
        "input_hash": "1" * 64,
        "prepared_hash": "2" * 64,
        "statistics": {"cases": 3},
    }
    w.ids["dataset"] = await _invalidated(w, "datasets", dataset)
    own = (await w.ok("stranger", "POST", "/containers", json={"name": "mine", "spec": spec("infer")}))["id"]
    body = {"name": "mine", "container_id": own, "state": "OPERATION"}
    w.ids["own_model"] = (await w.ok("stranger", "POST", "/models", json=body))["id"]
    await w.ok("admin", "POST", "/users", json={"name": "owner"})
    w.ids["token"] = (await w.ok("admin", "POST", "/users/owner/tokens", json={"label": "laptop"}))["id"]
    # The hidden things must be known where each route is answered, or "missing" would be trivial.
    pending = w.ids["pending"]
    assert await w.until("admin", f"/benchmarks/{pending}/audit", 200) == 200  # approvals
    assert await w.until("admin", f"/benchmarks/{pending}/leaderboard", 200) == 200  # aggregator
    for plural in ("models", "datasets"):
        assert await w.until("admin", f"/{plural}/{w.ids[plural[:-1]]}/audit", 200) == 200
        await w.until("stranger", f"/{plural}/{w.ids[plural[:-1]]}/audit", 404)  # the invalidation, too
    await w.until("stranger", f"/benchmarks/{approved}/models/{w.ids['model']}/provenance", 404)
    distinct = [w.ids[k] for k in ("pending", "container", "model", "dataset", "own_model", "reference", "token")]
    assert MISSING not in distinct


async def operations(world: World) -> list[tuple[str, str]]:
    document = (await world.clients["admin"].get("/openapi.json")).json()
    return sorted((m.upper(), p) for p, methods in document["paths"].items() for m in methods if "{" in p)


def request_of(method: str, path: str, ids: dict[str, Any]) -> dict[str, Any]:
    if (method, path) == ("POST", "/benchmarks/{benchmark_id}/associations"):
        return {"json": {"kind": "model", "component_id": ids["component_id"]}}  # the caller's own model
    generic = re.sub(r"^/(containers|models|benchmarks|datasets)/\{entity_id\}$", "/{plural}/{entity_id}", path)
    return REQUESTS.get((method, path)) or REQUESTS.get((method, generic)) or {}


def fill(path: str, ids: dict[str, Any]) -> str:
    entity = PLURAL.get(path.split("/")[1], "")
    values = {**ids, "entity_id": ids.get(entity, ids.get("entity_id"))}
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def normalised(response: httpx.Response, ids: dict[str, Any], differing: set[str]) -> tuple[int, str]:
    text = response.text
    for key in differing:
        text = re.sub(rf"\b{re.escape(str(ids[key]))}\b", "{id}", text)
    return response.status_code, text


async def ask_both(world: World, method: str, path: str, hidden: dict, missing: dict) -> tuple[tuple, tuple]:
    differing = {k for k in hidden if hidden[k] != missing[k]}
    kwargs = request_of(method, path, hidden)
    seen_hidden = await world.send("stranger", method, fill(path, hidden), **kwargs)
    seen_missing = await world.send("stranger", method, fill(path, missing), **kwargs)
    return normalised(seen_hidden, hidden, differing), normalised(seen_missing, missing, differing)


async def test_every_route_naming_something_hidden_answers_as_if_it_did_not_exist(world: World) -> None:
    ids = world.ids
    common = {"kind": "model", "component_id": ids["own_model"], "model_id": ids["reference"], "name": "owner"}
    common |= {"site": "site-hidden", "key_id": "0" * 16, "sequence": 1, "job_id": 1}
    hidden = {
        **common,
        "benchmark_id": ids["pending"],
        "benchmark": ids["pending"],
        "container": ids["container"],
        "model": ids["model"],
        "dataset": ids["dataset"],
        "token_id": ids["token"],
    }
    missing = {**hidden, **dict.fromkeys(("benchmark_id", "benchmark", "container", "model", "dataset"), MISSING)}
    missing["token_id"] = MISSING
    # A site whose only dataset is another's invalidated one is hidden too (the public site routes
    # are skipped): releasing what it holds answers as for a site nobody registered.
    missing["site"] = "site-nowhere"
    no_benchmark = normalised(await world.send("stranger", "GET", f"/benchmarks/{MISSING}"), missing, {"benchmark"})
    assert no_benchmark == (404, '{"error":"no benchmark {id}"}')
    walked, leaks = [], []
    for method, path in await operations(world):
        if (method, path) in PUBLIC:
            continue
        answer_hidden, answer_missing = await ask_both(world, method, path, hidden, missing)
        walked.append(f"{method} {path}")
        expected = (403,) if rule_for(method, path).admin_only else (404,)
        if answer_hidden != answer_missing or answer_hidden[0] not in expected:
            leaks.append(f"{method} {path}: hidden {answer_hidden} vs missing {answer_missing}")
        elif path.startswith("/benchmarks/{") and expected == (404,) and answer_hidden != no_benchmark:
            leaks.append(f"{method} {path}: {answer_hidden}, not GET /benchmarks/{{id}}'s {no_benchmark}")
    assert not leaks, "\n".join(leaks)
    assert len(walked) == len({k for k in RULES if "{" in k[1]}) - len(PUBLIC)


async def test_a_hidden_model_in_a_visible_benchmarks_routes_answers_as_a_missing_one(world: World) -> None:
    ids = world.ids
    common = {"benchmark_id": ids["approved"], "kind": "model"}
    hidden = {**common, "model_id": ids["model"], "component_id": ids["model"]}
    missing = {**common, "model_id": MISSING, "component_id": MISSING}
    leaks = []
    for method, path in await operations(world):
        if "{model_id}" not in path and "{component_id}" not in path:
            continue
        answer_hidden, answer_missing = await ask_both(world, method, path, hidden, missing)
        if answer_hidden != answer_missing or answer_hidden[0] not in (403, 404):
            leaks.append(f"{method} {path}: hidden {answer_hidden} vs missing {answer_missing}")
    # Named in a request's body, not its path: asking to join with someone else's hidden model.
    url = f"/benchmarks/{ids['approved']}/associations"
    for component, ids_ in ((ids["model"], hidden), (MISSING, missing)):
        answer = await world.send("stranger", "POST", url, json={"kind": "model", "component_id": component})
        leaks.append(normalised(answer, ids_, {"model_id"}))  # type: ignore[arg-type]
    body_hidden, body_missing = leaks.pop(-2), leaks.pop()
    assert body_hidden == body_missing == (404, '{"error":"no model {id}"}'), (body_hidden, body_missing)
    assert not leaks, "\n".join(map(str, leaks))


async def test_the_aggregator_keeps_a_revoked_benchmark_hidden_whichever_decision_arrives_first(
    tmp_path: Path,
) -> None:
    """Approvals and rejections reach the aggregator through two consumers, in either order."""
    db = Database(f"sqlite:///{tmp_path / 'aggregator.db'}")
    await db.create_all(Base.metadata)
    try:
        approved = BenchmarkApproved(actor="admin", benchmark_id=1, name="b")
        revoked = BenchmarkRejected(actor="admin", benchmark_id=1, name="b", reason="withdrawn")
        for event in (revoked, approved):  # the revocation first
            await listings.record_decision(event, UnitOfWork(db, TABLES))
        async with UnitOfWork(db, TABLES) as uow:
            assert not await listings.is_public(uow.session, "benchmark", 1)
            assert await listings.is_public(uow.session, "model", 1)  # a model is, until invalidated
    finally:
        await db.dispose()
