"""What leaves a site with a result or a dataset's registration: finite numbers, statistics (nested
as MedPerf's are) of a bounded size; anything else is the container's fault, named, instead of an event no consumer can
read (NaN, 1e400) or a registration the broker refuses (a statistics file of megabytes)."""

from __future__ import annotations

import functools

import pytest
from pydantic import ValidationError

from services.executor.workflow import TaskFailed, leaving_metrics, leaving_statistics
from shared.commands import RegisterDataset
from shared.limits import STATISTICS_BYTES


def test_only_finite_numbers_leave_as_metrics_nested_ones_by_dotted_name() -> None:
    results = {"auc": 0.9, "cases": 12, "ok": True, "per_case": [0.1, 0.2], "note": "x", "AUC": {"pneumonia": 1}}
    assert leaving_metrics(results) == {"auc": 0.9, "cases": 12.0, "AUC.pneumonia": 1.0}


def test_a_declared_metric_missing_is_the_metrics_containers_fault_naming_what_it_wrote() -> None:
    with pytest.raises(TaskFailed) as failed:
        leaving_metrics({"accuracy": 0.9, "AUC": 0.8}, declared=("Accuracy",))
    assert failed.value.fault == "metrics"
    assert "declares Accuracy" in str(failed.value) and "it wrote: AUC, accuracy" in str(failed.value)
    assert leaving_metrics({"Accuracy": 0.9}, declared=("Accuracy",)) == {"Accuracy": 0.9}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_a_metric_no_consumer_could_read_is_the_metrics_containers_fault(value: float) -> None:
    with pytest.raises(TaskFailed) as failed:
        leaving_metrics({"auc": value})
    assert failed.value.task == "evaluate" and "'auc'" in str(failed.value) and "finite" in str(failed.value)


def test_statistics_leave_finite_and_bounded_nested_as_medperf_writes_them() -> None:
    assert leaving_statistics({"cases": 143, "positive_share": 0.37, "scanner": "x"}) == {
        "cases": 143,
        "positive_share": 0.37,
        "scanner": "x",
    }
    medperf = {"num_cases": 4, "labels_count": {"pneumonia": 3, "normal": 1}}
    assert leaving_statistics(medperf) == medperf
    with pytest.raises(TaskFailed, match="must map names to numbers, strings"):
        leaving_statistics({"when": object()})
    with pytest.raises(TaskFailed, match="nest deeper than"):
        leaving_statistics(functools.reduce(lambda inner, _: {"a": inner}, range(20), {"b": 1}))
    with pytest.raises(TaskFailed, match="only finite numbers"):
        leaving_statistics({"labels_count": {"x": float("inf")}})
    with pytest.raises(TaskFailed, match="only finite numbers"):
        leaving_statistics({"mean": float("nan")})
    with pytest.raises(TaskFailed, match=f"the limit is {STATISTICS_BYTES:,}") as failed:
        leaving_statistics({f"s{i}": "x" * 1000 for i in range(100)})
    assert failed.value.task == "statistics"


def test_the_registry_refuses_statistics_past_the_limit_from_any_client() -> None:
    fields = {"actor": "a", "name": "d", "site": "s", "data_preparator_id": 1, "input_hash": "h", "prepared_hash": "p"}
    RegisterDataset(**fields, statistics={"cases": 1})
    with pytest.raises(ValidationError, match="the statistics' JSON is"):
        RegisterDataset(**fields, statistics={f"s{i}": "x" * 1000 for i in range(100)})
