"""Registry and approvals speed, against raw nats-py in the same run.

1. Registrations per second through the HTTP ingress: POST /containers -> registry command ->
   row + outbox in one SQLite transaction -> relay -> ContainerRegistered on JetStream. Counted
   when every event is on the stream. Baseline: raw nats-py JetStream publishes of the same
   payloads with the same concurrency.
2. Latency from an approval decision (HTTP POST) to a site agent's consumer seeing the
   AssociationApproved event (a durable pull consumer with the agent's options). Baseline: raw
   JetStream publish -> push subscriber latency.

The services run as in production: the registry, the ingress, and approvals with the aggregator
in three processes (``medperf serve ...``), on an embedded nats-server and SQLite; the clients
run in this process, each with its own keep-alive connection (as separate users would; one shared
httpx pool is itself slower than the server at this rate).

The registrations' load generator is a bare HTTP/1.1 keep-alive client (``RawHttp``: pre-built
request bytes, status line and Content-Length parsed, nothing else), as wrk or similar tools are:
httpx costs ~3 ms of CPU per request, more than the ingress itself, and on a 2-core machine that
CPU is taken from the services being measured. Everything else in the bench uses httpx.

Run: .venv/bin/python bench/registry.py [--registrations 4000] [--approvals 200]
(after 200 registrations that are not counted: a warm-up)
Targets on a 2-core machine: >= 500 registrations/s (SQLite); p99 approval-to-executor < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import nats
from faststream.nats import NatsRouter
from measure import cpu_seconds, free_port, percentile, until_answers

from services.ingress.auth import token_digest
from shared.broker import EmbeddedNats, create_broker, ensure_streams
from shared.events import AssociationApproved, CompatibilityReport
from shared.messaging import consume
from shared.signing import SiteKey

CONCURRENCY = 32
#: Registrations sent, and not counted, before the measured ones.
WARMUP = 200
DIGEST = "sha256:" + "ab" * 32
USERS = {"admin": "t-admin", "committee": "t-committee", "site": "t-site"}


def spec(*tasks: str) -> dict:
    return {"image": "localhost/bench:1", "image_digest": DIGEST, "tasks": {t: {"command": ["run"]} for t in tasks}}


async def bounded(n: int, make: Callable[[int], Awaitable[None]]) -> None:
    """Run make(0..n-1) with CONCURRENCY calls in flight."""
    numbers = iter(range(n))

    async def worker() -> None:
        for i in numbers:
            await make(i)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def stream_count(js: object, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages  # type: ignore[attr-defined]


class RawHttp:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads back status and body; it
    understands only what the ingress sends (a Content-Length body, no chunking)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, token: str) -> None:
        self.reader, self.writer = reader, writer
        self.head = f"Host: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"

    @classmethod
    async def open(cls, base_url: str, token: str) -> RawHttp:
        host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}", token)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in header_lines if line.lower().startswith("content-length:"))
        return int(status_line.split(" ", 2)[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def registrations(base_url: str, url: str, n: int, prefix: str = "bench") -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    before = await stream_count(js, "REGISTRY")
    clients = [await RawHttp.open(base_url, USERS["committee"]) for _ in range(CONCURRENCY)]
    free = asyncio.Queue[RawHttp]()
    for client in clients:
        free.put_nowait(client)
    bodies = [json.dumps({"name": f"{prefix}-{i}", "spec": spec("infer")}).encode() for i in range(n)]

    async def register(i: int) -> None:
        client = await free.get()
        status, body = await client.post("/containers", bodies[i])
        free.put_nowait(client)
        assert status == 201, (status, body)

    start = time.perf_counter()
    await bounded(n, register)
    while await stream_count(js, "REGISTRY") < before + n:  # noqa: ASYNC110 - the stream is polled, nothing signals
        await asyncio.sleep(0.005)
    ours = n / (time.perf_counter() - start)
    for client in clients:
        client.close()
    await nc.close()
    return ours


async def raw_publishes(url: str, n: int) -> float:
    """The same number of JetStream publishes of a registration's size, with the same concurrency."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    payload = b"x" * 700
    await js.add_stream(name="BENCH", subjects=["bench.>"])

    async def publish(i: int) -> None:
        await js.publish(f"bench.raw.{i}", payload)

    start = time.perf_counter()
    await bounded(n, publish)
    raw = n / (time.perf_counter() - start)
    await js.delete_stream("BENCH")
    await nc.close()
    return raw


async def approval_latency(api: dict[str, httpx.AsyncClient], url: str, n: int) -> tuple[list[float], list[float]]:
    committee, site = api["committee"], api["site"]
    prep = (
        await committee.post(
            "/containers",
            json={"name": "prep", "spec": spec("prepare", "sanity_check", "statistics"), "state": "OPERATION"},
        )
    ).json()["id"]
    metrics = (
        await committee.post("/containers", json={"name": "metrics", "spec": spec("evaluate"), "state": "OPERATION"})
    ).json()["id"]
    ref_container = (
        await committee.post("/containers", json={"name": "ref", "spec": spec("infer"), "state": "OPERATION"})
    ).json()["id"]
    ref = (
        await committee.post("/models", json={"name": "ref", "container_id": ref_container, "state": "OPERATION"})
    ).json()["id"]
    benchmark = (
        await committee.post(
            "/benchmarks",
            json={
                "name": "bench",
                "data_preparator_id": prep,
                "reference_model_id": ref,
                "metrics_container_id": metrics,
                "demo_dataset": {"source": "https://example.org/demo.tgz", "sha256": "cd" * 32},
                "metrics": [{"name": "auc"}],
                "primary_metric": "auc",
                "state": "OPERATION",
            },
        )
    ).json()["id"]
    for _ in range(600):  # approvals hears of the benchmark from the registry's event, after the backlog
        decision = await api["admin"].post(f"/benchmarks/{benchmark}/decision", json={"approve": True})
        if decision.status_code != 503:
            break
        await asyncio.sleep(0.05)
    assert decision.status_code == 200, decision.text

    datasets = []
    for i in range(n):
        response = await site.post(
            "/datasets",
            json={
                "name": f"d{i}",
                "site": "bench-site",
                "data_preparator_id": prep,
                "input_hash": f"i{i}",
                "prepared_hash": f"p{i}",
                "statistics": {"n": 1},
                "state": "OPERATION",
            },
        )
        datasets.append(response.json()["id"])
    # Only a signed test counts: the site's key, registered by its owner as its agent does at start.
    key = SiteKey.generate()
    assert (await site.post("/sites/bench-site/keys", json={"public_key": key.public_key})).status_code == 201
    for dataset in datasets:
        tested = CompatibilityReport(
            passed=True, metrics={"auc": 0.9}, benchmark_id=benchmark, kind="dataset", component_id=dataset
        )
        report = key.sign_report(tested, "bench-site").model_dump(mode="json")
        for _ in range(200):  # approvals learns of the dataset (and the key) from the registry's events
            response = await site.post(
                f"/benchmarks/{benchmark}/associations",
                json={"kind": "dataset", "component_id": dataset, "compatibility": report},
            )
            if response.status_code != 503:
                break
            await asyncio.sleep(0.01)
        assert response.status_code == 201, response.text

    # The "executor": a durable pull consumer with the site agent's options.
    seen: dict[int, float] = {}
    arrivals = {dataset: asyncio.Event() for dataset in datasets}
    router = NatsRouter()

    @router.subscriber(**consume("site-bench", AssociationApproved))
    async def on_approved(event: AssociationApproved) -> None:
        seen[event.component_id] = time.perf_counter()
        arrivals[event.component_id].set()

    broker = create_broker(url, "site-bench")
    broker.include_router(router)
    await broker.start()
    latencies = []
    for dataset in datasets:
        sent = time.perf_counter()
        response = await committee.post(
            f"/benchmarks/{benchmark}/associations/dataset/{dataset}/decision", json={"approve": True}
        )
        assert response.status_code == 200, response.text
        await asyncio.wait_for(arrivals[dataset].wait(), timeout=10)
        latencies.append((seen[dataset] - sent) * 1000)
    await broker.stop()

    # Raw baseline: JetStream publish -> push subscriber, one at a time.
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCHLAT", subjects=["benchlat.>"])
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def handler(msg: object) -> None:
        arrived.put_nowait(time.perf_counter())
        await msg.ack()  # type: ignore[attr-defined]

    await js.subscribe("benchlat.>", cb=handler, durable="raw")
    raw = []
    for i in range(n):
        sent = time.perf_counter()
        await js.publish(f"benchlat.{i}", b"x" * 500)
        raw.append((await arrived.get() - sent) * 1000)
    await js.delete_stream("BENCHLAT")
    await nc.close()
    return latencies, raw


def serve(services: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", *services], env=env, stdout=out, stderr=out)


async def main(n_registrations: int, n_approvals: int) -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        url = nats_server.start()
        stack.callback(nats_server.stop)
        await ensure_streams(url)  # whichever service comes up first, the streams exist
        port = free_port()
        env = {
            **os.environ,
            "MEDPERF_NATS_URL": url,
            "MEDPERF_STATE_DIR": tmp,
            "MEDPERF_HTTP_PORT": str(port),
            "MEDPERF_ADMINS": json.dumps(["admin"]),
            "MEDPERF_API_TOKEN_DIGESTS": json.dumps({token_digest(t): u for u, t in USERS.items()}),
        }
        pids = {"nats-server": nats_server.process.pid, "bench client": os.getpid()}  # type: ignore[union-attr]
        groups = (["registry"], "registry"), (["ingress"], "ingress"), (["approvals", "aggregator"], "approvals+aggr.")
        for services, name in groups:
            process = serve(services, env, Path(tmp) / f"{name}.log")
            pids[name] = process.pid
            stack.callback(process.wait)
            stack.callback(process.terminate)
        base_url = f"http://127.0.0.1:{port}"
        # Until the registry answers behind the ingress (a request would meet no responder).
        headers = {"Authorization": f"Bearer {USERS['committee']}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
            await until_answers(client, "/me/containers")
        # Steady state: the first requests pay one-time costs (statements compiled and cached,
        # connections opened, lazily built validators) that a service running for hours does not.
        await registrations(base_url, url, WARMUP, prefix="warm-up")
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        ours = await registrations(base_url, url, n_registrations)
        # CPU time per registration does not depend on what else the machine runs, unlike the rate.
        spent = {name: (cpu_seconds(pid) - before[name]) * 1000 / n_registrations for name, pid in pids.items()}
        raw = await raw_publishes(url, n_registrations)
        print(
            f"registrations through the ingress: {ours:8.0f}/s   raw JetStream publish: {raw:8.0f}/s"
            f"   ratio {ours / raw:.3f}   (n={n_registrations}, {CONCURRENCY} in flight; target >= 500/s)"
        )
        total = sum(spent.values())
        print(
            "CPU per registration: "
            + ", ".join(f"{name} {ms:.2f} ms" for name, ms in spent.items())
            + f"; total {total:.2f} ms -> at most {os.cpu_count() or 1} cores / {total:.2f} ms"
            f" = {(os.cpu_count() or 1) * 1000 / total:.0f}/s on this machine"
        )
        api = {
            u: httpx.AsyncClient(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {t}"})
            for u, t in USERS.items()
        }
        latencies, raw_lat = await approval_latency(api, url, n_approvals)
        for name, values in (
            ("approval -> executor sees event", latencies),
            ("raw JetStream publish -> receive", raw_lat),
        ):
            print(
                f"{name:34s} p50 {statistics.median(values):6.2f} ms  p99 {percentile(values, 99):6.2f} ms"
                f"  max {max(values):6.2f} ms  (n={len(values)})"
            )
        print(f"p99 ratio {percentile(latencies, 99) / percentile(raw_lat, 99):.1f}x raw   (target: p99 < 50 ms)")
        for client in api.values():
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=4000)
    parser.add_argument("--approvals", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.registrations, args.approvals))
