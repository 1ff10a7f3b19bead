"""Bringing a registered container's image to the site before a task runs.

An image is pinned by ``image_digest``: its image ID, or its registry manifest digest (MedPerf's
``image_hash``). It runs only if the engine holds an image with that ID or RepoDigest. When it is
missing, the site pulls ``image@image_digest`` if it allows pulls (``MEDPERF_SITE_PULL_IMAGES``),
else loads the spec's ``image_archive`` (a ``docker save`` tarball pinned by its sha256).
"""

from __future__ import annotations

import asyncio

from services.executor.assets import AssetCache, RefusedAsset
from services.executor.domain import fault_of_asset
from services.executor.engine import ContainerRuntime, ImageNotAvailable, ImageRefused
from services.executor.limits import setting
from shared.containers import ContainerSpec


class ImageFailed(Exception):
    """The registrant's image cannot be had: the task fails for good, as its container's fault."""

    def __init__(self, task_name: str, detail: str) -> None:
        super().__init__(detail)
        self.fault = fault_of_asset(task_name)


async def obtain_image(
    runtime: ContainerRuntime, cache: AssetCache, spec: ContainerSpec, task_name: str, pull: bool
) -> None:
    """Make ``spec``'s image present; ``ImageNotAvailable`` (the site's to fix, retried) or
    ``ImageFailed`` (the registrant's) when it cannot be."""
    try:
        await asyncio.to_thread(runtime.ensure_image, spec.image_digest)
        return
    except ImageNotAvailable as missing:
        if spec.image_archive is None and not pull:
            raise ImageNotAvailable(f"{missing} Or let the agent pull it: {setting('pull_images')}=true.") from None
    if pull:
        try:
            await asyncio.to_thread(runtime.pull_image, spec.image, spec.image_digest)
            return
        except ImageRefused as exc:
            if spec.image_archive is None:
                raise ImageFailed(task_name, f"its image could not be pulled: {exc}") from exc
        except ImageNotAvailable:
            if spec.image_archive is None:
                raise  # the registry is down or unreachable: the site retries
    assert spec.image_archive is not None
    try:
        archive = await cache.fetch(spec.image_archive)
    except RefusedAsset as exc:  # not its hash, a web page, too large: its owner's to fix
        raise ImageFailed(task_name, f"its image archive ({spec.image_archive.source}) was refused: {exc}") from exc
    await asyncio.to_thread(runtime.load_image, archive)
    try:
        await asyncio.to_thread(runtime.ensure_image, spec.image_digest)
    except ImageNotAvailable as exc:
        # The archive passed its hash, so it is the registered file: it names the wrong image.
        detail = f"the image archive {spec.image_archive.source} does not hold image {spec.image_digest}"
        raise ImageFailed(task_name, detail) from exc
