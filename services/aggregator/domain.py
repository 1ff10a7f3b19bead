"""Leaderboard arithmetic, free of I/O: from results to a ranked table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True
    aggregate: str = "mean"  # mean / weighted_mean / median / min (the worst site, by direction)


@dataclass(frozen=True)
class Cell:
    model_id: int
    dataset_id: int
    metrics: dict[str, float]
    partial: bool
    cases: int | None = None


def combine(metric: Metric, values: list[float], cases: list[int | None]) -> float | None:
    """One model's value of ``metric`` across the sites that reported it, as the benchmark declared."""
    if not values:
        return None
    if metric.aggregate == "median":
        return statistics.median(values)
    if metric.aggregate == "min":  # the worst site: the lowest score, or the highest error
        return min(values) if metric.higher_is_better else max(values)
    if metric.aggregate == "weighted_mean":
        weights = [c if c is not None and c > 0 else 1 for c in cases]
        return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
    return statistics.fmean(values)


def missing_metrics(declared: list[Metric], reported: dict[str, float]) -> list[str]:
    return sorted({m.name for m in declared} - set(reported))


def leaderboard(
    metrics: list[Metric],
    primary: str,
    models: dict[int, str],
    datasets: dict[int, str],
    reference_model_id: int,
    cells: list[Cell],
) -> dict:
    """Rank models by the primary metric combined across the datasets that reported, as the
    benchmark declared (``combine``: mean by default); mean, min, max and stdev stand beside it.

    Tie-break: the model with more reporting datasets ranks first, then the lower model id
    (registered earlier). A model missing a dataset is shown with ``None`` there and flagged
    ``complete: false``; it is never filled in.
    """
    datasets = _unique_labels(datasets)
    direction = {m.name: m.higher_is_better for m in metrics}
    by_model: dict[int, dict[int, Cell]] = {}
    for cell in cells:
        by_model.setdefault(cell.model_id, {})[cell.dataset_id] = cell
    dataset_ids = sorted(datasets)
    rows = []
    for model_id, per_dataset in by_model.items():
        summary = {}
        for metric in metrics:
            reported = [c for c in per_dataset.values() if metric.name in c.metrics]
            values = [c.metrics[metric.name] for c in reported]
            summary[metric.name] = {
                "value": combine(metric, values, [c.cases for c in reported]),
                "mean": statistics.fmean(values) if values else None,
                "min": min(values) if values else None,
                "max": max(values) if values else None,
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
            }
        rows.append(
            {
                "model_id": model_id,
                "model": models.get(model_id, f"model {model_id}"),
                "baseline": model_id == reference_model_id,
                "per_dataset": {
                    datasets[d]: (per_dataset[d].metrics.get(primary) if d in per_dataset else None)
                    for d in dataset_ids
                },
                "metrics": summary,
                "datasets_reported": len(per_dataset),
                "complete": len(per_dataset) == len(dataset_ids),
                "partial": any(c.partial for c in per_dataset.values()),
            }
        )
    sign = -1.0 if direction.get(primary, True) else 1.0

    def order(row: dict) -> tuple:
        value = row["metrics"][primary]["value"]
        return (value is None, sign * value if value is not None else 0.0, -row["datasets_reported"], row["model_id"])

    rows.sort(key=order)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return {
        "primary_metric": primary,
        "higher_is_better": direction.get(primary, True),
        "aggregate": next((m.aggregate for m in metrics if m.name == primary), "mean"),
        "metrics": [m.name for m in metrics],
        "datasets": [datasets[d] for d in dataset_ids],
        "rows": rows,
    }


def _unique_labels(datasets: dict[int, str]) -> dict[int, str]:
    """Columns are keyed by label, so two datasets with one label get their ids appended
    (otherwise one column would silently hide the other)."""
    counts: dict[str, int] = {}
    for label in datasets.values():
        counts[label] = counts.get(label, 0) + 1
    return {d: label if counts[label] == 1 else f"{label} #{d}" for d, label in datasets.items()}


def site_of_subject(subject: str) -> str | None:
    """The site token of ``medperf.site.<site>.…``; None for any other subject."""
    parts = subject.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["medperf", "site"] else None
