"""Leaderboard arithmetic, free of I/O: from results to a ranked table, kept current cell by cell.

Ranking (the committee chooses, in its sharing policy):

- ``primary``: by the primary metric combined across the datasets that reported it, as the
  benchmark declared (``combine``: mean by default).
- ``mean_rank``: each dataset ranks the models that reported on it by the primary metric (tied
  values share the mean of their places); a model's score is the mean of its ranks, lower first.
  A site with an easy or hard case mix then weighs no more than any other.

Tie-break, in this order: the better score; more datasets reported; under ``mean_rank``, the better
combined primary value; the lower model id (registered earlier). A model with no value of the
primary metric ranks last. A model missing a dataset is shown with ``None`` there; it is never
filled in. ``complete`` says the model reported on every approved dataset the view counts. Results
scored by another metrics container than the benchmark's current one are flagged ``stale`` until
the site scores them again.

A run that failed for good at a site is a failed cell: whose fault and a short reason, never the
log tail. A result for the same cell outranks a failure whichever came first: a later result
replaces it, and a failure of a later run does not take back a result the site signed (results are
signed, failures are not). A model whose every run failed is shown with its failed cells and no
value, after every model with one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

Ranking = Literal["primary", "mean_rank"]


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True
    aggregate: str = "mean"  # mean / weighted_mean / median / min (the worst site, by direction)


@dataclass(frozen=True, slots=True)
class Cell:
    model_id: int
    dataset_id: int
    metrics: dict[str, float]
    partial: bool
    cases: int | None = None
    stale: bool = False  # scored by a metrics container the benchmark no longer uses


@dataclass(frozen=True, slots=True)
class Failure:
    """A model's run on a dataset that failed for good (no retry left)."""

    model_id: int
    dataset_id: int
    fault: str  # whose: model / metrics / data / benchmark / infrastructure
    reason: str


#: What a view that hides site names says instead of the site's reason (which may name its data).
FAULT_WORDS = {
    "model": "the model failed",
    "metrics": "the metrics container failed",
    "data": "the site's data could not be used",
    "benchmark": "the benchmark's workflow failed",
    "infrastructure": "the site could not run it",
}


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
        return math.fsum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
    return math.fsum(values) / len(values)


def missing_metrics(declared: list[Metric], reported: dict[str, float]) -> list[str]:
    return sorted({m.name for m in declared} - set(reported))


def spread(metric: Metric, reported: list[Cell]) -> dict[str, float | None]:
    """The combined value with the mean, min, max and sample standard deviation beside it."""
    values = [c.metrics[metric.name] for c in reported]
    if not values:
        return dict.fromkeys(("value", "mean", "min", "max", "stdev"))
    mean = math.fsum(values) / len(values)
    # Two-pass sum of squares: as exact as statistics.stdev for these sizes, ten times faster.
    stdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {
        "value": combine(metric, values, [c.cases for c in reported]),
        "mean": mean,
        "min": min(values),
        "max": max(values),
        "stdev": stdev,
    }


#: Which datasets a view counts: None for all, else a set of dataset ids.
DatasetFilter = frozenset[int] | None


@dataclass
class Standings:
    """One benchmark's latest result per (model, dataset), and each model's summary per view.

    ``put`` replaces a cell and marks its model dirty; a summary is recomputed only for dirty
    models, so a board stays current at the cost of the results that changed, not of all results.
    """

    metrics: list[Metric]
    primary: str
    reference_model_id: int
    cells: dict[int, dict[int, Cell]] = field(default_factory=dict)  # model -> dataset -> cell
    failures: dict[int, dict[int, Failure]] = field(default_factory=dict)  # model -> dataset -> failure
    _summaries: dict[DatasetFilter, dict[int, dict]] = field(default_factory=dict)
    _dirty: dict[DatasetFilter, set[int]] = field(default_factory=dict)
    _mean_ranks: dict[DatasetFilter, tuple[int, dict[int, float]]] = field(default_factory=dict)
    _rankings: dict[tuple, tuple[int, list[tuple[dict, int | None]]]] = field(default_factory=dict)
    _pages: dict[tuple, tuple[int, dict]] = field(default_factory=dict)
    reported_datasets: set[int] = field(default_factory=set)  # with a result or a failure
    version: int = 0

    #: Views kept current at once; an older one (e.g. of a dataset set since grown) is dropped.
    MAX_VIEWS = 8

    @classmethod
    def of(
        cls,
        metrics: list[Metric],
        primary: str,
        reference_model_id: int,
        cells: Iterable[Cell],
        failures: Iterable[Failure] = (),
    ) -> Standings:
        standings = cls(metrics, primary, reference_model_id)
        for cell in cells:
            standings.put(cell)
        for failure in failures:
            standings.put_failure(failure)
        return standings

    def put(self, cell: Cell) -> None:
        self.cells.setdefault(cell.model_id, {})[cell.dataset_id] = cell
        self.reported_datasets.add(cell.dataset_id)
        for dirty in self._dirty.values():
            dirty.add(cell.model_id)
        self.version += 1

    def put_failure(self, failure: Failure) -> None:
        self.failures.setdefault(failure.model_id, {})[failure.dataset_id] = failure
        self.reported_datasets.add(failure.dataset_id)
        for dirty in self._dirty.values():
            dirty.add(failure.model_id)
        self.version += 1

    def failed(self, model_id: int, datasets: DatasetFilter = None) -> dict[int, Failure]:
        """dataset id -> the model's failure there, where no result outranks it."""
        cells = self.cells.get(model_id, {})
        return {
            d: f
            for d, f in self.failures.get(model_id, {}).items()
            if d not in cells and (datasets is None or d in datasets)
        }

    def all_cells(self) -> list[Cell]:
        return [c for per_dataset in self.cells.values() for c in per_dataset.values()]

    @property
    def higher_is_better(self) -> bool:
        return next((m.higher_is_better for m in self.metrics if m.name == self.primary), True)

    def summaries(self, datasets: DatasetFilter = None) -> dict[int, dict]:
        """model id -> its summary over the datasets the filter admits (models with none left out)."""
        if datasets not in self._summaries:
            if len(self._summaries) >= self.MAX_VIEWS:
                oldest = next(iter(self._summaries))
                del self._summaries[oldest], self._dirty[oldest]
            self._summaries[datasets], self._dirty[datasets] = {}, set(self.cells) | set(self.failures)
        summaries, dirty = self._summaries[datasets], self._dirty[datasets]
        for model_id in dirty:
            reported = [c for d, c in self.cells.get(model_id, {}).items() if datasets is None or d in datasets]
            failed = len(self.failed(model_id, datasets)) if model_id in self.failures else 0
            if reported or failed:
                summaries[model_id] = self._summarise(model_id, reported, failed)
            else:
                summaries.pop(model_id, None)
        dirty.clear()
        return summaries

    def _summarise(self, model_id: int, reported: list[Cell], failed: int) -> dict:
        return {
            "model_id": model_id,
            "metrics": {m.name: spread(m, [c for c in reported if m.name in c.metrics]) for m in self.metrics},
            "datasets_reported": len(reported),
            "sites_failed": failed,
            "partial": any(c.partial for c in reported),
            "stale": any(c.stale for c in reported),
        }

    def mean_ranks(self, datasets: DatasetFilter = None) -> dict[int, float]:
        cached = self._mean_ranks.get(datasets)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        by_dataset: dict[int, list[tuple[float, int]]] = {}
        for model_id, per_dataset in self.cells.items():
            for dataset_id, cell in per_dataset.items():
                if (datasets is None or dataset_id in datasets) and self.primary in cell.metrics:
                    by_dataset.setdefault(dataset_id, []).append((cell.metrics[self.primary], model_id))
        sign = -1.0 if self.higher_is_better else 1.0
        ranks: dict[int, list[float]] = {}
        for entries in by_dataset.values():
            entries.sort(key=lambda e: sign * e[0])
            place = 0
            while place < len(entries):  # equal values share the mean of the places they span
                end = place
                while end + 1 < len(entries) and entries[end + 1][0] == entries[place][0]:
                    end += 1
                for _, model_id in entries[place : end + 1]:
                    ranks.setdefault(model_id, []).append((place + end) / 2 + 1)
                place = end + 1
        means = {model_id: math.fsum(r) / len(r) for model_id, r in ranks.items()}
        self._mean_ranks[datasets] = (self.version, means)
        return means

    def ranked(self, datasets: DatasetFilter = None, ranking: Ranking = "primary", min_sites: int = 1) -> list[dict]:
        """Summaries in rank order (shared: copy before changing one), and each model's rank;
        models below ``min_sites`` reporting datasets come last, unranked, and leave no gap; after
        them, unranked too, the models that only failed."""
        key = (datasets, ranking, min_sites)
        cached = self._rankings.get(key)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        summaries = self.summaries(datasets)
        sign = -1.0 if self.higher_is_better else 1.0
        mean_ranks = self.mean_ranks(datasets) if ranking == "mean_rank" else {}

        def order(row: dict) -> tuple:
            value = row["metrics"].get(self.primary, {}).get("value")
            by_value = (value is None, sign * value if value is not None else 0.0)
            by_datasets = -row["datasets_reported"]
            if ranking == "mean_rank":
                mean_rank = mean_ranks.get(row["model_id"])
                return (mean_rank is None, mean_rank or 0.0, by_datasets, *by_value, row["model_id"])
            return (*by_value, by_datasets, row["model_id"])

        eligible = sorted((s for s in summaries.values() if s["datasets_reported"] >= min_sites), key=order)
        withheld = sorted((s for s in summaries.values() if 0 < s["datasets_reported"] < min_sites), key=order)
        failed = sorted((s for s in summaries.values() if not s["datasets_reported"]), key=lambda s: s["model_id"])
        ranks: list[tuple[dict, int | None]] = [(row, rank) for rank, row in enumerate(eligible, start=1)]
        ranks += [(row, None) for row in withheld + failed]
        if len(self._rankings) >= self.MAX_VIEWS:
            del self._rankings[next(iter(self._rankings))]
        self._rankings[key] = (self.version, ranks)
        return ranks


def board(
    standings: Standings,
    models: dict[int, str],
    datasets: dict[int, str],
    *,
    ranking: Ranking = "primary",
    min_sites: int = 1,
    limit: int | None = None,
    offset: int = 0,
    per_dataset: bool = True,
    expected: frozenset[int] | Callable[[int], frozenset[int]] | None = None,
    reasons: bool = True,
) -> dict:
    """The leaderboard over the datasets in ``datasets`` (id -> column label), one page of rows.

    ``expected``: the datasets a model must have reported on to be ``complete`` (the approved ones
    the view counts, or a function of the model id giving them; by default the board's columns).
    ``reasons``: False shows a failure's fault in ``FAULT_WORDS`` instead of the site's reason (for
    a view that hides site names).

    Per-dataset values are filled in for the page only: a board of a thousand models by two hundred
    sites costs the rows shown, not the whole matrix. A page is kept until the standings change,
    so a board that many people look at is computed once: treat what it returns as read-only.
    Models below ``min_sites`` reporting datasets are withheld: unranked, their values blank.
    """
    labels = _unique_labels(datasets)
    # Names belong to the standings' loading (a rename loads afresh), so they are not in the key.
    key = (tuple(labels.items()), ranking, min_sites, limit, offset, per_dataset, expected, reasons)
    cached = standings._pages.get(key)
    if cached is not None and cached[0] == standings.version:
        return dict(cached[1])
    dataset_ids = sorted(labels)
    columns = [(d, labels[d]) for d in dataset_ids]
    admitted = frozenset(dataset_ids)
    expected = admitted if expected is None else expected
    ranked = standings.ranked(admitted, ranking, min_sites)
    mean_ranks = standings.mean_ranks(admitted) if ranking == "mean_rank" else {}
    primary = standings.primary
    page = []
    for summary, rank in ranked[offset : None if limit is None else offset + limit]:
        row = {**summary, "rank": rank}
        page.append(row)
        model_id = row["model_id"]
        if ranking == "mean_rank":
            row["mean_rank"] = mean_ranks.get(model_id)
        row["model"] = models.get(model_id, f"model {model_id}")
        row["baseline"] = model_id == standings.reference_model_id
        cells = standings.cells.get(model_id, {})
        row["per_dataset"] = (
            {label: (cell.metrics.get(primary) if (cell := cells.get(d)) else None) for d, label in columns}
            if per_dataset
            else {}
        )
        owed = expected(model_id) if callable(expected) else expected
        row["complete"] = all(d in cells for d in owed)
        failed = standings.failed(model_id, admitted) if per_dataset and row["sites_failed"] else {}
        row["failed"] = {
            labels[d]: {"fault": f.fault, "reason": f.reason if reasons else FAULT_WORDS.get(f.fault, f.fault)}
            for d, f in sorted(failed.items())
        }
        if rank is None and row["datasets_reported"]:
            row["withheld"] = f"fewer than {min_sites} sites have reported"
            row["metrics"] = {name: dict.fromkeys(summary, None) for name, summary in row["metrics"].items()}
            row["per_dataset"] = {}
            row.pop("mean_rank", None)
    shown = {
        "primary_metric": primary,
        "higher_is_better": standings.higher_is_better,
        "aggregate": next((m.aggregate for m in standings.metrics if m.name == primary), "mean"),
        "ranking": ranking,
        "metrics": [m.name for m in standings.metrics],
        "datasets": [label for _, label in columns] if per_dataset else [],
        "rows": page,
        "total_rows": len(ranked),
        "offset": offset,
    }
    if len(standings._pages) >= 4 * standings.MAX_VIEWS:
        del standings._pages[next(iter(standings._pages))]
    standings._pages[key] = (standings.version, shown)
    return dict(shown)


def leaderboard(
    metrics: list[Metric],
    primary: str,
    models: dict[int, str],
    datasets: dict[int, str],
    reference_model_id: int,
    cells: list[Cell],
    ranking: Ranking = "primary",
) -> dict:
    """The whole board of ``cells``, computed from scratch."""
    standings = Standings.of(metrics, primary, reference_model_id, (c for c in cells if c.dataset_id in datasets))
    return board(standings, models, datasets, ranking=ranking)


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
