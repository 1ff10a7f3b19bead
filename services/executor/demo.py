"""The benchmark's demo data, on which the committee's site tests a model that asks to join.

The demo tarball and the data preparator are both the committee's registration, so anything wrong
here is the benchmark's fault (final, reported with the test), never the site's data owner's."""

from __future__ import annotations

import json
from pathlib import Path

from services.executor.assets import RefusedAsset
from services.executor.workflow import PreparedData, TaskFailed, Workflow
from shared.containers import ContainerSpec, HostedFile


async def prepare_demo(workflow: Workflow, demo: HostedFile, preparator: ContainerSpec, out: Path) -> PreparedData:
    """Fetch and unpack the demo tarball, and prepare the data its ``paths.json`` names."""
    try:
        root = await workflow.cache.extracted(demo)
    except RefusedAsset as exc:
        raise TaskFailed("demo", None, f"the demo dataset was refused: {exc}", fault="benchmark") from exc
    data, labels = _paths(root, demo.source)
    try:
        return await workflow.prepare(preparator, data, labels, out)
    except TaskFailed as failed:
        failed.fault = "benchmark"  # the committee's preparator on the committee's demo data
        raise


def _paths(root: Path, source: str) -> tuple[Path, Path]:
    """The data and labels directories that ``paths.json`` (MedPerf's demo layout) names."""
    try:
        paths = json.loads((root / "paths.json").read_text())
        data, labels = (root / paths["data_path"]).resolve(), (root / paths["labels_path"]).resolve()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        detail = f"the demo dataset ({source}) must hold a paths.json naming data_path and labels_path ({why})"
        raise TaskFailed("demo", None, detail, fault="benchmark") from exc
    inside = root.resolve()
    for path in (data, labels):
        if not (path.is_relative_to(inside) and path.is_dir()):
            detail = f"the demo dataset's paths.json ({source}) must name directories inside it, not {path.name!r}"
            raise TaskFailed("demo", None, detail, fault="benchmark")
    return data, labels
