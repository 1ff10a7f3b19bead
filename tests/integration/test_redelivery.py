"""Duplicate and out-of-order delivery, differentially: the event history of a real run (registry,
approvals, aggregator, a site agent, Docker) is replayed into fresh central services on a fresh
nats-server twice over: once as it happened, and once with every message delivered a second
time (a new Nats-Msg-Id, so JetStream keeps both) and the whole in a locally shuffled order. The
services' final tables (registry rows, approvals, the leaderboard projection) must be identical."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import nats
import pytest
from faults import consumers
from figures import record
from history import stream_messages
from sites import USERS, Federation, site_settings
from waiting import eventually

from cli.client import Client
from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.broker import EmbeddedNats, ensure_streams
from shared.settings import Settings

pytestmark = pytest.mark.engine

EVENT_STREAMS = ("REGISTRY", "APPROVALS", "AGGREGATOR", "SITES")
# Columns that record when or in which order something was stored, not what: a redelivered or
# reordered history may give them other values and still be the same state. The aggregator's ticks
# count transactions, and how many events a transaction takes depends on the consumers' timing.
VOLATILE = ("id", "revision", "tick", "meta_tick")


async def history(url: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        found = []
        for stream in EVENT_STREAMS:
            found += [(m.subject, m.data or b"") for m in await stream_messages(js, stream)]
        return found
    finally:
        await nc.close()


def state_of(state_dir: Path) -> dict[str, list[str]]:
    """Every service table's rows, without volatile columns, as a sorted multiset."""
    tables: dict[str, list[str]] = {}
    for db_path in sorted(state_dir.glob("*.db")):
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in names:
                if table.endswith("_outbox"):
                    continue  # the services' own new events carry new ids on every replay
                cursor = db.execute(f'SELECT * FROM "{table}"')
                columns = [c[0] for c in cursor.description]
                keep = [i for i, c in enumerate(columns) if c not in VOLATILE and not c.endswith("_at")]
                tables[f"{db_path.stem}.{table}"] = sorted(repr([row[i] for i in keep]) for row in cursor.fetchall())
    return tables


async def replay(root: Path, messages: list[tuple[str, bytes]]) -> dict[str, list[str]]:
    """Fresh nats-server and fresh registry, approvals and aggregator; ``messages`` published in
    the order given; the tables once every consumer has drained."""
    with EmbeddedNats(root / "nats") as url:
        await ensure_streams(url)
        settings = Settings(nats_url=url, state_dir=root / "state", max_deliveries=8)
        async with Stack(settings, services=("registry", "approvals", "aggregator")):
            nc = await nats.connect(url)
            try:
                js = nc.jetstream()
                for subject, body in messages:
                    await js.publish(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
            finally:
                await nc.close()

            async def drained() -> bool:
                return not [c for c in await consumers(url) if c.pending or c.unacknowledged]

            # Out of order, a result can arrive before its benchmark and wait for a retry with backoff;
            # an unacknowledged batch member comes back after its 60 s ack wait.
            await eventually(drained, "the replayed history to be consumed", timeout=90, interval=0.5)
        return state_of(root / "state")


async def test_every_message_twice_and_shuffled_gives_the_same_state(tmp_path: Path, busybox_image: str) -> None:
    settings = Settings(
        state_dir=tmp_path / "run",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    site = site_settings(tmp_path).model_copy(update={"name": f"replay-{uuid.uuid4().hex[:6]}"})
    async with Stack(settings, services=("registry", "approvals", "aggregator", "ingress"), sites=[site]) as stack:
        assert stack.ingress and stack.settings.nats_url
        clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        try:
            uow = stack.hosts[f"site-{site.name}"].uow
            fed = Federation(stack.settings.nats_url, clients, busybox_image, site, uow)
            await fed.join()
            for name in ("m1", "m2"):
                await fed.job_reaches(await fed.add_model(name, "echo 1 > /out/p1; echo 2 > /out/p2"), "succeeded")

            async def all_results() -> bool:
                return len(await fed.events(".result.reported")) == 3

            await eventually(all_results, "three results on the stream", timeout=30)
            recorded = await history(stack.settings.nats_url)
        finally:
            for client in clients.values():
                client.close()

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    doubled = [m for message in recorded for m in (message, message)]
    # Shuffled within windows of 8: far enough to put effects before causes, near enough that
    # each message's cause still arrives within the consumers' retries.
    shuffled = []
    for start in range(0, len(doubled), 8):
        window = doubled[start : start + 8]
        rng.shuffle(window)
        shuffled.extend(window)
    assert shuffled != doubled
    in_order = await replay(tmp_path / "once", recorded)
    perturbed = await replay(tmp_path / "twice-shuffled", shuffled)
    assert in_order["aggregator.aggregator_results"], "the replay produced a leaderboard"
    differing = sorted(t for t in in_order.keys() | perturbed.keys() if in_order.get(t) != perturbed.get(t))
    assert differing == [], f"seed {seed}: {differing}"
    digest = hashlib.sha256(repr(sorted(in_order.items())).encode()).hexdigest()[:12]
    record(
        "duplicate and out-of-order delivery",
        events_in_history=len(recorded),
        deliveries_replayed=len(shuffled),
        shuffle_seed=seed,
        tables_compared=len(in_order),
        tables_differing=0,
        state_digest=digest,
    )
