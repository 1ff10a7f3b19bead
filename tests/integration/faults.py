"""A federation of OS processes that a test can SIGKILL and restart one at a time: a nats-server
with its file store on a fixed port (so clients reconnect to the same address), registry,
approvals, aggregator and the ingress each as ``medperf serve <name>``, and one ``medperf agent``
per site. Also the readers the invariant checks need: every event on the streams, every durable
consumer's state, and rows of each process's own SQLite database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
from history import stream_messages
from secured import free_port

from services.executor.settings import LocalDataset
from services.ingress.auth import token_digest
from shared.broker import EmbeddedNats, ensure_streams
from shared.streams import ALL_STREAMS

CENTRAL = ("registry", "approvals", "aggregator")


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli.main", *self.args], env={**os.environ, **self.env}, stdout=out, stderr=out
            )

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class KillableFederation:
    """Every part of the federation as its own process; ``kill(name)`` is SIGKILL, ``start(name)``
    brings it back with the same state directory, database and broker address."""

    root: Path
    sites: tuple[str, ...]
    tokens: dict[str, str]  # sha256 of each API token -> user
    http_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)
    broker: EmbeddedNats = field(init=False)
    #: More lines for the nats-server's config (e.g. a lower max_payload).
    nats_config: str = ""
    #: More environment for the central services and the ingress (e.g. MEDPERF_LIMIT_*).
    central_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        store = self.root / "nats"
        store.mkdir(parents=True, exist_ok=True)
        config = self.root / "nats.conf"
        # A fixed port: a restarted server must be where every client's reconnect loop looks.
        config.write_text(
            f'listen: "127.0.0.1:{self.nats_port}"\njetstream {{ store_dir: "{store}" }}\n{self.nats_config}\n'
        )
        self.broker = EmbeddedNats(store, config=config)
        central = {
            "MEDPERF_NATS_URL": self.url,
            "MEDPERF_STATE_DIR": str(self.root / "central"),
            "MEDPERF_ADMINS": '["admin"]',
            "MEDPERF_API_TOKEN_DIGESTS": json.dumps(self.tokens),
            "MEDPERF_HTTP_PORT": str(self.http_port),
            **self.central_env,
        }
        for name in (*CENTRAL, "ingress"):
            self._add(name, ["serve", name], central)
        for site in self.sites:
            self._add(
                site,
                ["agent"],
                {
                    "MEDPERF_NATS_URL": self.url,
                    "MEDPERF_STATE_DIR": str(self.root / site / "state"),
                    "MEDPERF_SITE_NAME": site,
                    "MEDPERF_SITE_OWNER": f"hospital-{site}",
                    "MEDPERF_SITE_WORK_DIR": str(self.site_work_dir(site)),
                    "MEDPERF_SITE_DATASETS": json.dumps(dataset_dir(self.root, site)),
                    "MEDPERF_SITE_MAX_JOBS": "2",
                },
            )

    def _add(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.processes[name] = Process(name, args, env, self.root / f"{name}.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def site_work_dir(self, site: str) -> Path:
        return self.root / site / "work"

    def database(self, name: str) -> Path:
        """The SQLite file of a central service or a site agent."""
        if name in CENTRAL:
            return self.root / "central" / f"{name}.db"
        return self.site_work_dir(name) / "agent.db"

    def start(self, name: str) -> None:
        if name == "nats":
            self.broker.start()
        else:
            self.processes[name].start()

    def kill(self, name: str) -> None:
        if name == "nats":
            assert self.broker.process is not None
            self.broker.process.send_signal(signal.SIGKILL)
            self.broker.process.wait(timeout=10)
            self.broker.process = None
        else:
            self.processes[name].kill()

    def check_alive(self) -> None:
        for process in self.processes.values():
            if process.popen is not None and process.popen.poll() is not None:
                tail = process.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{process.name} exited with {process.popen.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.popen is not None and process.popen.poll() is None:
                process.popen.terminate()
        for process in self.processes.values():
            process.stop()
        self.broker.stop()

    def rows(self, name: str, sql: str) -> list[tuple]:
        """Read a process's own database (SQLite allows a reader beside the running writer)."""
        with closing(sqlite3.connect(f"file:{self.database(name)}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute(sql).fetchall()


def dataset_dir(root: Path, site: str) -> list[dict]:
    raw = root / site / "raw"
    (raw / "data").mkdir(parents=True, exist_ok=True)
    (raw / "labels").mkdir(exist_ok=True)
    (raw / "data" / "case1.txt").write_text(f"{site}\n")  # identical prepared data is refused as a duplicate
    (raw / "labels" / "case1.txt").write_text("0\n")
    local = LocalDataset(name=f"d-{site}", benchmark="bench", data_path=raw / "data", labels_path=raw / "labels")
    return [local.model_dump(mode="json")]


@dataclass(frozen=True)
class Stored:
    stream: str
    subject: str
    event: dict


async def stored_events(url: str) -> list[Stored]:
    """Every event of every stream (not the heartbeats, which are no events, nor the console's FEED
    copy), in stream order; dead letters included."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        found: list[Stored] = []
        for stream in ALL_STREAMS:
            if stream.sources or stream.name == "HEARTBEATS":
                continue
            for message in await stream_messages(js, stream.name):
                try:
                    event = json.loads(message.data or b"")
                except ValueError:
                    event = None
                # Junk someone published (the adversarial test does) is kept, as a non-event.
                found.append(Stored(stream.name, message.subject, event if isinstance(event, dict) else {}))
        return found
    finally:
        await nc.close()


@dataclass(frozen=True)
class ConsumerState:
    stream: str
    name: str
    filter_subject: str
    pending: int  # not yet delivered
    unacknowledged: int  # delivered, neither acknowledged nor terminated


async def consumers(url: str) -> list[ConsumerState]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        found = []
        for stream in ALL_STREAMS:
            for info in await js.consumers_info(stream.name):
                if info.config.durable_name:
                    found.append(
                        ConsumerState(
                            stream.name,
                            info.name,
                            info.config.filter_subject or "",
                            info.num_pending or 0,
                            info.num_ack_pending or 0,
                        )
                    )
        return found
    finally:
        await nc.close()


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` one token, ``>`` the rest."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def each(items: dict[str, int]) -> Iterator[str]:
    for key, count in sorted(items.items()):
        yield f"{key}={count}"


def start_central(root: Path, tokens: dict[str, str], **options: Any) -> KillableFederation:
    """The central services and the ingress as processes (no sites), once the ingress answers an
    admin's list of containers; ``tokens`` maps each user to an API token, and "admin" is one."""
    cluster = KillableFederation(root, (), {token_digest(t): u for u, t in tokens.items()}, **options)
    cluster.start("nats")
    asyncio.run(ensure_streams(cluster.url))
    for name in cluster.processes:
        cluster.start(name)
    deadline = time.monotonic() + 60
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    while True:
        cluster.check_alive()
        try:
            if httpx.get(f"{cluster.http_url}/containers", headers=headers, timeout=5).status_code == 200:
                return cluster
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            cluster.stop()
            raise AssertionError("the federation did not start")
        time.sleep(0.2)
