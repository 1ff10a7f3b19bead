"""Failed model x site cells in the board arithmetic and wherever a board is printed: the CLI table
(``medperf leaderboard``, ``medperf result view``) and the CSV download."""

from __future__ import annotations

import csv
import io

from cli.render import leaderboard_table
from services.aggregator.domain import Cell, Failure, Metric, Standings, board
from services.ingress.routes_approvals import leaderboard_csv

AUC = Metric("auc")
SITES = {10: "site-a", 11: "site-b", 12: "site-c"}


def standings() -> Standings:
    cells = [Cell(1, 10, {"auc": 0.9}, False), Cell(1, 11, {"auc": 0.8}, False), Cell(2, 10, {"auc": 0.7}, False)]
    failures = [
        Failure(1, 12, "model", "infer failed: exited with 1"),
        Failure(2, 10, "infrastructure", "the site ran out of disk"),  # outranked by model 2's result there
        Failure(3, 10, "metrics", "evaluate failed: exited with 2"),
        Failure(3, 11, "data", "prepared data of data changed since registration"),
    ]
    return Standings.of([AUC], "auc", 1, cells, failures)


def test_a_result_outranks_a_failure_and_a_model_that_only_failed_comes_last() -> None:
    shown = board(standings(), {1: "ref", 2: "m2", 3: "m3"}, SITES, expected=frozenset(SITES))
    rows = {row["model"]: row for row in shown["rows"]}
    assert [row["model"] for row in shown["rows"]] == ["ref", "m2", "m3"]
    assert rows["m2"]["failed"] == {} and rows["m2"]["per_dataset"]["site-a"] == 0.7
    assert rows["ref"]["failed"] == {"site-c": {"fault": "model", "reason": "infer failed: exited with 1"}}
    assert not rows["ref"]["complete"] and rows["ref"]["sites_failed"] == 1
    assert rows["m3"]["rank"] is None and rows["m3"]["metrics"]["auc"]["value"] is None
    assert rows["m3"]["sites_failed"] == 2 and "withheld" not in rows["m3"]
    # Anonymised: the fault in general words, not the site's reason.
    hidden = board(standings(), {}, SITES, reasons=False)
    assert hidden["rows"][-1]["failed"]["site-b"] == {"fault": "data", "reason": "the site's data could not be used"}
    # Withheld below min_sites: still ranked before the model that only failed.
    withheld = board(standings(), {}, SITES, min_sites=2)
    assert [(row["model_id"], row["rank"], "withheld" in row) for row in withheld["rows"]] == [
        (1, 1, False),
        (2, None, True),
        (3, None, False),
    ]


def test_the_cli_table_and_the_csv_show_whose_fault() -> None:
    shown = {**board(standings(), {1: "ref", 2: "m2", 3: "m3"}, SITES), "benchmark": "b"}
    text = leaderboard_table(shown)
    (m3,) = [line for line in text.splitlines() if line.lstrip().startswith("-") and "m3" in line]
    assert "failed (metrics)" in m3 and "failed (data)" in m3
    assert "failed (model): ref at site-c: infer failed: exited with 1" in text
    rows = list(csv.reader(io.StringIO(leaderboard_csv(shown))))
    assert rows[0][-1] == "sites_failed"
    assert rows[1][:3] == ["1", "ref", "True"] and rows[1][4:7] == ["0.9", "0.8", "failed (model)"]
    assert rows[3][4:6] == ["failed (metrics)", "failed (data)"] and rows[3][-1] == "2"
    # An aggregate view names no site: the table counts the failures.
    aggregate = {**board(standings(), {1: "ref", 2: "m2", 3: "m3"}, SITES, per_dataset=False), "benchmark": "b"}
    assert "m3 * (failed at 2 sites)" in leaderboard_table(aggregate)
