"""Aggregator speed, against raw nats-py in the same run.

1. Ingest: the aggregator (its own process, SQLite, as ``medperf serve aggregator``) is paused
   with SIGSTOP while the bench publishes ``--models`` x ``--sites`` ResultReported events, then
   resumed; results/s is counted from the consumer's first delivery until every result is
   acknowledged (each one committed into the read model, the leaderboard current). Baseline:
   a raw nats-py durable pull consumer draining the same messages (fetch 256, ack each).
2. Leaderboard queries at that size, p50/p99: the committee's full matrix (a page of 100 and
   of 20 rows), and a public viewer's aggregate and per-site boards. Each asked as the ingress
   asks (NATS request/reply, the answer decoded as the ingress decodes it), "again" by one
   viewer (the aggregator keeps an encoded answer until the board changes) and as the "first
   look" of as many distinct viewers (each one computed and encoded); then the same over HTTP
   through the ingress (``medperf serve ingress``), timed to the last byte of the body.
3. Memory: the aggregator's resident set (now and peak) and its database file.

Run: .venv/bin/python bench/aggregator.py [--models 1000] [--sites 200]
Targets on a 2-core machine: >= 3,000 results/s and >= 1/3 of the raw rate; query p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import nats
from measure import cpu_seconds, free_port, percentile, rss_kib, until_answers
from nats.js.api import ConsumerConfig

from services.ingress.auth import token_digest
from shared.broker import EmbeddedNats, ensure_streams
from shared.commands import DEFAULT_LEADERBOARD_ROWS, MAX_LEADERBOARD_ROWS, GetLeaderboard, Outcome, SetSharingPolicy
from shared.containers import HostedFile
from shared.events import (
    AssociationApproved,
    BenchmarkApproved,
    BenchmarkSubmitted,
    DatasetRegistered,
    Event,
    MetricSpec,
    ModelRegistered,
    ResultReported,
    SharingPolicy,
    SiteKeyRegistered,
)
from shared.signing import SiteKey

COMMITTEE = "committee"
METRICS = [
    MetricSpec(name="auc"),
    MetricSpec(name="f1", aggregate="median"),
    MetricSpec(name="loss", higher_is_better=False),
]
DIGESTS = {"model": "sha256:" + "a" * 64, "metrics": "sha256:" + "b" * 64}


async def publish_all(js: nats.js.JetStreamContext, events: list[Event], in_flight: int = 256) -> None:
    queue = iter(events)

    async def worker() -> None:
        for event in queue:
            await js.publish(
                event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)}
            )

    await asyncio.gather(*(worker() for _ in range(in_flight)))


def setup_events(models: int, sites: int) -> list[Event]:
    events: list[Event] = [
        BenchmarkSubmitted(
            actor=COMMITTEE,
            benchmark_id=1,
            name="bench",
            description="",
            owner=COMMITTEE,
            data_preparator_id=1,
            reference_model_id=1,
            metrics_container_id=2,
            demo_dataset=HostedFile(source="https://example.org/demo.tgz", sha256="c" * 64),
            metrics=METRICS,
            primary_metric="auc",
        ),
        BenchmarkApproved(actor="admin", benchmark_id=1, name="bench"),  # boards are shown beyond the committee
    ]
    for m in range(1, models + 1):
        events.append(
            ModelRegistered(actor=f"owner{m}", model_id=m, name=f"model-{m}", owner=f"owner{m}", container_id=3)
        )
        events.append(
            AssociationApproved(actor=COMMITTEE, association_id=m, benchmark_id=1, kind="model", component_id=m)
        )
    for d in range(1, sites + 1):
        site = f"site-{d}"
        events.append(
            DatasetRegistered(
                actor=site,
                dataset_id=d,
                name="data",
                owner=site,
                site=site,
                data_preparator_id=1,
                input_hash=f"i{d}",
                prepared_hash=f"p{d}",
                statistics={"cases": 100 + d},
            )
        )
        events.append(
            AssociationApproved(
                actor=COMMITTEE, association_id=10_000 + d, benchmark_id=1, kind="dataset", component_id=d
            )
        )
        key = site_key(d)
        events.append(
            SiteKeyRegistered(actor=site, site=site, key_id=key.key_id, public_key=key.public_key, owner=site)
        )
    return events


@functools.cache
def site_key(dataset: int) -> SiteKey:
    """Each simulated site signs its results, as an agent does: verification is part of the cost."""
    return SiteKey.generate()


def results(models: int, sites: int) -> list[ResultReported]:
    rng = random.Random(7)
    return [
        site_key(d).sign_result(
            ResultReported(
                actor=f"site-{d}",
                site=f"site-{d}",
                benchmark_id=1,
                model_id=m,
                dataset_id=d,
                metrics={"auc": rng.random(), "f1": rng.random(), "loss": rng.random()},
                container_digests=DIGESTS,
                dataset_hash=f"p{d}",
            )
        )
        for m in range(1, models + 1)
        for d in range(1, sites + 1)
    ]


async def drained(js: nats.js.JetStreamContext, durable: str) -> float:
    """When the consumer has acknowledged everything on its subjects."""
    while True:
        info = await js.consumer_info("SITES", durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return time.perf_counter()
        await asyncio.sleep(0.005)


async def caught_up(js: nats.js.JetStreamContext, stream: str, durable: str) -> None:
    while True:
        try:
            info = await js.consumer_info(stream, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
        except nats.js.errors.NotFoundError:  # the service has not subscribed yet
            pass
        await asyncio.sleep(0.05)


async def raw_drain(js: nats.js.JetStreamContext, expected: int) -> float:
    sub = await js.pull_subscribe(
        "medperf.site.*.result.reported", durable="bench-raw", config=ConsumerConfig(max_ack_pending=4096)
    )
    start = time.perf_counter()
    seen = 0
    while seen < expected:
        for msg in await sub.fetch(batch=256, timeout=5):
            await msg.ack()
            seen += 1
    return expected / (time.perf_counter() - start)


async def ask(nc: nats.NATS, command: GetLeaderboard | SetSharingPolicy) -> dict:
    reply = await nc.request(type(command).subject(), command.model_dump_json().encode(), timeout=30)
    outcome = Outcome.model_validate_json(reply.data)  # as the ingress reads an answer
    assert outcome.ok, outcome
    return outcome.data


#: The views queried: (name, viewer, the policy set first (None: keep), rows per page).
VIEWS = (
    ("committee, full matrix", COMMITTEE, None, DEFAULT_LEADERBOARD_ROWS),
    ("committee, full matrix", COMMITTEE, None, MAX_LEADERBOARD_ROWS),
    ("public viewer, aggregate", "viewer", SharingPolicy(visibility="public", granularity="aggregate"), 100),
    ("public viewer, per site", "viewer", SharingPolicy(visibility="public", granularity="sites"), 25),
)


#: Distinct viewers per view at most: each has a token, and the tokens travel in the environment.
MAX_VIEWERS = 200


def viewers(name: str, n: int) -> list[str]:
    """Distinct viewers (``n``, at most ``MAX_VIEWERS``) who see what ``name`` sees: admins see the
    committee's board."""
    return [f"{name}-{i}" for i in range(min(n, MAX_VIEWERS))]


async def timed(calls: list[Callable[[], Awaitable[object]]]) -> tuple[float, float, float]:
    took = []
    for call in calls:
        sent = time.perf_counter()
        await call()
        took.append((time.perf_counter() - sent) * 1000)
    return percentile(took, 50), percentile(took, 99), max(took)


def shown(figures: tuple[float, float, float], raw: tuple[float, float, float] | None = None) -> str:
    p50, p99, top = figures
    ratio = f"  ({p99 / raw[1]:.1f}x raw p99)" if raw else ""
    return f"p50 {p50:5.1f} ms, p99 {p99:5.1f} ms, max {top:5.1f} ms{ratio}"


async def raw_request_reply(nc: nats.NATS, size: int, n: int) -> tuple[float, float, float]:
    """The baseline: raw nats-py request/reply with a reply of ``size`` bytes, made in advance."""
    reply = b"x" * size

    async def respond(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(reply)

    subscription = await nc.subscribe("bench.raw.board", cb=respond)
    try:
        return await timed([functools.partial(nc.request, "bench.raw.board", b"{}", timeout=30)] * n)
    finally:
        await subscription.unsubscribe()


async def query_latencies(nc: nats.NATS, http: httpx.AsyncClient, queries: int) -> None:
    for name, viewer, policy, limit in VIEWS:
        if policy is not None:
            await ask(nc, SetSharingPolicy(actor=COMMITTEE, benchmark_id=1, policy=policy))
        admin = viewer == COMMITTEE

        def nats_query(actor: str, limit: int = limit, admin: bool = admin) -> Callable[[], Awaitable[dict]]:
            query = GetLeaderboard(actor=actor, is_admin=admin and actor != COMMITTEE, benchmark_id=1, limit=limit)
            return functools.partial(ask, nc, query)

        def http_query(actor: str, limit: int = limit) -> Callable[[], Awaitable[bytes]]:
            async def get() -> bytes:
                response = await http.get(
                    "/benchmarks/1/leaderboard", params={"limit": limit}, headers={"Authorization": f"Bearer {actor}"}
                )
                assert response.status_code == 200, response.text
                return response.content

            return get

        board = await nats_query(viewer)()  # the first query after a change computes the page
        size = len(Outcome.accepted(1, board).model_dump_json())
        rows = len(board.get("rows", []))
        print(f"query ({name}; a page of {rows} rows of {board.get('total_rows', rows)}, {size / 1024:.0f} kB):")
        raw = await raw_request_reply(nc, size, queries)
        distinct = viewers(viewer, queries)
        print(f"  raw nats-py request/reply of that size: {shown(raw)}")
        print(f"  NATS, again:        {shown(await timed([nats_query(viewer)] * queries), raw)}")
        print(f"  NATS, first look:   {shown(await timed([nats_query(v) for v in distinct]), raw)}")
        await http_query(viewer)()
        print(f"  HTTP, again:        {shown(await timed([http_query(viewer)] * queries), raw)}")
        print(f"  HTTP, first look:   {shown(await timed([http_query(v + '-http') for v in distinct]), raw)}")


async def main(models: int, sites: int, queries: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medperf-bench-aggregator-"))
    broker = EmbeddedNats(workdir / "nats")
    with broker as url:
        await ensure_streams(url)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        # Each viewer's token is its name (the bench's own users; digests as an admin issues them).
        users = [COMMITTEE, *(f"{u}-http" for u in viewers("viewer", queries) + viewers(COMMITTEE, queries))]
        users += ["viewer", *viewers("viewer", queries)]
        env = {
            **os.environ,
            "MEDPERF_NATS_URL": url,
            "MEDPERF_STATE_DIR": str(workdir / "state"),
            "MEDPERF_HTTP_PORT": str(port),
            "MEDPERF_ADMINS": json.dumps(
                viewers(COMMITTEE, queries) + [f"{u}-http" for u in viewers(COMMITTEE, queries)]
            ),
            "MEDPERF_API_TOKEN_DIGESTS": json.dumps({token_digest(u): u for u in users}),
        }
        service, ingress = (
            subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
                [sys.executable, "-m", "cli.main", "serve", name],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in ("aggregator", "ingress")
        )
        nc = await nats.connect(url)
        js = nc.jetstream()
        try:
            await publish_all(js, setup_events(models, sites))
            for _ in range(3000):  # the aggregator is up and knows the benchmark
                try:
                    await ask(nc, GetLeaderboard(actor=COMMITTEE, benchmark_id=1))
                    break
                except (AssertionError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await asyncio.sleep(0.05)
            for durable in ("aggregator-model-registered", "aggregator-dataset-registered"):
                await caught_up(js, "REGISTRY", durable)
            await caught_up(js, "APPROVALS", "aggregator-association-approved")

            batch = results(models, sites)
            service.send_signal(signal.SIGSTOP)
            start = time.perf_counter()
            await publish_all(js, batch)
            published = len(batch) / (time.perf_counter() - start)
            print(
                f"published {len(batch):,} results at {published:,.0f}/s; the aggregator (pid {service.pid}) resumes",
                flush=True,
            )
            pids = {"aggregator": service.pid, "nats-server": broker.process.pid}  # type: ignore[union-attr]
            before = {name: cpu_seconds(pid, children=True) for name, pid in pids.items()}
            before["event loop"] = cpu_seconds(service.pid)
            resumed = time.perf_counter()
            service.send_signal(signal.SIGCONT)
            ours = len(batch) / (await drained(js, "aggregator-result-reported") - resumed)
            # CPU per result does not depend on what else the machine runs, unlike the rate.
            spent = {
                name: (cpu_seconds(pid, children=True) - before[name]) * 1e6 / len(batch) for name, pid in pids.items()
            }
            spent["aggregator's own process"] = (cpu_seconds(service.pid) - before["event loop"]) * 1e6 / len(batch)
            raw = await raw_drain(js, len(batch))
            print(f"results: {len(batch):,} ({models} models x {sites} sites)")
            print(
                f"ingest: {ours:,.0f} results/s into the leaderboard vs raw drain {raw:,.0f}/s: ratio {ours / raw:.2f}"
            )
            print("CPU per result ingested: " + ", ".join(f"{name} {us:.0f} us" for name, us in spent.items()))

            async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
                await until_answers(http, "/health")
                await query_latencies(nc, http, queries)
            now, peak = rss_kib(service.pid)
            db = workdir / "state" / "aggregator.db"
            size = db.stat().st_size / 2**20
            print(f"memory: aggregator RSS {now / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB); database {size:.0f} MiB")
        finally:
            await nc.close()
            service.send_signal(signal.SIGCONT)
            for process in (service, ingress):
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.models, args.sites, args.queries))
