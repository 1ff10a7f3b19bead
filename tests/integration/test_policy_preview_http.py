"""``POST /benchmarks/{id}/sharing-policy/preview`` over the real ingress and aggregator on a real
nats-server and SQLite: boards get their results and failed runs as in test_board_failures.py (the
sites' signed events, published), and the committee previews policies it has not set.

The board: reference model 1 and model 2 of ``owner``, models 3 and 4 of the modeler, sites 10..12;
model 4 failed at every site; the policy in force is committee-only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from nats.js import JetStreamContext
from test_aggregator_results import COMMITTEE, js, publish, result
from test_board_failures import MODELER, failed, start
from waiting import eventually

from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.settings import Settings

__all__ = ["js"]  # the fixture, shared with test_aggregator_results

USERS = ("admin", COMMITTEE, MODELER, "owner", "stranger")


@pytest.fixture
async def stack(nats_url: str, tmp_path: Path, js: JetStreamContext) -> AsyncIterator[Stack]:
    settings = Settings(
        nats_url=nats_url,
        state_dir=tmp_path,
        http_port=0,
        admins=["admin"],
        max_deliveries=3,
        api_token_digests={token_digest(f"t-{u}"): u for u in USERS},
    )
    async with Stack(settings, services=("aggregator", "ingress")) as running:
        yield running


def client(stack: Stack, user: str) -> httpx.AsyncClient:
    assert stack.ingress is not None
    return httpx.AsyncClient(base_url=stack.ingress.url, headers={"Authorization": f"Bearer t-{user}"})


def rows(board: dict) -> dict[str, dict]:
    return {row["model"]: row for row in board["rows"]}


async def test_the_committee_previews_each_audience_side_by_side(stack: Stack, js: JetStreamContext) -> None:
    await start(js, stack.hosts["aggregator"])  # committee-only, everything approved
    await publish(js, result(1, 10, 0.5), result(2, 10, 0.8), result(2, 11, 0.7), result(3, 12, 0.6))
    await publish(js, *(failed(4, d, "metrics" if d == 12 else "model", job=d) for d in (10, 11, 12)))
    committee, modeler, stranger, admin = (client(stack, u) for u in (COMMITTEE, MODELER, "stranger", "admin"))
    url = "/benchmarks/1/sharing-policy/preview"

    async def board_complete() -> bool:
        board = (await committee.get("/benchmarks/1/leaderboard")).json()
        return len(board.get("rows", [])) == 4 and len(rows(board)["model-4"]["failed"]) == 3

    await eventually(board_complete, "the results and model 4's failures on the committee's board")

    answer = await committee.post(url, json={"visibility": "public", "granularity": "sites"})
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["benchmark_id"] == 1 and shown["benchmark"] == "bench"
    assert shown["policy"]["visibility"] == "public" and shown["current_policy"]["visibility"] == "committee"
    public, participant = shown["public"], shown["participant"]
    assert public["scope"] == participant["scope"] == "shared" and participant["yours"] is None
    assert public["datasets"] == ["Site A", "Site B", "Site C"]
    # The model that failed everywhere is on every board: last, unranked, whose fault at each site.
    for audience in ("public", "participant", "committee"):
        last = shown[audience]["rows"][-1]
        assert (last["model"], last["rank"], last["sites_failed"]) == ("model-4", None, 3), audience
    assert rows(public)["model-4"]["failed"]["Site C"] == {"fault": "metrics", "reason": "the metrics container failed"}
    full = rows(shown["committee"])["model-4"]["failed"]
    assert full["site-10"] == {"fault": "model", "reason": "infer failed: exited with 1"}
    assert shown["committee"]["scope"] == "committee" and shown["committee"]["datasets"] == [
        "site-10",
        "site-11",
        "site-12",
    ]
    # The first model other than the reference, of a participating owner other than the committee.
    assert shown["model_owner_is"] == {"user": "owner", "model_id": 2, "model": "model-2"}
    assert shown["model_owner"]["scope"] == "shared"
    assert set(rows(shown["model_owner"]["yours"])) == {"model-1", "model-2"}  # owner owns the reference too

    # Under the policy in force, the public is refused, saying why; the owners see their own.
    now = (await committee.post(url, json={"visibility": "committee"}, params={"limit": 1})).json()
    assert now["public"] == {"refused": "this benchmark's committee shares its results with its committee only"}
    assert now["participant"] == {"scope": "none", "yours": None}
    assert now["model_owner"]["scope"] == "own" and len(now["committee"]["rows"]) == 1
    assert now["committee"]["total_rows"] == 4

    # Nothing was saved: the board is still the committee's only.
    assert (await stranger.get("/benchmarks/1/leaderboard")).status_code == 403
    # The committee and admins only; a benchmark nobody has is a 404, as for the leaderboard.
    assert (await admin.post(url, json={})).status_code == 200
    refused = await modeler.post(url, json={"visibility": "public"})
    assert refused.status_code == 403 and "committee" in refused.json()["error"]
    missing = await committee.post("/benchmarks/999/sharing-policy/preview", json={})
    assert missing.status_code == 404 and missing.json() == {"error": "no benchmark 999"}
    invalid = await committee.post(url, json={"visibility": "everyone"})
    assert invalid.status_code == 422 and "visibility" in invalid.json()["error"]
    too_many = await committee.post(url, json={}, params={"limit": 26})
    assert too_many.status_code == 422
    for c in (committee, modeler, stranger, admin):
        await c.aclose()
