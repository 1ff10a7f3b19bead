"""ContainerSpecs for the demo's containers, as the registry would receive them.

Every mount sits under /medperf so the scripts' command lines read the same in every task, and
each command passes the mount paths explicitly: the scripts never guess where their data is.
"""

from __future__ import annotations

from examples.breast_cancer.assets import MODELS, DemoAssets, weights_file_name
from examples.breast_cancer.images import DemoImage
from shared.containers import ContainerSpec

#: Mount key -> path inside the container, shared by every task that uses the key.
MOUNT_PATHS: dict[str, str] = {
    "data_path": "/medperf/data",
    "labels_path": "/medperf/labels",
    "parameters_file": "/medperf/parameters.json",
    "additional_files": "/medperf/additional_files",
    "output_path": "/medperf/output",
    "output_labels_path": "/medperf/output_labels",
    "predictions": "/medperf/predictions",
    "labels": "/medperf/labels",
    "local_outputs_path": "/medperf/local_outputs",
}
TASK_TIMEOUT_SECONDS = 600

#: Parameters shipped with each container (mounted as parameters.json).
PREP_PARAMETERS: dict[str, object] = {"max_invalid_fraction": 0.2}
METRICS_PARAMETERS: dict[str, object] = {"threshold": 0.5}


def _task(argv: list[str], inputs: list[str], outputs: list[str]) -> dict[str, object]:
    def mount(key: str) -> dict[str, str]:
        return {"mount_path": MOUNT_PATHS[key], "type": "file" if key == "parameters_file" else "directory"}

    return {
        "command": [*argv, *(f"--{key}={MOUNT_PATHS[key]}" for key in [*inputs, *outputs])],
        "inputs": {key: mount(key) for key in inputs},
        "outputs": {key: mount(key) for key in outputs},
        "timeout_seconds": TASK_TIMEOUT_SECONDS,
    }


def _validated(spec: dict[str, object]) -> dict[str, object]:
    # Round-trip through the contract so a drifting spec fails here, not at registration.
    return ContainerSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)


def prep_spec(image: DemoImage) -> dict[str, object]:
    run = ["python3", "/app/prep.py"]
    raw = ["data_path", "labels_path", "parameters_file"]
    return _validated(
        {
            "image": image.name,
            "image_digest": image.image_id,
            "parameters": PREP_PARAMETERS,
            "tasks": {
                "prepare": _task([*run, "prepare"], raw, ["output_path", "output_labels_path"]),
                "sanity_check": _task([*run, "sanity_check"], raw, []),
                "statistics": _task([*run, "statistics"], raw, ["output_path"]),
            },
        }
    )


def metrics_spec(image: DemoImage) -> dict[str, object]:
    evaluate = _task(
        ["python3", "/app/evaluate.py"],
        ["predictions", "labels", "parameters_file"],
        ["output_path", "local_outputs_path"],
    )
    return _validated(
        {
            "image": image.name,
            "image_digest": image.image_id,
            "parameters": METRICS_PARAMETERS,
            "tasks": {"evaluate": evaluate},
        }
    )


def model_spec(image: DemoImage, base_url: str, assets: DemoAssets, model: str) -> dict[str, object]:
    # Scoring needs no parameters, so no parameters.json is mounted: the weights carry everything.
    infer = _task(["python3", "/app/infer.py"], ["data_path", "additional_files"], ["output_path"])
    weights = assets.weights(model)
    return _validated(
        {
            "image": image.name,
            "image_digest": image.image_id,
            "tasks": {"infer": infer},
            "additional_files": {
                "source": f"{base_url.rstrip('/')}/{weights_file_name(model)}",
                "sha256": weights.sha256,
            },
        }
    )


def container_specs(images: dict[str, DemoImage], base_url: str, assets: DemoAssets) -> dict[str, dict]:
    """Specs keyed 'prep', 'metrics' and one per model name (weights hosted under base_url)."""
    specs: dict[str, dict] = {"prep": prep_spec(images["prep"]), "metrics": metrics_spec(images["metrics"])}
    for model in MODELS:
        specs[model] = model_spec(images["model"], base_url, assets, model)
    return specs
