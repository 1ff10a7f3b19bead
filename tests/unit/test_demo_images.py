"""The demo images, built on the local engine and run the way the executor runs them.

Each task runs from its ContainerSpec: the spec's command and mount paths, inputs read-only,
uid 65534, no network and a read-only root filesystem, so a spec that only works on the host
fails here.
"""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import docker
import docker.errors
import pytest

from examples.breast_cancer.assets import MODELS, DemoAssets, build_demo_assets
from examples.breast_cancer.images import SCRIPT_LABEL, DemoImage, default_cache_dir, ensure_demo_images
from examples.breast_cancer.specs import container_specs
from shared.containers import ContainerSpec

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("docker_engine")]


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env(timeout=600)


@pytest.fixture(scope="module")
def images(client: docker.DockerClient) -> dict[str, DemoImage]:
    # The base rootfs is cached per machine, so only the first run anywhere pays for debootstrap.
    return ensure_demo_images(client, default_cache_dir())


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    return build_demo_assets(tmp_path_factory.mktemp("assets"))


def run_task(client: docker.DockerClient, spec: dict, task: str, host: dict[str, Path]) -> tuple[int, str]:
    """Run one task as the executor would: spec command, spec mount paths, locked down."""
    parsed = ContainerSpec.model_validate(spec)
    task_spec = parsed.tasks[task]  # type: ignore[index]
    volumes: dict[str, dict[str, str]] = {}
    for direction, mode in (("inputs", "ro"), ("outputs", "rw")):
        for key, mount in getattr(task_spec, direction).items():
            path = host[key]
            if direction == "outputs":
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)  # the container writes as uid 65534
            volumes[str(path)] = {"bind": mount.mount_path, "mode": mode}
    container = client.containers.run(
        parsed.image_digest,
        command=task_spec.command,
        volumes=volumes,
        network_mode="none",
        user="65534:65534",
        read_only=True,
        tmpfs={"/tmp": "rw,size=64m"},
        detach=True,
    )
    try:
        status = container.wait(timeout=120)
        return int(status["StatusCode"]), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_images_carry_their_script_hash_and_run_unprivileged(
    client: docker.DockerClient, images: dict[str, DemoImage]
) -> None:
    assert set(images) == {"prep", "model", "metrics"}
    for image in images.values():
        inspected = client.images.get(image.image_id)
        assert inspected.id == image.image_id and image.name in inspected.tags
        assert inspected.attrs["Config"]["User"] == "65534"
        assert len(inspected.labels[SCRIPT_LABEL]) == 64
    # A second call finds everything current and rebuilds nothing.
    assert ensure_demo_images(client, default_cache_dir(), log=lambda _: None) == images


def test_pipeline_runs_in_locked_down_containers(
    client: docker.DockerClient, images: dict[str, DemoImage], assets: DemoAssets, tmp_path: Path
) -> None:
    specs = container_specs(images, "http://files.invalid/demo", assets)
    site = assets.sites["hospital-a"]
    params = {}
    for name in ("prep", "metrics"):
        params[name] = tmp_path / f"{name}-parameters.json"
        params[name].write_text(json.dumps(specs[name]["parameters"]))
    prepared, prepared_labels = tmp_path / "prepared", tmp_path / "prepared_labels"
    raw = {"data_path": site.data_path, "labels_path": site.labels_path, "parameters_file": params["prep"]}

    code, logs = run_task(
        client, specs["prep"], "prepare", {**raw, "output_path": prepared, "output_labels_path": prepared_labels}
    )
    assert code == 0, logs
    ready = {"data_path": prepared, "labels_path": prepared_labels, "parameters_file": params["prep"]}
    code, logs = run_task(client, specs["prep"], "sanity_check", ready)
    assert code == 0 and "passed" in logs, logs

    for model in MODELS:
        weights = tmp_path / "weights" / model
        with tarfile.open(assets.weights(model).path) as tar:
            tar.extractall(weights, filter="data")
        predictions = tmp_path / model / "predictions"
        code, logs = run_task(
            client,
            specs[model],
            "infer",
            {"data_path": prepared, "additional_files": weights, "output_path": predictions},
        )
        assert code == 0, logs
        with open(predictions / "predictions.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == site.n_cases and all(0.0 <= float(r["score"]) <= 1.0 for r in rows)

    results, local = tmp_path / "results", tmp_path / "local"
    code, logs = run_task(
        client,
        specs["metrics"],
        "evaluate",
        {
            "predictions": tmp_path / "logistic_regression" / "predictions",
            "labels": prepared_labels,
            "parameters_file": params["metrics"],
            "output_path": results,
            "local_outputs_path": local,
        },
    )
    assert code == 0, logs
    assert json.loads((results / "results.json").read_text())["auc"] > 0.95
    assert (local / "per_case.csv").is_file()


def test_missing_weights_fail_cleanly_inside_the_container(
    client: docker.DockerClient, images: dict[str, DemoImage], assets: DemoAssets, tmp_path: Path
) -> None:
    specs = container_specs(images, "http://files.invalid/demo", assets)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    host = {"data_path": assets.sites["hospital-b"].data_path, "additional_files": empty, "output_path": tmp_path / "o"}
    code, logs = run_task(client, specs["gaussian_nb"], "infer", host)
    assert code == 1 and "weights not found" in logs and "Traceback" not in logs
    assert not (tmp_path / "o" / "predictions.csv").exists()
