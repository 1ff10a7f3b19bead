"""Hostile and broken models at a real site (real services, nats-server, Docker, busybox scripts):
each is contained, and reported as a job outcome that says whose fault it was.

- contained and the model's fault: one that tries to reach the network, one that writes to its
  inputs, one that runs forever (killed at its time limit), one whose tarball (its
  ``additional_files``) holds ``../`` paths and links; one that floods its log succeeds with a
  bounded log kept;
- the site's problem (infrastructure, retried and then reported): an asset host that does not
  answer, a full disk, and an asset whose bytes changed after registration (refused by its hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import subprocess
import tarfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
import sites
from figures import record
from hosting import file_host
from secured import free_port
from sites import Federation, model, task
from waiting import eventually

from services.executor import domain
from services.executor.runner import SITE_LABEL
from services.executor.runtime import TAIL_BYTES, DockerRuntime

pytestmark = pytest.mark.engine

LOG_LIMIT = 256 * 1024


@asynccontextmanager
async def federation(tmp_path: Path, image: str, **site_options: Any) -> AsyncIterator[Federation]:
    # A name of its own: agents on a shared engine remove the containers labelled with their site's
    # name at start, and other tests' agents are called site-a.
    runtime = DockerRuntime(docker.from_env(), log_limit=LOG_LIMIT)
    try:
        name = f"hostile-{uuid.uuid4().hex[:6]}"
        async with sites.federation(tmp_path, image, name=name, runtime=runtime, **site_options) as fed:
            yield fed
    finally:
        runtime.client.close()


@contextlib.contextmanager
def listener() -> Iterator[tuple[str, int, list[str]]]:
    """A TCP port on every host address that records who connects: a contained model never does."""
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen()
    sock.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                connection, peer = sock.accept()
                seen.append(peer[0])
                connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield host_address(), sock.getsockname()[1], seen
    finally:
        stop.set()
        thread.join()
        sock.close()


def host_address() -> str:
    """The host's address on its default route (nothing is sent), else loopback: the closest
    address a container could try to reach."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def evil_tarball(path: Path) -> bytes:
    """A gzip tarball with a ``../`` path and a link out of the extraction directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, kind, data, target in (
            ("weights.txt", tarfile.REGTYPE, b"ok", ""),
            ("../../escaped.txt", tarfile.REGTYPE, b"owned", ""),
            ("passwd", tarfile.SYMTYPE, b"", "/etc/passwd"),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, target, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def with_files(image: str, source: str, sha256: str, script: str = "echo 1 > /out/p1") -> dict:
    spec = model(image, script)
    spec["additional_files"] = {"source": source, "sha256": sha256}
    spec["tasks"]["infer"] = task(script, {"data_path": "/in", "additional_files": "/extra"}, {"output_path": "/out"})
    return spec


async def add_spec(fed: Federation, name: str, spec: dict) -> int:
    body = {"name": name, "spec": spec, "state": "OPERATION"}
    container = (await fed.call("modeler", "post", "/containers", body))["id"]
    return await fed.register_and_associate(name, container)


async def failure_of(fed: Federation, model_id: int) -> tuple[Any, list[dict]]:
    job = await fed.job_reaches(model_id, "failed", "succeeded")

    async def reported() -> list[dict]:
        return [e for e in await fed.events(".job.failed") if e["job_id"] == job.id]

    if job.status == "failed":  # its JobFailed commits with the status, and reaches the stream a moment later
        await eventually(reported, f"job {job.id}'s failure on the stream")
    return job, await reported()


async def test_hostile_models_are_contained_and_reported(tmp_path: Path, busybox_image: str) -> None:
    hosted = tmp_path / "hosted"
    with listener() as (address, port, connections), file_host(hosted) as host_url:
        evil = hashlib.sha256(evil_tarball(hosted / "evil.tar.gz")).hexdigest()
        # This site shares its log tails with each failure, so what the models saw can be read here.
        async with federation(tmp_path, busybox_image, task_timeout=4, max_jobs=3, share_log_tails=True) as fed:
            await fed.join()
            reach = (
                f"busybox wget -q -T 2 -O /out/p1 http://{address}:{port}/ 2>&1; "
                f"busybox nc -w 2 {address} {port} </dev/null 2>&1; cat /proc/net/dev; exit 7"
            )
            models = {
                "network": await fed.add_model("network", reach),
                "writes-inputs": await fed.add_model("writes-inputs", "set -e; echo tampered > /in/case1.txt"),
                "forever": await fed.add_model("forever", "echo started; sleep 100000"),
                "floods-log": await fed.add_model(
                    "floods-log",
                    "busybox yes 0123456789abcdefghijklmnopqrstuvwxyz | busybox head -c 4000000; "
                    "echo the-end; echo 1 > /out/p1; echo 2 > /out/p2",
                ),
                "evil-tarball": await add_spec(
                    fed, "evil-tarball", with_files(busybox_image, f"{host_url}/evil.tar.gz", evil)
                ),
            }
            outcomes = {name: await failure_of(fed, model_id) for name, model_id in models.items()}

            job, (event,) = outcomes["network"]
            assert (job.status, job.failure, event["will_retry"]) == ("failed", "model", False)
            assert "exited with 7" in event["reason"]
            interfaces = {line.split(":")[0].strip() for line in event["log_tail"].splitlines() if ":" in line}
            assert "lo" in interfaces and not interfaces & {"eth0", "eth1", "docker0"}, event["log_tail"]
            assert connections == [], "a model reached the host"

            job, (event,) = outcomes["writes-inputs"]
            assert (job.status, job.failure) == ("failed", "model")
            assert "Read-only file system" in event["log_tail"]
            prepared = list((fed.site.work_dir).rglob("case1.txt"))
            assert prepared and all(p.read_text() != "tampered\n" for p in prepared)

            job, (event,) = outcomes["forever"]
            assert (job.status, job.failure, job.attempts) == ("failed", "model", 1)
            assert "timed out after" in event["reason"] and "started" in event["log_tail"]

            job, events = outcomes["floods-log"]
            assert job.status == "succeeded" and events == []
            logs = sorted(fed.site.work_dir.rglob("infer.log"), key=lambda p: p.stat().st_size)
            flood = logs[-1].read_bytes()
            # 4 MB written; the engine keeps one file of at most the limit (older output dropped),
            # and the executor cuts what it saves at the limit too: the end is what is kept.
            assert len(flood) <= LOG_LIMIT + TAIL_BYTES + 200, len(flood)
            assert flood.rstrip().endswith(b"the-end")

            job, (event,) = outcomes["evil-tarball"]
            assert (job.status, job.failure, job.attempts) == ("failed", "model", 1)
            assert "refused" in event["reason"] and "../../escaped.txt" in event["reason"]
            assert not list(tmp_path.rglob("escaped.txt")), "the tarball wrote outside its directory"

            leftovers = docker.from_env().containers.list(all=True, filters={"label": f"{SITE_LABEL}={fed.site.name}"})
            assert leftovers == []
    outcome = {name: f"{job.status} ({job.failure or 'ok'})" for name, (job, _) in outcomes.items()}
    record("hostile containers", tried=len(models), contained=len(models), **outcome)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[None]:
    """A size-limited tmpfs at ``path`` (needs root with CAP_SYS_ADMIN; skips otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


async def test_infrastructure_failures_are_retried_and_then_reported(tmp_path: Path, busybox_image: str) -> None:
    hosted = tmp_path / "hosted"
    hosted.mkdir()
    large = os.urandom(3 * 2**20)  # more than the site's 1 MiB disk for downloads holds
    (hosted / "large.bin").write_bytes(large)
    original = b"the weights as registered"
    (hosted / "changed.bin").write_bytes(b"the weights as someone replaced them")
    with tiny_disk(tmp_path / "site" / "cache", "1m"), file_host(hosted) as host_url:
        async with federation(tmp_path, busybox_image, retry_seconds=0.2, max_jobs=3) as fed:
            await fed.join()
            cases = {
                "unreachable host": with_files(
                    busybox_image, f"http://127.0.0.1:{free_port()}/weights.tar.gz", "ab" * 32
                ),
                "full disk": with_files(busybox_image, f"{host_url}/large.bin", hashlib.sha256(large).hexdigest()),
                "changed bytes": with_files(
                    busybox_image, f"{host_url}/changed.bin", hashlib.sha256(original).hexdigest()
                ),
            }
            models = {name: await add_spec(fed, name.replace(" ", "-"), spec) for name, spec in cases.items()}
            outcomes = {name: await failure_of(fed, model_id) for name, model_id in models.items()}
    # Bytes that are not the registered file are its owner's to fix: failed at once, not retried.
    changed, (event,) = outcomes.pop("changed bytes")
    assert (changed.status, changed.failure, changed.attempts, event["will_retry"]) == ("failed", "model", 1, False)
    assert "does not match its registered hash" in event["reason"]
    assert hashlib.sha256(original).hexdigest() in event["reason"]
    for name, (job, events) in outcomes.items():
        assert (job.status, job.failure, job.attempts) == ("failed", "infrastructure", domain.MAX_ATTEMPTS), name
        assert [e["will_retry"] for e in events] == [True] * (domain.MAX_ATTEMPTS - 1) + [False], name
        assert all(e["failure"] == "infrastructure" for e in events)
    assert "127.0.0.1" in outcomes["unreachable host"][1][-1]["reason"]
    assert "No space left" in outcomes["full disk"][1][-1]["reason"]
    record("infrastructure failures", **{k: f"{v[0].attempts} attempts, then failed" for k, v in outcomes.items()})
