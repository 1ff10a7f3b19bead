"""``medperf container register``: submit a container spec, pinning what it names on the way.

A hosted file in the spec without a ``sha256`` is downloaded once here, hashed, and registered
with that hash (trust on first use), and the submitter is told so; from then on every site checks
the file against it. Downloads show a progress bar on a terminal.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cli.client import Client
from services.executor.assets import AssetCache
from shared.settings import Settings

#: The places in a container spec that name a hosted file.
HOSTED_FIELDS = ("additional_files", "image_archive")


class ProgressBar:
    """``source  42% 215/512 MB  180 MB/s`` redrawn in place, at most ten times a second."""

    def __init__(self, label: str, out: TextIO = sys.stderr) -> None:
        self.label, self.out = label, out
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._drawn < 0.1 and done != total:
            return
        self._drawn = now
        rate = done / max(now - self.started, 1e-6) / 1e6
        size = f"{done / 1e6:.0f}/{total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB"
        percent = f"{100 * done / total:3.0f}% " if total else ""
        self.out.write(f"\r{self.label}  {percent}{size}  {rate:.0f} MB/s ")
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")


async def pin_hosted_files(spec: dict[str, Any], cache: AssetCache, say: Any = print) -> dict[str, Any]:
    """Fill in the sha256 of every hosted file in ``spec`` that lacks one, by downloading it."""
    pinned = dict(spec)
    for field in HOSTED_FIELDS:
        hosted = pinned.get(field)
        if not isinstance(hosted, dict) or hosted.get("sha256") or not hosted.get("source"):
            continue
        bar = ProgressBar(hosted["source"]) if sys.stderr.isatty() else None
        try:
            _, sha256 = await cache.fetch_unverified(hosted["source"], on_progress=bar)
        finally:
            if bar is not None:
                bar.close()
        pinned[field] = {**hosted, "sha256": sha256}
        say(
            f"{field}: no sha256 given; computed {sha256} from this download (trust on first use). "
            "Sites will refuse any other bytes from now on."
        )
    return pinned


def register_container(client: Client, name: str, spec_file: Path, state: str) -> int:
    from cli.output import UsageError

    try:
        spec = json.loads(spec_file.read_text())
    except ValueError as exc:
        raise UsageError(f"{spec_file} is not valid JSON: {exc}") from exc
    settings = Settings()
    spec = asyncio.run(pin_hosted_files(spec, AssetCache(settings.state_dir / "cache", config_dir=settings.state_dir)))
    return int(client.post("/containers", {"name": name, "spec": spec, "state": state})["id"])


def medperf_source(
    config_file: Path,
    kind: str,
    parameters_file: Path | None,
    additional_file: str | None,
    additional_file_hash: str | None,
    image_hash: str | None,
) -> dict[str, Any]:
    """MedPerf's documents for ``POST /containers`` (``medperf``), with what MedPerf's own submit
    computes filled in here: the additional files' hash (downloaded once, trust on first use) and,
    when ``--image-hash`` is not given, the image's ID from the local Docker Engine (a
    DockerArchive's from the archive itself)."""
    from cli.output import UsageError
    from shared.medperf_format import MedPerfFormatError, load_yaml

    source: dict[str, Any] = {kind: _text(config_file)}
    if parameters_file is not None:
        source["parameters"] = _text(parameters_file)
    if additional_file_hash and not additional_file:
        raise UsageError("--additional-file-hash needs --additional-file URL (or synapse:ID)")
    settings = Settings()
    cache = AssetCache(settings.state_dir / "cache", config_dir=settings.state_dir)
    if additional_file:
        hosted = {"source": additional_file, **({"sha256": additional_file_hash} if additional_file_hash else {})}
        source["additional_files"] = asyncio.run(pin_hosted_files({"additional_files": hosted}, cache))[
            "additional_files"
        ]
    try:
        config = load_yaml(source[kind], config_file.name) or {}
    except MedPerfFormatError as exc:
        raise UsageError(str(exc)) from exc
    if not isinstance(config, dict):
        raise UsageError(f"{config_file} must hold a mapping")
    image = (config.get("docker") or {}).get("image") if kind == "mlcube" else config.get("image")
    if config.get("container_type") == "DockerArchive" and isinstance(image, str):
        source["image_hash"], source["image_id"] = asyncio.run(_archive_ids(cache, image, image_hash))
    elif image_hash:
        source["image_hash"] = image_hash
    elif isinstance(image, str):
        source["image_hash"] = _local_image_id(image)
    return source


def _text(path: Path) -> str:
    from cli.output import UsageError

    if not path.is_file():
        raise UsageError(f"no file {path}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _local_image_id(image: str) -> str:
    """The ID the executor pins (``docker images``' IMAGE ID, in full) of an image on this machine."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    from cli.output import UsageError

    try:
        return str(docker.from_env().images.get(image).id)
    except ImageNotFound as exc:
        raise UsageError(f"image {image} is not on this machine: pull or build it, or give --image-hash") from exc
    except DockerException as exc:
        raise UsageError(f"no Docker Engine to read {image}'s ID from ({exc}); give --image-hash sha256:…") from exc


async def _archive_ids(cache: AssetCache, url: str, image_hash: str | None) -> tuple[str, str]:
    """A DockerArchive's file hash (MedPerf's image_hash) and the ID of the image it holds, read
    from the archive's manifest.json (its Config blob is named by the image ID)."""
    import tarfile

    from cli.output import UsageError
    from shared.containers import HostedFile

    if image_hash:
        hosted = HostedFile(source=url, sha256=image_hash)
        path, sha256 = await cache.fetch(hosted), hosted.sha256
    else:
        path, sha256 = await cache.fetch_unverified(url)
    try:
        with tarfile.open(path) as archive:
            member = archive.extractfile("manifest.json")
            manifest = json.loads(member.read(1 << 20)) if member else None
        config = manifest[0]["Config"]
    except (tarfile.TarError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise UsageError(f"{url} is not a `docker save` archive with a manifest.json: {exc}") from exc
    image_id = config.rsplit("/", 1)[-1].removesuffix(".json")
    return f"sha256:{sha256}", f"sha256:{image_id}"


def register_medperf(client: Client, name: str, source: dict[str, Any], state: str) -> int:
    return int(client.post("/containers", {"name": name, "medperf": source, "state": state})["id"])
