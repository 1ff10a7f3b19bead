"""A service down for longer than JetStream's duplicate window, with outbox rows whose publish went
out but whose acknowledgement was lost: the stream, the federation's history, still holds each
event once (before: the relay sent them again, and the REGISTRY stream held 3,003 events for 3,000
containers)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import httpx
import nats
from faults import KillableFederation, start_central
from history import stream_messages
from nats.js.api import StreamConfig
from waiting import eventually

TOKENS = {"admin": "t-admin", "committee": "t-committee"}
COMMITTEE = {"Authorization": "Bearer t-committee"}


async def registry_history(url: str) -> Counter[str]:
    nc = await nats.connect(url)
    try:
        return Counter(
            (m.headers or {}).get("Nats-Msg-Id", "") for m in await stream_messages(nc.jetstream(), "REGISTRY")
        )
    finally:
        await nc.close()


async def shorten_duplicate_window(url: str, seconds: float) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config: StreamConfig = (await js.stream_info("REGISTRY")).config
        config.duplicate_window = seconds
        await js.update_stream(config)
    finally:
        await nc.close()


def test_rows_sent_before_an_outage_longer_than_the_window_are_not_stored_twice(tmp_path: Path) -> None:
    cluster = start_central(tmp_path, TOKENS)
    try:
        tag = uuid.uuid4().hex[:8]
        spec = {"image": "x/y:1", "image_digest": "sha256:" + "a" * 64, "tasks": {"infer": {"command": ["infer"]}}}
        for i in range(20):
            body = {"name": f"c-{tag}-{i}", "spec": spec}
            assert httpx.post(f"{cluster.http_url}/containers", json=body, headers=COMMITTEE).status_code == 201
        asyncio.run(eventually(lambda: all_published(cluster), "every row to be published"))
        before = asyncio.run(registry_history(cluster.url))
        assert before and max(before.values()) == 1
        # The window passes while the registry is down: JetStream forgets the ids (the test makes
        # the window short rather than waiting two minutes; the registry restores it at its start).
        cluster.kill("registry")
        asyncio.run(shorten_duplicate_window(cluster.url, 0.5))
        asyncio.run(asyncio.sleep(1.5))
        # Its last acknowledgements were lost: the rows are unmarked, as written ten minutes ago.
        with closing(sqlite3.connect(cluster.database("registry"), timeout=10)) as db:
            db.execute("UPDATE registry_outbox SET published_at = NULL, created_at = '2026-01-01 00:00:00.000000'")
            db.commit()
        cluster.start("registry")
        asyncio.run(eventually(lambda: all_published(cluster), "the restarted registry's relay", timeout=30))
        after = asyncio.run(registry_history(cluster.url))
        assert after == before, f"stored twice: {[i for i, n in after.items() if n > 1]}"
    finally:
        cluster.stop()


async def all_published(cluster: KillableFederation) -> bool:
    return cluster.rows("registry", "SELECT COUNT(*) FROM registry_outbox WHERE published_at IS NULL") == [(0,)]
