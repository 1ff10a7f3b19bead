"""MedPerf's DockerArchive, through `medperf container submit`: a tiny image is `docker save`d, hosted,
registered from a container_config.yaml that names the archive's URL (the CLI reads the image ID
from the archive's manifest.json and the archive's sha256 from its bytes), and a task of the
registered container runs through the executor's workflow on the real engine, which has to load
the image from the archive first. Real nats-server, real services, real Docker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from hosting import file_host as serving
from sites import USERS, federation

from cli.main import main
from services.executor.assets import AssetCache
from services.executor.assets.direct import DirectSource
from services.executor.runtime import DockerRuntime
from services.executor.workflow import Workflow
from shared.containers import ContainerSpec

pytestmark = pytest.mark.engine

CONFIG = """\
container_type: DockerArchive
image: {url}
tasks:
  infer:
    run_args:
      command: sh -c "echo from-the-archive > /mlcommons/volumes/predictions/p"
    input_volumes:
      data_path:
        mount_path: /mlcommons/volumes/data
        type: directory
    output_volumes:
      output_path:
        mount_path: /mlcommons/volumes/predictions
        type: directory
"""


def unique_image(engine: docker.DockerClient) -> str:
    """A busybox image with a marker file (so its ID is this test's alone), imported and tagged."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        tar.add(shutil.which("busybox") or "/bin/busybox", arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    repository, tag = "localhost/medperf-archive-submit", uuid.uuid4().hex[:8]
    answer = engine.api.import_image_from_data(payload.getvalue(), repository=repository, tag=tag)
    image_id = json.loads(answer.splitlines()[-1])["status"]
    engine.images.get(image_id).tag(repository, tag)  # podman's import ignores the tag it is given
    return str(engine.images.get(f"{repository}:{tag}").id)


@pytest.fixture
def file_host(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with serving(tmp_path / "hosted") as url:
        yield tmp_path / "hosted", url


@pytest.mark.parametrize("named", [True, False], ids=["saved-by-tag", "saved-by-id"])
async def test_a_docker_archive_registered_with_the_cli_runs_at_a_site(
    engine_url: str,
    named: bool,
    file_host: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hosted, url = file_host
    engine = docker.DockerClient(base_url=engine_url)
    image_id = unique_image(engine)
    archive = hosted / "model.tar"
    archive.write_bytes(b"".join(engine.images.get(image_id).save(named=named)))  # `docker save TAG` (or ID)
    engine.images.remove(image_id, force=True)  # the site has to load it from the archive
    config = tmp_path / "container_config.yaml"
    config.write_text(CONFIG.format(url=f"{url}/model.tar"))

    async with federation(tmp_path, "unused", datasets=[]) as fed:
        monkeypatch.setenv("MEDPERF_URL", fed.clients["admin"].url)
        monkeypatch.setenv("MEDPERF_TOKEN", USERS["modeler"])
        monkeypatch.setenv("MEDPERF_STATE_DIR", str(tmp_path / "cli-state"))
        capsys.readouterr()
        argv = ["container", "submit", "--name", "archived", "--container-config", str(config)]
        code = await asyncio.to_thread(main, argv)
        out = capsys.readouterr().out
        assert code == 0, out
        container_id = int(out.split("registered container ", 1)[1].split()[0])
        stored = await fed.call("modeler", "entity", "container", container_id)

    spec = ContainerSpec.model_validate(stored["spec"])
    assert spec.image_digest == image_id  # read from the archive's manifest.json
    assert spec.image_archive is not None
    assert spec.image_archive.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert spec.image_archive.source == f"{url}/model.tar"
    assert stored["medperf"]["image_id"] == image_id

    data = tmp_path / "data"
    data.mkdir()
    workflow = Workflow(
        DockerRuntime.for_client(engine), AssetCache(tmp_path / "cache", [DirectSource()]), tmp_path, 60
    )
    run = tmp_path / "run"
    try:
        await workflow.run_task(spec, "infer", run, {"data_path": data, "output_path": run / "predictions"})
        assert (run / "predictions" / "p").read_text() == "from-the-archive\n"
        assert engine.images.get(image_id).id == image_id  # loaded, under the registered ID
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            engine.images.remove(image_id, force=True)
        engine.close()
