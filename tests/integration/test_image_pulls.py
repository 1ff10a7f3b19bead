"""Images as MedPerf names them: by registry manifest digest (its ``image_hash``), pulled by the agent
from a real registry (Debian's docker-registry on loopback) only where the site allows it."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from test_hosted_images import unique_image

from services.executor.assets import AssetCache
from services.executor.engine import ImageNotAvailable
from services.executor.runtime import DockerRuntime
from services.executor.workflow import TaskFailed, Workflow
from shared.containers import ContainerSpec


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A registry of our own on 127.0.0.1 (engines allow plain HTTP to loopback): its host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("no registry to pull from: apt-get install docker-registry")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'blobs'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    server = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def pushed(engine: docker.DockerClient, registry: str) -> tuple[str, str, str]:
    """A fresh image pushed to ``registry`` and then deleted here: (name, image ID, manifest digest)."""
    image_id = unique_image(engine)
    name = f"{registry}/medperf/pull-test"
    tag = uuid.uuid4().hex[:8]
    engine.images.get(image_id).tag(name, tag)
    for line in engine.api.push(name, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    digest = next(d for d in engine.images.get(image_id).attrs["RepoDigests"] if d.startswith(name)).split("@")[1]
    engine.images.remove(image_id, force=True)
    return f"{name}:{tag}", image_id, digest


def spec_of(name: str, digest: str) -> ContainerSpec:
    infer = {"command": ["sh", "-c", "echo pulled > /out/p"], "outputs": {"output_path": {"mount_path": "/out"}}}
    return ContainerSpec.model_validate({"image": name, "image_digest": digest, "tasks": {"infer": infer}})


async def infer(runtime: DockerRuntime, tmp_path: Path, spec: ContainerSpec, pull: bool) -> Path:
    flow = Workflow(runtime, AssetCache(tmp_path / "cache", []), tmp_path, 60, pull_images=pull)
    out = tmp_path / "run" / "out"
    await flow.run_task(spec, "infer", tmp_path / "run", {"output_path": out})
    return out


@pytest.mark.engine
async def test_an_image_named_by_its_manifest_digest_is_pulled_only_where_the_site_allows(
    engine_client: docker.DockerClient, docker_engine: None, registry: str, tmp_path: Path
) -> None:
    pusher = docker.from_env()  # Docker pushes; each engine pulls
    name, pushed_id, digest = pushed(pusher, registry)
    pusher.close()
    engine, runtime = engine_client, DockerRuntime.for_client(engine_client)
    image_id = pushed_id
    assert digest != image_id  # MedPerf's image_hash is not the image ID on Docker's image store
    try:
        with pytest.raises(ImageNotAvailable, match="MEDPERF_SITE_PULL_IMAGES"):
            await infer(runtime, tmp_path, spec_of(name, digest), pull=False)

        started = time.monotonic()
        out = await infer(runtime, tmp_path, spec_of(name, digest), pull=True)
        assert (out / "p").read_text() == "pulled\n"
        image_id = runtime.ensure_image(digest)  # found again by its RepoDigest, then run by ID
        seconds = time.monotonic() - started
        print(f"\n{runtime.engine_name}: pull of a 2 MB image from a loopback registry and run: {seconds:.2f} s")
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(image_id, force=True)


@pytest.mark.engine
async def test_a_digest_the_registry_does_not_have_is_the_containers_fault(
    engine_client: docker.DockerClient, docker_engine: None, registry: str, tmp_path: Path
) -> None:
    pusher = docker.from_env()
    name, _, _ = pushed(pusher, registry)
    pusher.close()
    runtime = DockerRuntime.for_client(engine_client)
    with pytest.raises(TaskFailed) as caught:
        await infer(runtime, tmp_path, spec_of(name, "sha256:" + "1" * 64), pull=True)
    assert caught.value.fault == "model" and "could not be pulled" in str(caught.value)
