"""Leaderboard arithmetic: ranking, tie-breaks, gaps that stay gaps, and the spread of each metric."""

from __future__ import annotations

import random
import statistics

import pytest

from services.aggregator import domain
from services.aggregator.domain import Cell, Metric, Standings, leaderboard, missing_metrics

AUC = Metric("auc", higher_is_better=True)
BRIER = Metric("brier", higher_is_better=False)
DATASETS = {10: "site-a", 20: "site-b", 30: "site-c"}
MODELS = {1: "reference", 2: "challenger", 3: "third", 4: "fourth"}


def board(cells: list[Cell], *, primary: str = "auc", datasets: dict[int, str] = DATASETS, reference: int = 1) -> dict:
    return leaderboard([AUC, BRIER], primary, MODELS, datasets, reference, cells)


def cell(model: int, dataset: int, auc: float | None = None, brier: float | None = None, partial: bool = False) -> Cell:
    metrics = {k: v for k, v in (("auc", auc), ("brier", brier)) if v is not None}
    return Cell(model, dataset, metrics, partial)


def order(result: dict) -> list[int]:
    return [row["model_id"] for row in result["rows"]]


def row_of(result: dict, model_id: int) -> dict:
    (row,) = [r for r in result["rows"] if r["model_id"] == model_id]
    return row


def test_ranks_by_mean_of_the_primary_metric() -> None:
    result = board(
        [
            cell(1, 10, auc=0.70),
            cell(1, 20, auc=0.90),  # mean 0.80
            cell(2, 10, auc=0.95),
            cell(2, 20, auc=0.75),  # mean 0.85
            cell(3, 10, auc=0.60),
            cell(3, 20, auc=0.98),  # mean 0.79, best single value but not best mean
        ]
    )
    assert order(result) == [2, 1, 3]
    assert [r["rank"] for r in result["rows"]] == [1, 2, 3]
    assert result["primary_metric"] == "auc"
    assert result["higher_is_better"] is True
    assert result["metrics"] == ["auc", "brier"]


def test_lower_is_better_reverses_the_order() -> None:
    cells = [cell(1, 10, auc=0.8, brier=0.20), cell(2, 10, auc=0.9, brier=0.10), cell(3, 10, auc=0.7, brier=0.30)]
    by_auc, by_brier = board(cells), board(cells, primary="brier")
    assert order(by_auc) == [2, 1, 3]
    assert order(by_brier) == [2, 1, 3]
    assert by_brier["higher_is_better"] is False
    # Same numbers, opposite direction: the order flips.
    flipped = [cell(1, 10, brier=0.8), cell(2, 10, brier=0.9), cell(3, 10, brier=0.7)]
    assert order(board(flipped, primary="brier")) == [3, 1, 2]


@pytest.mark.parametrize("primary", ["auc", "brier"])
def test_tie_break_prefers_more_datasets_then_lower_model_id(primary: str) -> None:
    cells = [
        cell(4, 10, auc=0.5, brier=0.5),
        cell(4, 20, auc=0.5, brier=0.5),  # mean 0.5 over two datasets
        cell(3, 10, auc=0.5, brier=0.5),  # mean 0.5 over one dataset
        cell(2, 20, auc=0.5, brier=0.5),  # mean 0.5 over one dataset, lower id than 3
    ]
    assert order(board(cells, primary=primary)) == [4, 2, 3]


def test_a_better_mean_beats_more_datasets() -> None:
    cells = [cell(1, 10, auc=0.6), cell(1, 20, auc=0.6), cell(1, 30, auc=0.6), cell(2, 10, auc=0.61)]
    assert order(board(cells)) == [2, 1]


def test_missing_cells_stay_missing() -> None:
    result = board([cell(1, 10, auc=0.9), cell(1, 20, auc=0.7), cell(1, 30, auc=0.8), cell(2, 20, auc=0.6)])
    assert result["datasets"] == ["site-a", "site-b", "site-c"]
    full, gappy = row_of(result, 1), row_of(result, 2)
    assert full["per_dataset"] == {"site-a": 0.9, "site-b": 0.7, "site-c": 0.8}
    assert full["complete"] is True and full["datasets_reported"] == 3
    assert gappy["per_dataset"] == {"site-a": None, "site-b": 0.6, "site-c": None}
    assert gappy["complete"] is False and gappy["datasets_reported"] == 1
    # The mean is over what was reported, never over zeros (or anything else) filled in.
    assert gappy["metrics"]["auc"] == {"value": 0.6, "mean": 0.6, "min": 0.6, "max": 0.6, "stdev": 0.0}


def test_datasets_are_listed_by_id_whatever_the_input_order() -> None:
    result = board([cell(1, 30, auc=0.1), cell(1, 10, auc=0.3)], datasets={30: "z-site", 10: "a-site", 20: "m-site"})
    assert result["datasets"] == ["a-site", "m-site", "z-site"]
    assert list(row_of(result, 1)["per_dataset"]) == ["a-site", "m-site", "z-site"]


def test_baseline_flag_and_model_names() -> None:
    result = board([cell(1, 10, auc=0.5), cell(2, 10, auc=0.9), cell(99, 10, auc=0.1)], reference=1)
    assert {r["model_id"]: r["baseline"] for r in result["rows"]} == {1: True, 2: False, 99: False}
    assert {r["model_id"]: r["model"] for r in result["rows"]} == {1: "reference", 2: "challenger", 99: "model 99"}


def test_spread_is_computed_exactly() -> None:
    aucs, briers = [0.61, 0.73, 0.88], [0.31, 0.17, 0.09]
    cells = [cell(2, d, auc=a, brier=b) for d, a, b in zip((10, 20, 30), aucs, briers, strict=True)]
    summary = row_of(board(cells), 2)["metrics"]
    for name, values in (("auc", aucs), ("brier", briers)):
        assert summary[name] == {
            "value": statistics.fmean(values),  # the default declared aggregate is the mean
            "mean": statistics.fmean(values),
            "min": min(values),
            "max": max(values),
            "stdev": statistics.stdev(values),
        }
    assert summary["auc"]["stdev"] == pytest.approx(0.13527749258468583)  # sample, not population, stdev


def test_spread_of_a_metric_nobody_reported_is_empty() -> None:
    summary = row_of(board([cell(1, 10, auc=0.5)]), 1)["metrics"]
    assert summary["brier"] == {"value": None, "mean": None, "min": None, "max": None, "stdev": None}


@pytest.mark.parametrize(
    ("flags", "partial"),
    [((False, False), False), ((False, True), True), ((True, True), True)],
)
def test_partial_flag_if_any_result_is_partial(flags: tuple[bool, bool], partial: bool) -> None:
    cells = [cell(1, 10, auc=0.5, partial=flags[0]), cell(1, 20, auc=0.5, partial=flags[1])]
    assert row_of(board(cells), 1)["partial"] is partial


@pytest.mark.parametrize("primary", ["auc", "brier"])
def test_models_without_the_primary_metric_rank_last_in_both_directions(primary: str) -> None:
    other = "brier" if primary == "auc" else "auc"
    cells = [
        Cell(1, 10, {other: 0.5}, False),  # lowest id, but nothing to rank by
        Cell(2, 10, {primary: 0.99}, False),
        Cell(3, 10, {primary: 0.01}, False),
    ]
    result = board(cells, primary=primary)
    assert order(result)[-1] == 1
    assert row_of(result, 1)["metrics"][primary]["mean"] is None
    assert row_of(result, 1)["per_dataset"]["site-a"] is None
    assert row_of(result, 1)["rank"] == 3


def test_missing_metrics() -> None:
    assert missing_metrics([AUC, BRIER], {"auc": 1.0}) == ["brier"]
    assert missing_metrics([AUC, BRIER], {"auc": 1.0, "brier": 0.0, "extra": 2.0}) == []
    assert missing_metrics([BRIER, AUC], {}) == ["auc", "brier"]


def test_no_results_no_rows() -> None:
    result = board([], datasets={})
    assert result["rows"] == [] and result["datasets"] == []


def test_two_datasets_with_the_same_label_both_show() -> None:
    result = board([cell(1, 10, auc=0.9), cell(1, 20, auc=0.1)], datasets={10: "site-a/train", 20: "site-a/train"})
    row = row_of(result, 1)
    assert row["datasets_reported"] == 2
    assert len(row["per_dataset"]) == len(result["datasets"]) == 2


@pytest.mark.parametrize(
    ("aggregate", "higher_is_better", "expected"),
    [
        ("mean", True, (0.9 + 0.6 + 0.75) / 3),
        ("median", True, 0.75),
        ("min", True, 0.6),  # the worst site
        ("min", False, 0.9),  # for an error metric the worst site is the highest
        ("weighted_mean", True, (0.9 * 100 + 0.6 * 10 + 0.75 * 1) / 111),  # no 'cases' declared: one case
    ],
)
def test_sites_combine_as_the_benchmark_declares(aggregate: str, higher_is_better: bool, expected: float) -> None:
    metric = Metric("auc", higher_is_better, aggregate)
    cells = [
        Cell(1, 10, {"auc": 0.9}, False, 100),
        Cell(1, 11, {"auc": 0.6}, False, 10),
        Cell(1, 12, {"auc": 0.75}, False),
    ]
    board = leaderboard([metric], "auc", {1: "m"}, {10: "a", 11: "b", 12: "c"}, 1, cells)
    (row,) = board["rows"]
    assert row["metrics"]["auc"]["value"] == pytest.approx(expected)
    assert row["metrics"]["auc"]["mean"] == pytest.approx((0.9 + 0.6 + 0.75) / 3)  # the spread stays beside it
    assert board["aggregate"] == aggregate


def test_the_declared_aggregate_decides_the_ranking() -> None:
    metric = Metric("auc", True, "min")
    steady = [Cell(1, 10, {"auc": 0.80}, False), Cell(1, 11, {"auc": 0.80}, False)]
    erratic = [Cell(2, 10, {"auc": 0.99}, False), Cell(2, 11, {"auc": 0.70}, False)]  # better mean, worse site
    board = leaderboard([metric], "auc", {1: "steady", 2: "erratic"}, {10: "a", 11: "b"}, 1, steady + erratic)
    assert [row["model"] for row in board["rows"]] == ["steady", "erratic"]


# --- kept current cell by cell ------------------------------------------------------------------


def test_standings_kept_current_equal_a_board_computed_from_scratch() -> None:
    """Random results arrive one by one (some replacing earlier ones); after every step the
    incrementally maintained board is the board computed afresh from the latest cells."""
    rng = random.Random(5)
    metrics = [AUC, BRIER, Metric("f1", aggregate="median"), Metric("sens", aggregate="min")]
    live = Standings(metrics, "auc", 1)
    latest: dict[tuple[int, int], Cell] = {}
    for step in range(300):
        model, dataset = rng.randint(1, 6), rng.choice(list(DATASETS))
        values = {m.name: round(rng.random(), 2) for m in metrics if rng.random() > 0.1}
        cell = Cell(model, dataset, values, rng.random() < 0.1, rng.choice([None, 10, 50]), stale=rng.random() < 0.1)
        live.put(cell)
        latest[(model, dataset)] = cell
        if step % 7 == 0:
            for ranking in ("primary", "mean_rank"):
                incremental = domain.board(live, MODELS, DATASETS, ranking=ranking)
                fresh = leaderboard(metrics, "auc", MODELS, DATASETS, 1, list(latest.values()), ranking=ranking)
                assert incremental == fresh, f"step {step}, {ranking}"


def test_a_cached_page_follows_new_results() -> None:
    live = Standings([AUC], "auc", 1)
    live.put(cell(1, 10, auc=0.5))
    live.put(cell(2, 10, auc=0.6))
    assert order(domain.board(live, MODELS, DATASETS)) == [2, 1]
    live.put(cell(1, 10, auc=0.9))
    assert order(domain.board(live, MODELS, DATASETS)) == [1, 2]


def test_mean_rank_weighs_every_site_alike() -> None:
    # Model 2 wins big at one easy site and loses narrowly at two others: first by mean AUC,
    # second by mean rank.
    cells = [
        cell(1, 10, auc=0.61), cell(1, 20, auc=0.62), cell(1, 30, auc=0.60),
        cell(2, 10, auc=0.99), cell(2, 20, auc=0.60), cell(2, 30, auc=0.59),
    ]  # fmt: skip
    assert order(leaderboard([AUC], "auc", MODELS, DATASETS, 1, cells)) == [2, 1]
    by_rank = leaderboard([AUC], "auc", MODELS, DATASETS, 1, cells, ranking="mean_rank")
    assert order(by_rank) == [1, 2]
    assert row_of(by_rank, 1)["mean_rank"] == pytest.approx(4 / 3)
    assert row_of(by_rank, 2)["mean_rank"] == pytest.approx(5 / 3)


def test_mean_rank_ties_share_places_and_follow_the_written_tie_break() -> None:
    cells = [
        cell(3, 10, auc=0.8), cell(2, 10, auc=0.8), cell(4, 10, auc=0.8),  # tied for places 2-4: 3 each
        cell(1, 10, auc=0.9),
        cell(2, 20, auc=0.7),  # model 2 has more datasets than 3 and 4
    ]  # fmt: skip
    result = leaderboard([AUC], "auc", MODELS, DATASETS, 1, cells, ranking="mean_rank")
    assert [row_of(result, m)["mean_rank"] for m in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    # 3 and 4: same mean rank, same datasets, same value: the older model (lower id) first.
    assert order(result) == [1, 2, 3, 4]
    assert [row["rank"] for row in result["rows"]] == [1, 2, 3, 4]


def test_lower_is_better_in_mean_rank() -> None:
    cells = [cell(1, 10, brier=0.3), cell(2, 10, brier=0.1)]
    result = leaderboard([AUC, BRIER], "brier", MODELS, DATASETS, 1, cells, ranking="mean_rank")
    assert order(result) == [2, 1]


def test_stale_results_are_flagged_and_still_shown() -> None:
    cells = [Cell(1, 10, {"auc": 0.9}, False, stale=True), Cell(2, 10, {"auc": 0.8}, False)]
    result = leaderboard([AUC], "auc", MODELS, DATASETS, 1, cells)
    assert [(row["model_id"], row["stale"]) for row in result["rows"]] == [(1, True), (2, False)]
    assert row_of(result, 1)["per_dataset"]["site-a"] == 0.9


def test_pages_keep_the_ranks_of_the_whole_board() -> None:
    live = Standings.of([AUC], "auc", 1, [cell(m, 10, auc=m / 10) for m in (1, 2, 3, 4)])
    first, second = (
        domain.board(live, MODELS, DATASETS, limit=2),
        domain.board(live, MODELS, DATASETS, limit=2, offset=2),
    )
    assert [(r["model_id"], r["rank"]) for r in first["rows"] + second["rows"]] == [(4, 1), (3, 2), (2, 3), (1, 4)]
    assert first["total_rows"] == second["total_rows"] == 4
