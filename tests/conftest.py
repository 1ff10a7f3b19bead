"""Fixtures that start real parts: an embedded nats-server, a throwaway PostgreSQL cluster, and a
check for a container engine (tests that need one skip, with the reason, where none answers); the
runtime's contract tests run on Docker and on podman (``engine_client``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from examples.busybox import ensure_busybox_image
from services.executor.runtime import engine_available
from shared.broker import EmbeddedNats

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # no registry to pull Ryuk from


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A fresh nats-server with JetStream for one test (starts in ~15 ms)."""
    with EmbeddedNats(tmp_path / "nats") as url:
        yield url


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not engine_available():
        reason = 'no container engine answers (start one: eval "$(scripts/start-dockerd)", or set DOCKER_HOST)'
        if os.environ.get("MEDPERF_REQUIRE_ENGINE"):
            pytest.fail(reason)  # scripts/test started one, so a skip here would hide a failure
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL cluster of our own (initdb + pg_ctl), removed afterwards."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        for version in ("17", "16", "15", "14"):
            candidate = Path(f"/usr/lib/postgresql/{version}/bin")
            if (candidate / "initdb").exists():
                initdb, pg_ctl = str(candidate / "initdb"), str(candidate / "pg_ctl")
                break
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="medperf-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-A", "trust", "-U", "medperf", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
    subprocess.run(
        [*as_postgres, pg_ctl, "-D", str(data), "-l", str(root / "pg.log"), "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+asyncpg://medperf@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """A fresh database of its own on the test cluster, dropped afterwards: no test sees another's rows.
    (Synchronous, through psql, so async fixtures can ask for it with getfixturevalue.)"""
    name = f"t_{uuid.uuid4().hex}"
    server = postgres_url.removeprefix("postgresql+asyncpg://")  # user@host:port/db
    user, rest = server.split("@", 1)
    host, port = rest.split("/", 1)[0].split(":")
    psql = [shutil.which("psql") or "psql", "-h", host, "-p", port, "-U", user, "-d", "postgres", "-q", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True, capture_output=True)
    try:
        yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    finally:
        subprocess.run([*psql, f"DROP DATABASE {name} WITH (FORCE)"], capture_output=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Run a test on SQLite (the default: None) and again on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_database")


@pytest.fixture(scope="session")
def busybox_image(docker_engine: None) -> str:
    """The digest of a tiny busybox image built here; container tests write tasks as shell scripts."""
    engine = docker.from_env()
    try:
        return ensure_busybox_image(engine)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    finally:
        engine.close()


ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def podman_host() -> str:
    """The URL of a podman service's Docker-compatible socket: MEDPERF_PODMAN_HOST, or one
    started here by scripts/start-podman (which installs podman when it can)."""
    host = os.environ.get("MEDPERF_PODMAN_HOST")
    if not host:
        started = subprocess.run(
            [str(ROOT / "scripts" / "start-podman"), str(ROOT / ".medperf" / "podman")], capture_output=True, text=True
        )
        if started.returncode != 0:
            reason = f"no podman service: {started.stderr.strip()[-300:]}"
            if os.environ.get("MEDPERF_REQUIRE_ENGINE"):
                pytest.fail(reason)
            pytest.skip(reason)
        host = started.stdout.strip().rsplit("=", 1)[1]
    return host


@pytest.fixture(scope="session", params=["docker", pytest.param("podman", marks=pytest.mark.podman)])
def engine_url(request: pytest.FixtureRequest) -> str:
    """Each engine the runtime supports, as a DOCKER_HOST: the Docker Engine, and podman's socket."""
    if request.param == "docker":
        request.getfixturevalue("docker_engine")
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return request.getfixturevalue("podman_host")


@pytest.fixture(scope="session")
def engine_client(engine_url: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=engine_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def engine_image(engine_client: docker.DockerClient) -> str:
    """The busybox image's ID on ``engine_client``'s engine."""
    try:
        return ensure_busybox_image(engine_client)
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
