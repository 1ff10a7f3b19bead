"""Build the demo's container images locally, without any image registry.

No registry is reachable, so nothing can be pulled: the base image is made from Debian packages
with debootstrap (fetched from Debian's apt mirror, which is reachable) and imported into the
engine; the three demo images are then built FROM it. Every step is skipped when its result is
already there, so only the first run on a machine pays for debootstrap.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

BASE_IMAGE = "localhost/medperf-python:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROOTFS_CACHE_NAME = "debian-bookworm-minbase-python3.tar"
SCRIPT_LABEL = "org.medperf.demo.script-sha256"
BASE_LABEL = "org.medperf.demo.base-image-id"

CONTAINERS_DIR = Path(__file__).resolve().parent / "containers"

#: key -> (tag, script path). The tag's version only changes when the contract changes; content
#: changes are tracked by the script label instead, so a rebuilt image keeps its tag.
DEMO_IMAGES: dict[str, tuple[str, Path]] = {
    "prep": ("localhost/medperf-demo-prep:1", CONTAINERS_DIR / "prep" / "prep.py"),
    "model": ("localhost/medperf-demo-model:1", CONTAINERS_DIR / "model" / "infer.py"),
    "metrics": ("localhost/medperf-demo-metrics:1", CONTAINERS_DIR / "metrics" / "evaluate.py"),
}

# An imported rootfs carries no config; these make `python3` resolvable and output unbuffered.
_BASE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]

Log = Callable[[str], object]


@dataclass(frozen=True)
class DemoImage:
    name: str  # tag, for people
    image_id: str  # 'sha256:…', what a ContainerSpec pins


def default_cache_dir() -> Path:
    """Per-machine cache for the base rootfs tarball (overridable for CI)."""
    env = os.environ.get("MEDPERF_IMAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "medperf-demo"


def _ensure_debootstrap(log: Log) -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap is not installed and this is not root: apt-get install debootstrap")
    log("installing debootstrap with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], env=env, check=False).returncode:
        # A fresh machine may have no package lists yet; refresh once and retry.
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], env=env, check=True)
    found = shutil.which("debootstrap")
    if not found:
        raise RuntimeError("debootstrap still not found after apt-get install")
    return found


def _build_rootfs_tarball(target: Path, log: Log) -> None:
    """debootstrap a minimal bookworm with python3 and pack it as an uncompressed tar."""
    debootstrap = _ensure_debootstrap(log)
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root to create device nodes and chown files")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        started = time.monotonic()
        log(f"debootstrap bookworm (minbase + python3) from {DEBIAN_MIRROR} ...")
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3", "bookworm", str(rootfs), DEBIAN_MIRROR],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        log(f"debootstrap done in {time.monotonic() - started:.1f}s")
        # Package caches are dead weight in an image that never runs apt.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = Path(work) / "rootfs.tar"
        started = time.monotonic()
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        log(f"packed rootfs ({partial.stat().st_size // 2**20} MiB) in {time.monotonic() - started:.1f}s")
        # Rename last, so an interrupted run never leaves a truncated tarball that looks cached.
        os.replace(partial, target)


def ensure_base_image(client: docker.DockerClient, cache_dir: Path, log: Log = print) -> str:
    """Return the base image's ID, importing (and if needed debootstrapping) it first."""
    try:
        return str(client.images.get(BASE_IMAGE).id)
    except docker.errors.ImageNotFound:
        pass
    tarball = cache_dir / ROOTFS_CACHE_NAME
    if not tarball.is_file():
        _build_rootfs_tarball(tarball, log)
    else:
        log(f"using cached rootfs {tarball}")
    started = time.monotonic()
    repository, tag = BASE_IMAGE.rsplit(":", 1)
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag, changes=_BASE_CHANGES)
    image_id = str(client.images.get(BASE_IMAGE).id)
    log(f"imported {BASE_IMAGE} ({image_id[:19]}) in {time.monotonic() - started:.1f}s")
    return image_id


def _dockerfile(script_name: str, script_sha: str, base_id: str) -> str:
    return "\n".join(
        [
            f"FROM {BASE_IMAGE}",
            f"COPY {script_name} /app/{script_name}",
            f'LABEL {SCRIPT_LABEL}="{script_sha}" {BASE_LABEL}="{base_id}"',
            # No .pyc writes: the root filesystem is read-only at run time.
            "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
            "USER 65534",
            f'CMD ["python3", "/app/{script_name}", "--help"]',
            "",
        ]
    )


def _context(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644  # readable by uid 65534, writable by nobody at run time
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _current(client: docker.DockerClient, tag: str, script_sha: str, base_id: str) -> str | None:
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    labels = image.labels or {}
    if labels.get(SCRIPT_LABEL) == script_sha and labels.get(BASE_LABEL) == base_id:
        return str(image.id)
    return None


def ensure_demo_images(client: docker.DockerClient, cache_dir: Path, log: Log = print) -> dict[str, DemoImage]:
    """Ensure the prep, model and metrics images exist and match their scripts."""
    base_id = ensure_base_image(client, cache_dir, log)
    images: dict[str, DemoImage] = {}
    for key, (tag, script) in DEMO_IMAGES.items():
        source = script.read_bytes()
        script_sha = hashlib.sha256(source).hexdigest()
        image_id = _current(client, tag, script_sha, base_id)
        if image_id is None:
            started = time.monotonic()
            context = _context(
                {"Dockerfile": _dockerfile(script.name, script_sha, base_id).encode(), script.name: source}
            )
            image, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, pull=False, rm=True)
            # The superseded image is left in place: registered specs may still pin its ID.
            image_id = str(image.id)
            log(f"built {tag} ({image_id[:19]}) in {time.monotonic() - started:.1f}s")
        images[key] = DemoImage(name=tag, image_id=image_id)
    return images
