"""Site executor speed, each against a raw baseline measured in the same run.

1. Download and verify a 512 MB file over loopback HTTP through the asset cache (stream, hash
   while writing, move into the content-addressed store), against ``sha256sum`` of the same file.
2. The executor's overhead per task: a task through the workflow (spec -> mounts, output
   directories, isolation options, log capture, container removal) against ``docker run --rm
   --network none`` of the same image and command.
3. Reusing a cached asset (the second fetch of the same hash).

Run: .venv/bin/python bench/executor.py [--megabytes 512] [--tasks 15]   (needs a Docker engine; with
DOCKER_HOST at podman's socket, e.g. after scripts/start-podman, the tasks run on podman against a
bare ``podman --url SOCKET run``)
Targets: download >= 80 % of sha256sum; overhead < 0.3 s per task; cache reuse < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from examples.busybox import ensure_busybox_image
from services.executor.assets import AssetCache
from services.executor.assets.direct import DirectSource
from services.executor.podman import ulimits
from services.executor.runtime import DockerRuntime
from services.executor.workflow import Workflow
from shared.containers import ContainerSpec, HostedFile


def make_file(path: Path, megabytes: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(megabytes):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def serve(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    # A separate process, as a real file host would be: it must not share this process's GIL.
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # "Serving HTTP on 127.0.0.1 port N (...)"
    port = int(line.split(" port ")[1].split()[0])
    return process, f"http://127.0.0.1:{port}"


async def download(work: Path, megabytes: int) -> None:
    files = work / "files"
    files.mkdir()
    sha = make_file(files / "blob.bin", megabytes)
    server, url = serve(files)
    try:
        start = time.perf_counter()
        await asyncio.to_thread(
            subprocess.run, ["sha256sum", str(files / "blob.bin")], check=True, stdout=subprocess.DEVNULL
        )
        raw = time.perf_counter() - start

        cache = AssetCache(work / "cache", [DirectSource()])
        hosted = HostedFile(source=f"{url}/blob.bin", sha256=sha)
        start = time.perf_counter()
        await cache.fetch(hosted)
        ours = time.perf_counter() - start

        reuse = []
        for _ in range(20):
            start = time.perf_counter()
            await cache.fetch(hosted)
            reuse.append((time.perf_counter() - start) * 1000)
    finally:
        server.terminate()
        server.wait()
    print(
        f"download + verify {megabytes} MB: {megabytes / ours:7.0f} MB/s   sha256sum: {megabytes / raw:7.0f} MB/s"
        f"   ratio {raw / ours:.2f}   (target >= 0.80)"
    )
    print(f"cached asset reused: median {statistics.median(reuse):.3f} ms, max {max(reuse):.3f} ms (target < 50 ms)")


async def overhead(work: Path, n: int) -> None:
    engine = docker.from_env()
    image = ensure_busybox_image(engine)
    runtime = DockerRuntime.for_client(engine)  # podman's socket at DOCKER_HOST: its own adapter
    spec = ContainerSpec.model_validate(
        {
            "image": "localhost/busybox",
            "image_digest": image,
            "tasks": {
                "infer": {
                    "command": ["sh", "-c", "echo 1 > /out/p"],
                    "inputs": {"data_path": {"mount_path": "/in"}},
                    "outputs": {"output_path": {"mount_path": "/out"}},
                }
            },
        }
    )
    data = work / "data"
    data.mkdir()
    (data / "case").write_text("1\n")
    workflow = Workflow(runtime, AssetCache(work / "cache-2", []), work, task_timeout=60)
    # The baseline is the engine's own CLI: `podman --url SOCKET run` for podman, `docker run` else.
    name = runtime.engine_name.lower()
    cli = shutil.which(name)
    assert cli, f"the {name} CLI is needed for the baseline"
    socket, limits = [], []
    if name == "podman":  # its socket, and the limits runc can set under it (services/executor/podman.py)
        socket = ["--url", os.environ["DOCKER_HOST"]]
        limits = [part for limit, value in ulimits().items() for part in ("--ulimit", f"{limit}={value}:{value}")]
    out = work / "bare-out"
    out.mkdir()
    os.chmod(out, 0o777)
    bare_argv = [
        cli, *socket, "run", *limits, "--rm", "--network", "none", "--user", "65534:65534",
        "-v", f"{data}:/in:ro", "-v", f"{out}:/out", image, "sh", "-c", "echo 1 > /out/p",
    ]  # fmt: skip
    ours, bare = [], []
    for i in range(n + 1):  # alternate, so drift in the engine's speed hits both alike
        start = time.perf_counter()
        await workflow.run_task(spec, "infer", work / f"run-{i}", {"data_path": data, "output_path": work / f"p-{i}"})
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        await asyncio.to_thread(subprocess.run, bare_argv, check=True, capture_output=True)
        bare.append(time.perf_counter() - start)
    ours, bare = ours[1:], bare[1:]  # the first of each warms caches
    engine.close()
    difference = statistics.median(ours) - statistics.median(bare)
    print(
        f"task through the executor: median {statistics.median(ours) * 1000:6.0f} ms   "
        f"bare {name} run: {statistics.median(bare) * 1000:6.0f} ms   "
        f"overhead {difference * 1000:+.0f} ms per task (n={n}; target < 300 ms)"
    )


async def main(megabytes: int, tasks: int) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("MEDPERF_BENCH_DIR")) as tmp:
        await download(Path(tmp), megabytes)
        await overhead(Path(tmp), tasks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument("--tasks", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.megabytes, args.tasks))
