"""MedPerf's container formats at the edge: container_config.yaml and mlcube.yaml become the one
canonical ContainerSpec, run_args read as MedPerf's docker runner reads them, and what cannot run
here is refused with what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.commands import RegisterContainer
from shared.containers import TaskSpec
from shared.events import flatten_statistics
from shared.medperf_format import MedPerfFormatError, MedPerfSource, load_yaml, to_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "medperf_format"
DIGEST = "sha256:" + "ab" * 32
EVALUATOR = """
container_type: DockerImage
image: example/metrics:0.1
tasks:
  evaluate:
    input_volumes:
      predictions: {mount_path: /mlcommons/volumes/predictions, type: directory}
      labels: {mount_path: /mlcommons/volumes/labels, type: directory}
    output_volumes:
      output_path: {mount_path: /mlcommons/volumes/results/results.yaml, type: file}
"""


def convert(config: str, **fields: object) -> dict:
    source = MedPerfSource(container_config=config, image_hash=DIGEST, **fields)  # type: ignore[arg-type]
    return to_spec(source).model_dump(mode="json")


def test_the_examples_convert_with_their_parameters_and_files() -> None:
    prep = convert(
        (EXAMPLE / "prep" / "container_config.yaml").read_text(),
        parameters=(EXAMPLE / "prep" / "parameters.yaml").read_text(),
    )
    assert prep["image_digest"] == DIGEST and prep["parameters"] == {"min_value": 0, "max_value": 100}
    assert prep["tasks"]["prepare"]["command"] == ["python3", "/project/prep.py", "prepare"]
    assert prep["tasks"]["prepare"]["outputs"]["report_file"] == {
        "mount_path": "/mlcommons/volumes/report/report.yaml",
        "type": "file",
    }
    assert "metadata_path" in prep["tasks"]["sanity_check"]["inputs"]
    model = convert(
        (EXAMPLE / "model" / "container_config.yaml").read_text(),
        additional_files={"source": "https://example.org/files.tgz", "sha256": "cd" * 32},
    )
    assert "command" not in model["tasks"]["infer"]  # the image's ENTRYPOINT runs
    assert model["tasks"]["infer"]["environment"] == {"THRESHOLD_SCALE": "10"}
    assert convert(EVALUATOR)["tasks"]["evaluate"]["outputs"]["output_path"]["type"] == "file"


def test_an_mlcube_passes_its_mounts_as_arguments_to_the_images_entrypoint() -> None:
    spec = to_spec(
        MedPerfSource(
            mlcube=(EXAMPLE / "model_mlcube" / "mlcube.yaml").read_text(),
            parameters="centre: 40\n",
            image_hash=DIGEST,
        )
    )
    infer = spec.tasks["infer"]
    assert infer.command == ["infer", "--data_path=/mlcube_io0", "--parameters_file=/mlcube_io1/parameters.yaml",
                             "--output_path=/mlcube_io2"]  # fmt: skip
    assert infer.inputs["parameters_file"].type == "file" and infer.outputs["output_path"].type == "directory"
    assert spec.parameters == {"centre": 40} and spec.image == "medperf-format/model:0.1"


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [(2, "2"), (0, None), ("all", "all"), ([0, 1], "device=0,1"), ("device=1", "device=1"), ("3", "3")],
)
def test_gpus_in_every_form_medperf_takes(gpus: object, expected: str | None) -> None:
    assert TaskSpec(gpus=gpus).gpus == expected


def test_run_args_as_medperf_reads_them() -> None:
    task = TaskSpec(command='python3 /x.py --name "a b"', entrypoint="/bin/sh", shm_size="2GB")
    assert task.command == ["python3", "/x.py", "--name", "a b"]
    assert task.entrypoint == ["/bin/sh"] and task.shm_size == "2g"
    with pytest.raises(ValidationError, match="like a shell"):
        TaskSpec(command='python3 "unclosed')
    assert TaskSpec().model_dump(mode="json").keys().isdisjoint({"command", "entrypoint"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("DockerImage", "EncryptedDockerArchive"), "encrypted images cannot run here"),
        (("DockerImage", "SingularityFile"), "Docker or podman images only"),
        (("evaluate:", "run_script:"), "only the tasks"),
        (("    input_volumes:", "    run_args: {user: root}\n    input_volumes:"), "user not allowed"),
        (("type: directory}\n      labels", "}\n      labels"), "needs mount_path and type"),
    ],
)
def test_what_cannot_run_here_is_refused_saying_what_to_change(change: tuple[str, str], message: str) -> None:
    with pytest.raises(MedPerfFormatError, match=message):
        convert(EVALUATOR.replace(*change, 1))


def test_an_image_hash_is_required_and_yaml_aliases_are_refused() -> None:
    with pytest.raises(MedPerfFormatError, match="image_hash: required"):
        to_spec(MedPerfSource(container_config=EVALUATOR))
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    with pytest.raises(MedPerfFormatError, match="aliases"):
        load_yaml(bomb, "parameters.yaml")


def test_the_command_carries_the_documents_and_the_spec_made_from_them() -> None:
    command = RegisterContainer(actor="a", name="m", medperf={"container_config": EVALUATOR, "image_hash": DIGEST})
    assert command.container_spec.image == "example/metrics:0.1"
    again = RegisterContainer.model_validate_json(command.model_dump_json())  # as the registry receives it
    assert again.spec == command.spec and again.medperf == command.medperf
    with pytest.raises(ValidationError, match="describe different containers"):
        RegisterContainer(
            actor="a",
            name="m",
            medperf={"container_config": EVALUATOR, "image_hash": DIGEST},
            spec={**command.container_spec.model_dump(), "image": "other"},
        )
    with pytest.raises(ValidationError, match="give spec"):
        RegisterContainer(actor="a", name="m")
    with pytest.raises(ValidationError, match=r"medperf: tasks\.run_script"):
        RegisterContainer(
            actor="a",
            name="m",
            medperf={"container_config": EVALUATOR.replace("evaluate:", "run_script:"), "image_hash": DIGEST},
        )


def test_nested_statistics_are_shown_by_dotted_name() -> None:
    statistics = {"num_cases": 7, "labels_count": {"pneumonia": 4, "normal": 3}, "sites": ["a", "b"]}
    assert flatten_statistics(statistics) == {
        "num_cases": 7,
        "labels_count.pneumonia": 4,
        "labels_count.normal": 3,
        "sites.0": "a",
        "sites.1": "b",
    }
