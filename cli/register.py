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
