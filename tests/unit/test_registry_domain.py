"""The registry's pure rules: what makes a benchmark's parts fit, and who may see what."""

from __future__ import annotations

import pytest

from services.registry.domain import benchmark_problems, may_see_benchmark, may_see_dataset_statistics
from shared.containers import ContainerSpec
from shared.events import MetricSpec

DIGEST = "sha256:" + "0" * 64


def spec(*tasks: str) -> ContainerSpec:
    return ContainerSpec(image="demo:1", image_digest=DIGEST, tasks={t: {"command": ["run", t]} for t in tasks})


PREPARATOR = spec("prepare", "sanity_check", "statistics")
MODEL = spec("infer")
METRICS_CONTAINER = spec("evaluate")
METRICS = [MetricSpec(name="auc"), MetricSpec(name="brier", higher_is_better=False)]


def problems(
    preparator: ContainerSpec = PREPARATOR,
    reference_model: ContainerSpec = MODEL,
    metrics_container: ContainerSpec = METRICS_CONTAINER,
    metrics: list[MetricSpec] = METRICS,
    primary: str = "auc",
) -> list[str]:
    return benchmark_problems(preparator, reference_model, metrics_container, metrics, primary)


def test_fitting_parts_have_no_problems() -> None:
    assert problems() == []


def test_one_container_may_serve_every_role() -> None:
    everything = spec("prepare", "sanity_check", "statistics", "infer", "evaluate")
    assert problems(everything, everything, everything) == []


@pytest.mark.parametrize(
    ("argument", "container", "expected"),
    [
        (
            "preparator",
            spec("prepare"),
            "data_preparator_id: the container lacks the task(s) sanity_check, statistics needed as data_preparator",
        ),
        (
            "preparator",
            spec("prepare", "statistics"),
            "data_preparator_id: the container lacks the task(s) sanity_check needed as data_preparator",
        ),
        (
            "reference_model",
            spec("evaluate"),
            "reference_model_id: the container lacks the task(s) infer needed as model",
        ),
        (
            "metrics_container",
            spec("infer"),
            "metrics_container_id: the container lacks the task(s) evaluate needed as metrics",
        ),
    ],
)
def test_missing_tasks_name_the_field_and_the_task(argument: str, container: ContainerSpec, expected: str) -> None:
    assert problems(**{argument: container}) == [expected]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(MODEL, METRICS_CONTAINER, PREPARATOR, [MetricSpec(name="auc"), MetricSpec(name="auc")], "dice")
    assert [p.split(":")[0] for p in found] == [
        "data_preparator_id",
        "reference_model_id",
        "metrics_container_id",
        "metrics",
        "primary_metric",
    ]


def test_duplicate_metric_names_are_a_problem() -> None:
    duplicated = [MetricSpec(name="auc"), MetricSpec(name="auc", higher_is_better=False)]
    assert problems(metrics=duplicated) == ["metrics: each metric name must appear once"]


def test_primary_metric_must_be_declared() -> None:
    assert problems(primary="dice") == ["primary_metric: 'dice' is not one of the declared metrics (auc, brier)"]


def test_a_lower_is_better_metric_may_be_primary() -> None:
    assert problems(primary="brier") == []


@pytest.mark.parametrize(
    ("status", "actor", "is_admin", "visible"),
    [
        ("APPROVED", "stranger", False, True),
        ("APPROVED", "owner", False, True),
        ("PENDING", "owner", False, True),
        ("PENDING", "stranger", True, True),
        ("PENDING", "stranger", False, False),
        ("REJECTED", "owner", False, True),
        ("REJECTED", "stranger", True, True),
        ("REJECTED", "stranger", False, False),
    ],
)
def test_may_see_benchmark(status: str, actor: str, is_admin: bool, visible: bool) -> None:
    assert may_see_benchmark(status, "owner", actor, is_admin) is visible


@pytest.mark.parametrize(
    ("actor", "is_admin", "visible"),
    [("owner", False, True), ("owner", True, True), ("stranger", True, True), ("stranger", False, False)],
)
def test_may_see_dataset_statistics(actor: str, is_admin: bool, visible: bool) -> None:
    assert may_see_dataset_statistics("owner", actor, is_admin) is visible
