"""Each of the site's bounds at a real site (services, nats-server, Docker, busybox models), with the
limits lowered: hosted files that expand or stream without end, a host that trickles, a model that
fills the disk, one that asks for a week, one that would take every core. Each is stopped, and
reported as a job outcome naming the limit and the setting that raises it."""

from __future__ import annotations

import contextlib
import hashlib
import re
import tarfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest
import sites
from figures import record
from sites import Federation, model
from test_hostile import add_spec, file_host, with_files
from zeros import Zeros

from services.executor import domain
from services.executor.runtime import DockerRuntime

pytestmark = pytest.mark.engine

MiB = 2**20

LIMITS: dict[str, Any] = {
    "task_timeout": 3,
    "extract_max_bytes": 8 * MiB,
    "extract_max_members": 1000,
    "download_max_bytes": 4 * MiB,
    "download_deadline": 1.5,
    "output_max_bytes": 8 * MiB,
    "task_cpus": 0.5,
}


@asynccontextmanager
async def federation(tmp_path: Path, image: str) -> AsyncIterator[Federation]:
    runtime = DockerRuntime(docker.from_env(), output_check_seconds=0.1)
    try:
        name = f"limits-{uuid.uuid4().hex[:6]}"  # agents remove containers labelled with their site's name
        options = LIMITS | {"max_jobs": 3, "retry_seconds": 0.2}
        async with sites.federation(tmp_path, image, name=name, runtime=runtime, **options) as fed:
            yield fed
    finally:
        runtime.client.close()


def tarball(path: Path, members: list[tuple[str, int]]) -> str:
    """A gzip tarball of files of zeros, ``(name, size)`` each; returns its sha256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, Zeros(size))
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Trickle(BaseHTTPRequestHandler):
    """``/endless``: zeros, no Content-Length, until 256 MiB (a safety stop for the test);
    ``/slow``: 30 bytes, one every 0.3 s."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        piece, count, pause = (64 * 1024, 4096, 0.0) if self.path == "/endless" else (1, 30, 0.3)
        with contextlib.suppress(OSError):
            for _ in range(count):
                self.wfile.write(b"\0" * piece)
                self.wfile.flush()
                time.sleep(pause)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def trickling_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def settled(fed: Federation, model_id: int) -> tuple[Any, list[dict]]:
    """The model's job once finished, with its failure events; or as it stands after a minute."""
    with contextlib.suppress(AssertionError):
        await fed.job_reaches(model_id, "failed", "succeeded")
    job = await fed.job_of_model(model_id)
    return job, [e for e in await fed.events(".job.failed") if job is not None and e["job_id"] == job.id]


def asks_for_a_week(image: str) -> dict:
    spec = model(image, "echo started; sleep 100000")
    spec["tasks"]["infer"]["timeout_seconds"] = 7 * 24 * 3600
    return spec


FILLS_DISK = "i=0; while :; do busybox head -c 1048576 /dev/zero > /out/f$i; i=$((i+1)); done"
CPU_QUOTA = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; echo 1 > /out/p1"


async def test_every_site_limit_stops_its_container_and_names_the_setting(tmp_path: Path, busybox_image: str) -> None:
    hosted = tmp_path / "hosted"
    with file_host(hosted) as files, trickling_host() as trickle:
        bomb = tarball(hosted / "bomb.tar.gz", [("weights.bin", 256 * MiB)])
        many = tarball(hosted / "many.tar.gz", [(f"f{i:05}", 0) for i in range(5000)])
        async with federation(tmp_path, busybox_image) as fed:
            await fed.join()
            models = {
                "gzip-bomb": await add_spec(fed, "gzip-bomb", with_files(busybox_image, f"{files}/bomb.tar.gz", bomb)),
                "many-files": await add_spec(
                    fed, "many-files", with_files(busybox_image, f"{files}/many.tar.gz", many)
                ),
                "endless": await add_spec(fed, "endless", with_files(busybox_image, f"{trickle}/endless", "ab" * 32)),
                "fills-disk": await fed.add_model("fills-disk", FILLS_DISK),
                "asks-a-week": await add_spec(fed, "asks-a-week", asks_for_a_week(busybox_image)),
                "cpu-quota": await fed.add_model("cpu-quota", CPU_QUOTA),
                "slow-host": await add_spec(fed, "slow-host", with_files(busybox_image, f"{trickle}/slow", "ab" * 32)),
            }
            outcomes = {name: await settled(fed, model_id) for name, model_id in models.items()}
            quota_logs = [p.read_text() for p in fed.site.work_dir.rglob("infer.log") if "100000" in p.read_text()]
    summary = {
        name: f"{job.status} ({job.failure or 'ok'}, {job.attempts} attempts)" for name, (job, _) in outcomes.items()
    }
    print("\noutcomes:", summary)

    expected = {
        "gzip-bomb": "MEDPERF_SITE_EXTRACT_MAX_BYTES",
        "many-files": "MEDPERF_SITE_EXTRACT_MAX_MEMBERS",
        "endless": "MEDPERF_SITE_DOWNLOAD_MAX_BYTES",
        "fills-disk": "MEDPERF_SITE_OUTPUT_MAX_BYTES",
        "asks-a-week": "MEDPERF_SITE_TASK_TIMEOUT",
    }
    for name, setting in expected.items():
        job, events = outcomes[name]
        # The container's fault: final, at the first attempt.
        assert (job.status, job.failure, job.attempts) == ("failed", "model", 1), (name, job.detail)
        assert [e["will_retry"] for e in events] == [False], name
        assert setting in events[0]["reason"], (name, events[0]["reason"])

    # A host that trickles may be the site's own slow link: infrastructure, retried, then failed.
    job, events = outcomes["slow-host"]
    assert (job.status, job.failure, job.attempts) == ("failed", "infrastructure", domain.MAX_ATTEMPTS)
    assert all("MEDPERF_SITE_DOWNLOAD_DEADLINE" in e["reason"] for e in events)

    job, events = outcomes["cpu-quota"]
    assert job.status == "succeeded" and events == []
    assert quota_logs and quota_logs[0].split()[:2] == ["50000", "100000"]  # half a core

    written = re.search(r"stopped after writing (\d+) bytes", outcomes["gzip-bomb"][1][0]["reason"])
    assert written is not None and int(written[1]) <= LIMITS["extract_max_bytes"]
    record("site limits", **summary, gzip_bomb_bytes_written=int(written[1]))
