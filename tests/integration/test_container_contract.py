"""docs/containers.md's minimal example, built with the doc's own commands and run by the site's
own pipeline (``Workflow`` on the real engine: no network, read-only root, uid 65534).

The doc's images start ``FROM python:3.12-slim``; no registry is reachable here, so the test's
private engine gets that tag on the demo's locally built Debian python3 base image first.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import docker
import pytest
from minimal import DOC, build_minimal

from services.executor.assets import AssetCache
from services.executor.runtime import DockerRuntime
from services.executor.workflow import Workflow
from shared.containers import ContainerSpec

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("reader")
    done = build_minimal(workdir)
    assert re.fullmatch(r"[0-9a-f]{64}  minimal-demo.tar.gz\n", done.stdout.splitlines(keepends=True)[-1])
    return workdir


def spec(workdir: Path, role: str) -> ContainerSpec:
    return ContainerSpec.model_validate_json((workdir / f"minimal-{role}.json").read_text())


async def test_the_minimal_benchmark_runs_as_a_site_runs_it(built: Path, tmp_path: Path) -> None:
    with tarfile.open(built / "minimal-demo.tar.gz") as tar:
        tar.extractall(tmp_path / "demo", filter="data")
    paths = json.loads((tmp_path / "demo" / "paths.json").read_text())
    raw_data, raw_labels = (tmp_path / "demo" / paths[key] for key in ("data_path", "labels_path"))
    for path in (tmp_path / "demo").rglob("*"):  # readable by uid 65534, as the doc asks of data owners
        path.chmod(0o755 if path.is_dir() else 0o644)
    tmp_path.chmod(0o755)

    workflow = Workflow(DockerRuntime(docker.from_env()), AssetCache(tmp_path / "cache", []), tmp_path, 300)
    prepared = await workflow.prepare(spec(built, "prep"), raw_data, raw_labels, tmp_path / "prepared")
    assert prepared.statistics == {"cases": 7, "positives": 4}  # c05 is dropped: its value is not a number

    run = tmp_path / "run"
    scores = await workflow.score(spec(built, "model"), spec(built, "metrics"), prepared, run)
    assert scores.metrics == pytest.approx({"accuracy": 6 / 7, "sensitivity": 3 / 4})
    assert not scores.partial
    per_case = json.loads((run / "local_outputs" / "per_case.json").read_text())
    assert per_case == {f"c0{n}": n != 8 for n in (1, 2, 3, 4, 6, 7, 8)}


def test_the_doc_states_the_figures_the_example_produces() -> None:
    assert "accuracy of 6/7 and a sensitivity of 3/4" in DOC
    for name in ("paths.json", "statistics.json", "results.json", "cases", "local_outputs_path", "65534"):
        assert name in DOC, name
