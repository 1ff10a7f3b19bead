"""The registry's rules, free of I/O: what makes a benchmark's parts fit together, and who may
see what. Every rule about a registered entity lives here."""

from __future__ import annotations

from shared.containers import ContainerSpec
from shared.events import MetricSpec


def benchmark_problems(
    preparator: ContainerSpec,
    reference_model: ContainerSpec,
    metrics_container: ContainerSpec,
    metrics: list[MetricSpec],
    primary_metric: str,
) -> list[str]:
    """Why these parts cannot form a benchmark (empty when they can)."""
    problems = []
    for field, spec, role in (
        ("data_preparator_id", preparator, "data_preparator"),
        ("reference_model_id", reference_model, "model"),
        ("metrics_container_id", metrics_container, "metrics"),
    ):
        if missing := spec.missing_tasks(role):
            problems.append(f"{field}: the container lacks the task(s) {', '.join(missing)} needed as {role}")
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        problems.append("metrics: each metric name must appear once")
    if primary_metric not in names:
        problems.append(f"primary_metric: {primary_metric!r} is not one of the declared metrics ({', '.join(names)})")
    return problems


def may_see_benchmark(approval_status: str, owner: str, actor: str, is_admin: bool) -> bool:
    """A benchmark is visible to everyone once approved; before that, to its owner and admins."""
    return approval_status == "APPROVED" or actor == owner or is_admin


def may_see_dataset_statistics(dataset_owner: str, actor: str, is_admin: bool) -> bool:
    # MedPerf shows every dataset's statistics to every user; here only the owner and admins
    # (issue 3 widens this to the benchmark committee and the preparator's owner).
    return actor == dataset_owner or is_admin
