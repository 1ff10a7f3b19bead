"""The benchmark's demo data, on which the committee's site tests a model that asks to join.

The demo tarball and the data preparator are both the committee's registration, so anything wrong
here is the benchmark's fault (final, reported with the test), never the site's data owner's."""

from __future__ import annotations

import json
from pathlib import Path

from services.executor.assets import RefusedAsset
from services.executor.workflow import PreparedData, TaskFailed, Workflow
from shared.containers import ContainerSpec, HostedFile
from shared.medperf_format import load_yaml

#: The file naming the demo's data and labels: MedPerf's paths.yaml, or paths.json.
PATHS_FILES = ("paths.yaml", "paths.yml", "paths.json")


async def prepare_demo(workflow: Workflow, demo: HostedFile, preparator: ContainerSpec, out: Path) -> PreparedData:
    """Fetch and unpack the demo tarball, and prepare the data its ``paths.yaml`` (or ``paths.json``) names."""
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
    """The data and labels directories that ``paths.yaml`` or ``paths.json`` (MedPerf's demo
    layout) names; a YAML file is read without aliases, as every YAML a container brings."""
    found = next((root / name for name in PATHS_FILES if (root / name).is_file()), root / "paths.json")
    try:
        text = found.read_text()
        paths = json.loads(text) if found.suffix == ".json" else load_yaml(text, found.name)
        data, labels = (root / paths["data_path"]).resolve(), (root / paths["labels_path"]).resolve()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        detail = f"the demo dataset ({source}) must hold a paths.yaml naming data_path and labels_path ({why})"
        raise TaskFailed("demo", None, detail, fault="benchmark") from exc
    inside = root.resolve()
    for path in (data, labels):
        if not (path.is_relative_to(inside) and path.is_dir()):
            detail = f"the demo dataset's {found.name} ({source}) must name directories inside it, not {path.name!r}"
            raise TaskFailed("demo", None, detail, fault="benchmark")
    return data, labels
