"""Images and files named by URL: an image archive is loaded at the site only if it holds exactly
the registered image; a spec submitted without a hash is pinned on first download (CLI)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from hosting import file_host as serving

from cli.register import pin_hosted_files
from services.executor.assets import AssetCache
from services.executor.assets.direct import DirectSource
from services.executor.runtime import DockerRuntime
from services.executor.workflow import TaskFailed, Workflow
from shared.containers import ContainerSpec


@pytest.fixture
def file_host(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with serving(tmp_path / "hosted") as url:
        yield tmp_path / "hosted", url


def unique_image(engine: docker.DockerClient) -> str:
    """A busybox image with a marker file, so its ID is this test's alone and can be deleted."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        tar.add(shutil.which("busybox") or "/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "echo"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("marker")
        info.size = len(marker)
        tar.addfile(info, io.BytesIO(marker))
    tag = f"localhost/medperf-archive-test:{uuid.uuid4().hex[:8]}"
    engine.api.import_image_from_data(payload.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
    return str(engine.images.get(tag).id)


def spec_for(digest: str, archive_url: str, archive: Path) -> ContainerSpec:
    return ContainerSpec.model_validate(
        {
            "image": "localhost/medperf-archive-test",
            "image_digest": digest,
            "image_archive": {"source": archive_url, "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()},
            "tasks": {
                "infer": {
                    "command": ["sh", "-c", "echo hi > /out/p"],
                    "outputs": {"output_path": {"mount_path": "/out"}},
                }
            },
        }
    )


@pytest.mark.engine
async def test_an_image_archive_is_loaded_only_when_it_holds_the_registered_image(
    docker_engine: None, file_host: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = file_host
    engine = docker.from_env()
    wanted, other = unique_image(engine), unique_image(engine)
    for digest, name in ((wanted, "wanted.tar"), (other, "other.tar")):
        (root / name).write_bytes(b"".join(engine.images.get(digest).save()))
        engine.images.remove(digest, force=True)
    workflow = Workflow(DockerRuntime(engine), AssetCache(tmp_path / "cache", [DirectSource()]), tmp_path, 60)
    try:
        await workflow.run_task(
            spec_for(wanted, f"{url}/wanted.tar", root / "wanted.tar"),
            "infer",
            tmp_path / "run",
            {"output_path": tmp_path / "out"},
        )
        assert (tmp_path / "out" / "p").read_text() == "hi\n"
        assert engine.images.get(wanted).id == wanted

        impostor = spec_for(wanted, f"{url}/other.tar", root / "other.tar")
        engine.images.remove(wanted, force=True)
        with pytest.raises(TaskFailed, match="does not hold image") as caught:
            await workflow.run_task(impostor, "infer", tmp_path / "run2", {"output_path": tmp_path / "out2"})
        assert caught.value.fault == "model"  # the archive is the registered file: its owner's to fix
        assert not (tmp_path / "out2" / "p").exists()
    finally:
        for digest in (wanted, other):
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(digest, force=True)
        engine.close()


async def test_a_file_without_a_hash_is_pinned_on_first_download(file_host: tuple[Path, str], tmp_path: Path) -> None:
    root, url = file_host
    (root / "weights.tar.gz").write_bytes(b"weights v1")
    told: list[str] = []
    spec = {"image": "x", "additional_files": {"source": f"{url}/weights.tar.gz"}, "tasks": {}}
    pinned = await pin_hosted_files(spec, AssetCache(tmp_path / "cache", [DirectSource()]), say=told.append)
    assert pinned["additional_files"]["sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    assert "trust on first use" in told[0]
    assert "sha256" not in spec["additional_files"]  # the caller's spec is left alone
    again = await pin_hosted_files(pinned, AssetCache(tmp_path / "cache", [DirectSource()]), say=told.append)
    assert again == pinned and len(told) == 1  # a given hash is kept, nothing downloaded
