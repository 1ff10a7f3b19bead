"""The production topology as local processes: three nats-servers clustered with JetStream (every
stream on three nodes), PostgreSQL, two replicas each of registry and aggregator, three site
agents with their own credentials, each a separate OS process. One NATS node is stopped in the
middle of the flow; every result must still arrive, and exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import nats
import pytest
from history import stream_messages
from secured import SecuredNats, free_port
from sites import USERS, Federation
from waiting import eventually

from cli.client import Client
from services.executor.settings import LocalDataset
from services.ingress.auth import token_digest
from shared.broker import connect_options, ensure_streams
from shared.nats_config import site_user
from shared.streams import ALL_STREAMS

pytestmark = [pytest.mark.engine, pytest.mark.postgres]

SITES = ("site-a", "site-b", "site-c")


class Processes:
    """OS processes of the federation, each logging to its own file, all stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with (self.root / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "cli.main", *args], env={**os.environ, **env}, stdout=log, stderr=log
            )

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = (self.root / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in self.running.values():
            process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def ensure_replicated_streams(servers: SecuredNats) -> None:
    """The cluster elects its JetStream leader a few seconds after the nodes start."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await ensure_streams(servers.url, 3, user="central", password=servers.passwords["central"])
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def site_events(url: str, password: str) -> list[tuple[str, dict]]:
    nc = await nats.connect(**connect_options(url, "operator", password))
    try:
        js = nc.jetstream()
        found = []
        for stream in ALL_STREAMS:
            if stream.sources:  # a copy of other streams (the console's FEED): each event is there again
                continue
            if stream.max_msgs_per_subject != -1:
                # A last-value store (HEARTBEATS), not a history: its older messages are deleted, which leaves
                # gaps between first_seq and last_seq once an agent has beaten twice.
                continue
            found += [(stream.name, json.loads(m.data)) for m in await stream_messages(js, stream.name)]
        return found
    finally:
        await nc.close()


def dataset_dir(root: Path, site: str) -> list[dict]:
    raw = root / site / "raw"
    (raw / "data").mkdir(parents=True)
    (raw / "labels").mkdir()
    (raw / "data" / "case1.txt").write_text(f"{site}\n")  # identical prepared data is refused as a duplicate
    (raw / "labels" / "case1.txt").write_text("0\n")
    local = LocalDataset(name=f"d-{site}", benchmark="bench", data_path=raw / "data", labels_path=raw / "labels")
    return [local.model_dump(mode="json")]


async def test_the_federation_survives_losing_a_nats_node_and_counts_every_result_once(
    tmp_path: Path, busybox_image: str, postgres_database: str
) -> None:
    processes = Processes(tmp_path)
    with ExitStack() as cleanup, SecuredNats(tmp_path / "nats", nodes=3, sites=SITES) as servers:
        cleanup.callback(processes.stop)
        await ensure_replicated_streams(servers)
        http_port = free_port()
        central = {
            "MEDPERF_NATS_URL": servers.url,  # every node: a client fails over to the others
            "MEDPERF_NATS_USER": "central",
            "MEDPERF_NATS_PASSWORD": servers.passwords["central"],
            "MEDPERF_NATS_REPLICAS": "3",
            "MEDPERF_DATABASE_URL": postgres_database,
            "MEDPERF_ADMINS": '["admin"]',
            "MEDPERF_API_TOKEN_DIGESTS": json.dumps({token_digest(t): u for u, t in USERS.items()}),
            "MEDPERF_HTTP_PORT": str(http_port),
            "MEDPERF_STATE_DIR": str(tmp_path / "central"),
        }
        # Two replicas of registry and aggregator, sharing the database, the queue groups and the
        # durable consumers; approvals and the ingress once.
        processes.start("central-1", ["serve", "registry", "aggregator", "approvals", "ingress"], central)
        processes.start("central-2", ["serve", "registry", "aggregator"], central)
        for site in SITES:
            processes.start(
                site,
                ["agent"],
                {
                    "MEDPERF_NATS_URL": servers.url,
                    "MEDPERF_NATS_USER": site_user(site),
                    "MEDPERF_NATS_PASSWORD": servers.passwords[site_user(site)],
                    "MEDPERF_STATE_DIR": str(tmp_path / site / "state"),
                    "MEDPERF_SITE_NAME": site,
                    "MEDPERF_SITE_OWNER": f"hospital-{site}",
                    "MEDPERF_SITE_WORK_DIR": str(tmp_path / site / "work"),
                    "MEDPERF_SITE_DATASETS": json.dumps(dataset_dir(tmp_path, site)),
                    "MEDPERF_SITE_MAX_JOBS": "2",
                },
            )
        base = f"http://127.0.0.1:{http_port}"

        async def ingress_up() -> bool:
            processes.check_alive()
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{base}/docs")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ingress_up, "the ingress to answer", timeout=60, interval=0.2)
        clients = {u: Client(base, t) for u, t in USERS.items()}
        for client in clients.values():
            cleanup.callback(client.close)
        first = servers.servers[0].url
        operator = first.replace("nats://", f"nats://operator:{servers.passwords['operator']}@")
        fed = Federation(operator, clients, busybox_image, None, lambda: None)  # type: ignore[arg-type]
        await fed.join(sites=len(SITES))
        models = [await fed.add_model("m1", "echo 1 > /out/p1; echo 2 > /out/p2")]

        servers.servers[2].stop()  # mid-flow: m1's jobs are queued or running at the sites
        models.append(await fed.add_model("m2", "echo 1 > /out/p1"))
        models.append(await fed.add_model("m3", "echo 1 > /out/p1; echo 2 > /out/p2"))

        url = f"/benchmarks/{fed.benchmark_id}/leaderboard"

        async def complete() -> bool:
            processes.check_alive()
            rows = (await fed.call("committee", "get", url)).get("rows") or []
            return len(rows) == 1 + len(models) and all(len(r["per_dataset"]) == len(SITES) for r in rows)

        await eventually(complete, "every model's result from every site on the board", timeout=180, interval=0.5)
        await asyncio.sleep(2.5)  # two outbox sweeps of every replica: a duplicate would be out by now
        expected = len(SITES) * (1 + len(models))

        async def history() -> list[tuple[str, dict]]:
            return await site_events(first, servers.passwords["operator"])

        async def all_results_on_the_stream() -> bool:
            return (
                len(
                    {
                        (e["model_id"], e["site"])
                        for s, e in await history()
                        if s == "SITES" and e["type"] == "result.reported"
                    }
                )
                == expected
            )

        # The board is fed by the stream, so the stream holds them all; wait in case the node read is behind.
        await eventually(all_results_on_the_stream, f"{expected} results on the SITES stream", timeout=30, interval=1)
        events = await history()
        ids = Counter(e["event_id"] for _, e in events)
        assert [i for i, n in ids.items() if n > 1] == [], "an event reached JetStream twice"
        results = Counter(
            (e["model_id"], e["site"]) for s, e in events if s == "SITES" and e["type"] == "result.reported"
        )
        assert len(results) == expected and set(results.values()) == {1}
        assert [e for s, e in events if s == "DEADLETTER"] == [], "no message was given up on"
        board = await fed.call("committee", "get", url)
        assert all(r["per_dataset"] for r in board["rows"])
        # Both replicas did work: their processes are alive and the ingress answered throughout.
        processes.check_alive()
