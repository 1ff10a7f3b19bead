"""A tiny image for tests and benchmarks, built locally from Debian's static busybox (no registry
is reachable from sites or CI): tasks are written as shell scripts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

APPLETS = ("sh", "echo", "cat", "cp", "ls", "id", "touch", "sleep", "seq", "true", "mkdir")
# The tag names the applet list, so a changed list builds a new image instead of reusing a stale one.
TAG = "localhost/medperf-test-busybox:" + hashlib.sha256(" ".join(APPLETS).encode()).hexdigest()[:12]


def ensure_busybox_image(engine: docker.DockerClient) -> str:
    """The image's ID (``sha256:...``), importing it on first use."""
    with contextlib.suppress(ImageNotFound):
        return str(engine.images.get(TAG).id)  # re-importing would leave a dangling image each time
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).is_file():
        raise FileNotFoundError("a static busybox binary is needed: apt-get install busybox-static")
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    repository, tag = TAG.rsplit(":", 1)
    answer = engine.api.import_image_from_data(payload.getvalue(), repository=repository, tag=tag)
    image_id = json.loads(answer.splitlines()[-1])["status"]
    engine.images.get(image_id).tag(repository, tag)  # podman's import ignores the tag it is given
    return str(engine.images.get(TAG).id)
