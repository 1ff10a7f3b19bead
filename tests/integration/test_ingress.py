"""The HTTP ingress against the real central services: who may do what, and what a user is told
when a request is wrong. No container engine needed: nothing here runs a container."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from users import stack_with_users

from cli.main import main
from services.ingress.app import build_app
from services.ingress.auth import Authenticator
from services.ingress.permissions import PERMISSIONS
from shared.settings import Settings
from shared.signing import SiteKey

TOKENS = {"admin": "t-admin", "committee": "t-committee", "stranger": "t-stranger"}
DIGEST = "sha256:" + "a" * 64


def spec(*tasks: str) -> dict:
    return {
        "image": "localhost/example:1",
        "image_digest": DIGEST,
        "tasks": {t: {"command": ["run", t]} for t in tasks},
    }


@pytest.fixture
async def api(tmp_path: Path, nats_url: str) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with stack_with_users(tmp_path, nats_url, TOKENS) as (_, clients):
        yield clients


async def _benchmark(api: dict[str, httpx.AsyncClient]) -> int:
    c = api["committee"]
    prep = await c.post("/containers", json={"name": "prep", "spec": spec("prepare", "sanity_check", "statistics")})
    metrics = await c.post("/containers", json={"name": "metrics", "spec": spec("evaluate")})
    model_container = await c.post("/containers", json={"name": "ref", "spec": spec("infer")})
    model = await c.post("/models", json={"name": "ref", "container_id": model_container.json()["id"]})
    response = await c.post(
        "/benchmarks",
        json={
            "name": "bench",
            "data_preparator_id": prep.json()["id"],
            "reference_model_id": model.json()["id"],
            "metrics_container_id": metrics.json()["id"],
            "demo_dataset": {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64},
            "metrics": [{"name": "auc"}],
            "primary_metric": "auc",
        },
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_a_request_without_a_known_token_is_refused_with_how_to_fix(api: dict) -> None:
    response = await api["anonymous"].get("/benchmarks")
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["error"]
    bad = await httpx.AsyncClient(
        base_url=str(api["anonymous"].base_url), headers={"Authorization": "Bearer nope"}
    ).get("/benchmarks")
    assert bad.status_code == 401


async def test_an_invalid_container_spec_is_refused_naming_the_field(api: dict) -> None:
    broken = spec("infer")
    broken["tasks"]["infer"]["inputs"] = {"bogus": {"mount_path": "/x"}}
    response = await api["committee"].post("/containers", json={"name": "c", "spec": broken})
    assert response.status_code == 422
    assert "tasks.infer.inputs.bogus" in response.json()["error"]

    response = await api["committee"].post(
        "/containers", json={"name": "c", "spec": {**spec("infer"), "image_digest": "latest"}}
    )
    assert response.status_code == 422
    assert "image_digest" in response.json()["error"]

    response = await api["committee"].post(
        "/containers", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "error" in response.json()


async def test_a_benchmark_is_checked_for_fitting_parts(api: dict) -> None:
    c = api["committee"]
    prep = (await c.post("/containers", json={"name": "p", "spec": spec("prepare")})).json()["id"]
    model_container = (await c.post("/containers", json={"name": "m", "spec": spec("infer")})).json()["id"]
    model = (await c.post("/models", json={"name": "m", "container_id": model_container})).json()["id"]
    response = await c.post(
        "/benchmarks",
        json={
            "name": "b",
            "data_preparator_id": prep,
            "reference_model_id": model,
            "metrics_container_id": prep,
            "demo_dataset": {"source": "https://example.org/d.tgz", "sha256": "c" * 64},
            "metrics": [{"name": "auc"}],
            "primary_metric": "accuracy",
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert "sanity_check" in error and "evaluate" in error and "primary_metric" in error

    response = await c.post("/models", json={"name": "x", "container_id": 999})
    assert response.status_code == 404 and "register it first" in response.json()["error"]


async def test_benchmark_approval_is_for_admins_and_makes_the_benchmark_visible(api: dict) -> None:
    benchmark = await _benchmark(api)
    assert (await api["stranger"].get(f"/benchmarks/{benchmark}")).status_code == 404
    assert (await api["committee"].get(f"/benchmarks/{benchmark}")).json()["approval_status"] == "PENDING"

    refused = await api["committee"].post(f"/benchmarks/{benchmark}/decision", json={"approve": True})
    assert refused.status_code == 403 and "admin" in refused.json()["error"]

    approved = await api["admin"].post(f"/benchmarks/{benchmark}/decision", json={"approve": True})
    assert approved.status_code == 200 and approved.json()["status"] == "APPROVED"
    again = await api["admin"].post(f"/benchmarks/{benchmark}/decision", json={"approve": True})
    assert again.status_code == 409

    # The registry learns the decision from the approvals service's event.
    for _ in range(100):
        response = await api["stranger"].get(f"/benchmarks/{benchmark}")
        if response.status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 200 and response.json()["approval_status"] == "APPROVED"


async def test_one_pending_benchmark_per_user(api: dict) -> None:
    await _benchmark(api)
    c = api["committee"]
    response = await c.post(
        "/benchmarks",
        json={
            "name": "second",
            "data_preparator_id": 1,
            "reference_model_id": 1,
            "metrics_container_id": 2,
            "demo_dataset": {"source": "https://example.org/d.tgz", "sha256": "d" * 64},
            "metrics": [{"name": "auc"}],
            "primary_metric": "auc",
        },
    )
    assert response.status_code == 409 and "waiting for approval" in response.json()["error"]


async def test_model_association_needs_an_approved_benchmark_and_a_passed_test(api: dict) -> None:
    benchmark = await _benchmark(api)
    s = api["stranger"]
    container = (await s.post("/containers", json={"name": "mine", "spec": spec("infer")})).json()["id"]
    # Only an operational model may join a benchmark (MedPerf: development entities are for trying out).
    model = (await s.post("/models", json={"name": "mine", "container_id": container, "state": "OPERATION"})).json()[
        "id"
    ]
    for _ in range(100):
        # Approvals learns of the model from the registry's event (503 until then). Only its
        # committee and admins see a pending benchmark: to its committee it is not open yet...
        early = await api["committee"].post(
            f"/benchmarks/{benchmark}/associations", json={"kind": "model", "component_id": model}
        )
        if early.status_code != 503:
            break
        await asyncio.sleep(0.05)
    assert early.status_code == 409 and "approves it" in early.json()["error"]
    # ... and to the model's owner it does not exist, in the same words as a benchmark that does not.
    hidden = await s.post(f"/benchmarks/{benchmark}/associations", json={"kind": "model", "component_id": model})
    assert hidden.status_code == 404 and hidden.json() == {"error": f"no benchmark {benchmark}"}

    await api["admin"].post(f"/benchmarks/{benchmark}/decision", json={"approve": True})
    requested = await s.post(f"/benchmarks/{benchmark}/associations", json={"kind": "model", "component_id": model})
    assert requested.status_code == 201, requested.text
    own = await s.post(f"/benchmarks/{benchmark}/associations/model/{model}/decision", json={"approve": True})
    assert own.status_code == 403 and "other party" in own.json()["error"]
    untested = await api["committee"].post(
        f"/benchmarks/{benchmark}/associations/model/{model}/decision", json={"approve": True}
    )
    assert untested.status_code == 409 and "compatibility test" in untested.json()["error"]
    rejected = await api["committee"].post(
        f"/benchmarks/{benchmark}/associations/model/{model}/decision", json={"approve": False, "reason": "no test yet"}
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "REJECTED"
    history = (await api["committee"].get(f"/benchmarks/{benchmark}/associations")).json()
    assert [(a["status"], a["decided_by"]) for a in history] == [("REJECTED", "committee")]


async def test_an_issued_token_works_until_revoked_and_then_within_two_seconds_no_more(api: dict) -> None:
    admin = api["admin"]
    assert (await admin.post("/users", json={"name": "dana"})).status_code == 201
    assert (await api["committee"].post("/users/dana/tokens", json={})).status_code == 403  # admins only
    issued = await admin.post("/users/dana/tokens", json={"label": "laptop"})
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"  # the one copy of the token stays out of caches
    token, token_id = issued.json()["token"], issued.json()["id"]
    dana = httpx.AsyncClient(base_url=str(admin.base_url), headers={"Authorization": f"Bearer {token}"})
    me = await dana.get("/me")
    assert me.status_code == 200 and me.json() == {"user": "dana", "is_admin": False}
    assert (await dana.post("/users", json={"name": "eve"})).status_code == 403

    assert (await admin.delete(f"/tokens/{token_id}")).status_code == 200
    revoked_at = time.monotonic()
    while (await dana.get("/me")).status_code != 401:
        assert time.monotonic() - revoked_at < 2.0, "a revoked token still works after 2 s"
        await asyncio.sleep(0.1)
    refused = await dana.get("/me")
    assert "Authorization: Bearer" in refused.json()["error"] and refused.headers["www-authenticate"] == "Bearer"
    await dana.aclose()


async def test_the_admin_cli_creates_users_and_issues_and_revokes_tokens(
    api: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDPERF_URL", str(api["admin"].base_url))
    monkeypatch.setenv("MEDPERF_TOKEN", TOKENS["admin"])
    # The CLI is synchronous; the ingress runs on this event loop, so the CLI runs in a thread.
    assert await asyncio.to_thread(main, ["admin", "create-user", "frank", "--admin"]) == 0
    assert "created user frank (admin)" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["admin", "issue-token", "frank", "--label", "ci"]) == 0
    header, token = capsys.readouterr().out.strip().splitlines()
    assert "shown once" in header and token.startswith("mpf_")
    frank = httpx.AsyncClient(base_url=str(api["admin"].base_url), headers={"Authorization": f"Bearer {token}"})
    assert (await frank.get("/me")).json() == {"user": "frank", "is_admin": True}
    token_id = int(header.split()[1])
    assert await asyncio.to_thread(main, ["admin", "revoke-token", str(token_id)]) == 0
    assert f"revoked token {token_id}" in capsys.readouterr().out

    monkeypatch.setenv("MEDPERF_TOKEN", TOKENS["stranger"])
    assert await asyncio.to_thread(main, ["admin", "create-user", "gina"]) == 1
    assert "admins only" in capsys.readouterr().err
    await frank.aclose()


async def test_entities_are_edited_by_their_owner_and_listed_with_filters(api: dict) -> None:
    c, s = api["committee"], api["stranger"]
    mine = (await c.post("/containers", json={"name": "lung-prep", "spec": spec("infer")})).json()["id"]
    await s.post("/containers", json={"name": "other", "spec": spec("infer")})
    edited = await c.patch(f"/containers/{mine}", json={"changes": {"user_metadata": {"site": "a"}}})
    assert edited.status_code == 200, edited.text
    refused = await s.patch(f"/containers/{mine}", json={"changes": {"user_metadata": {"site": "b"}}})
    assert refused.status_code == 403
    assert (await c.patch(f"/containers/{mine}", json={"changes": {}})).status_code == 422
    assert (await c.patch(f"/containers/{mine}", json={"change": {"name": "x"}})).status_code == 422  # typo

    assert [x["name"] for x in (await c.get("/me/containers")).json()] == ["lung-prep"]
    assert [x["name"] for x in (await c.get("/containers", params={"mine": True})).json()] == ["lung-prep"]
    assert len((await c.get("/containers", params={"owner": "stranger"})).json()) == 1
    assert [x["name"] for x in (await s.get("/containers", params={"name_contains": "lung"})).json()] == ["lung-prep"]
    assert len((await s.get("/containers", params={"limit": 1})).json()) == 1
    assert (await s.get("/containers", params={"limit": 0})).status_code == 422
    too_big = await s.get(f"/containers/{2**40}")
    assert too_big.status_code == 422 and "entity_id" in too_big.json()["error"]

    assert (await c.delete(f"/containers/{mine}")).status_code == 403  # admins only, refused at the ingress
    assert (await api["admin"].delete(f"/containers/{mine}", params={"reason": "test"})).status_code == 200
    assert (await c.get(f"/containers/{mine}")).status_code == 404


async def test_asking_to_join_with_a_component_that_does_not_exist_is_404_not_retry_later(api: dict) -> None:
    benchmark = await _benchmark(api)
    await api["admin"].post(f"/benchmarks/{benchmark}/decision", json={"approve": True})
    response = await api["committee"].post(
        f"/benchmarks/{benchmark}/associations", json={"kind": "model", "component_id": 4242}
    )
    assert response.status_code == 404 and "4242" in response.json()["error"]


def test_the_openapi_document_describes_every_body_and_every_endpoint_of_the_permission_table() -> None:
    settings = Settings(nats_url="nats://127.0.0.1:1")
    document = build_app(None, settings, Authenticator.from_settings(settings)).openapi()  # type: ignore[arg-type]
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert operations == {(r.method, r.path) for r in PERMISSIONS}
    for path, method, schema in (
        ("/containers/{entity_id}", "patch", "EntityChanges"),
        ("/benchmarks/{benchmark_id}/auto-approval/{kind}", "put", "AutoApproval"),
        ("/users", "post", "NewUser"),
        ("/benchmarks", "post", "SubmitBenchmarkBody"),
    ):
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith(f"/{schema}")
    new_user = document["components"]["schemas"]["NewUser"]
    assert set(new_user["properties"]) == {"name", "admin"}  # never actor or is_admin: those come from the token
    filters = {p["name"] for p in document["paths"]["/benchmarks"]["get"]["parameters"]}
    assert {"mine", "owner", "state", "is_valid", "approval_status", "name_contains", "limit", "offset"} <= filters
    # A container author finds the runtime contract from the API's own description.
    assert "docs/containers.md" in document["info"]["description"]
    assert "docs/containers.md" in document["components"]["schemas"]["ContainerSpec"]["description"]


# Each is a valid ISO 8601 time whose UTC equivalent falls outside what a datetime can hold.
BEYOND_UTC = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")


async def test_times_beyond_the_utc_range_or_without_a_zone_are_422_naming_the_field_and_the_range(
    api: dict,
) -> None:
    admin, committee = api["admin"], api["committee"]
    benchmark = await _benchmark(api)
    key = SiteKey.generate()
    assert (await admin.post("/sites/site-t/keys", json={"public_key": key.public_key})).status_code == 201
    requests = {
        "since_time": lambda t: admin.get("/console/events", params={"since_time": t, "follow": "false"}),
        "compromised_since": lambda t: admin.post(
            f"/sites/site-t/keys/{key.key_id}/revocation", json={"compromised_since": t}
        ),
        "embargo_until": lambda t: committee.put(
            f"/benchmarks/{benchmark}/sharing-policy", json={"released": True, "embargo_until": t}
        ),
    }
    for field, send in requests.items():
        for time_given in BEYOND_UTC:
            response = await send(time_given)
            error = response.json()["error"] if response.status_code == 422 else response.text
            assert response.status_code == 422, f"{field}={time_given}: {response.status_code} {error}"
            assert field in error and "0001-01-01T00:00:00Z" in error and "9999-12-31T23:59:59Z" in error, error
        naive = await send("2026-01-31T09:00:00")
        assert naive.status_code == 422 and field in naive.json()["error"], f"{field}: {naive.text}"
        assert "time zone" in naive.json()["error"], naive.text
    earliest = await admin.get("/console/events", params={"since_time": "0001-01-01T00:00:00Z", "follow": "false"})
    assert earliest.status_code == 200  # the edge of the range itself is fine
