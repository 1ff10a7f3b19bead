"""Sharing policies from every role's viewpoint (services/aggregator/policy.py), walked over every
combination of visibility, granularity and embargo state."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from cli.render import leaderboard_table
from services.aggregator.domain import Cell, Metric, Standings
from services.aggregator.policy import Facts, NotShared, Viewer, site_letter, view
from shared.events import SharingPolicy

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NAMES = {10: "hospital-1", 11: "hospital-2", 12: "hospital-3"}


def facts() -> Facts:
    cells = [Cell(9, d, {"auc": 0.80 + d / 1000}, False) for d in NAMES]  # the reference, everywhere
    cells += [Cell(1, d, {"auc": 0.90}, False) for d in NAMES]  # alice's model, everywhere
    cells += [Cell(2, 10, {"auc": 0.99}, False)]  # bob's model, one site only
    return Facts(
        owner="committee",
        standings=Standings.of([Metric("auc", True)], "auc", 9, cells),
        model_names={9: "reference", 1: "alice-model", 2: "bob-model"},
        model_owners={9: "committee", 1: "alice", 2: "bob"},
        dataset_labels=dict(NAMES),
        dataset_owners={10: "h1", 11: "h2", 12: "h3"},
        dataset_cases={10: 100, 11: 5, 12: 50},
        participants=frozenset({"alice", "bob", "h1", "h2", "h3"}),
    )


EMBARGOES = {
    "none": {},
    "held": {"released": False},
    "until-tomorrow": {"embargo_until": NOW + timedelta(days=1)},
    "until-yesterday": {"embargo_until": NOW - timedelta(days=1)},
}
VIEWERS = {
    "admin": Viewer("root", True),
    "committee": Viewer("committee", False),
    "model-owner": Viewer("alice", False),
    "data-owner": Viewer("h2", False),
    "stranger": Viewer("eve", False),
}
COMBINATIONS = list(
    itertools.product(("committee", "participants", "public"), ("aggregate", "sites", "matrix"), EMBARGOES)
)


def models_in(board: dict | None) -> set[str]:
    return {row["model"] for row in board["rows"]} if board else set()


def cells_in(board: dict | None) -> set[tuple[str, str]]:
    if not board:
        return set()
    return {(row["model"], d) for row in board["rows"] for d, v in row["per_dataset"].items() if v is not None}


@pytest.mark.parametrize(("visibility", "granularity", "embargo"), COMBINATIONS)
@pytest.mark.parametrize("role", VIEWERS)
def test_each_role_sees_what_the_policy_allows_and_always_its_own(
    visibility: str, granularity: str, embargo: str, role: str
) -> None:
    policy = SharingPolicy(visibility=visibility, granularity=granularity, **EMBARGOES[embargo])  # type: ignore[arg-type]
    viewer = VIEWERS[role]
    embargoed = embargo in ("held", "until-tomorrow")
    admitted = visibility == "public" or (visibility == "participants" and role in ("model-owner", "data-owner"))

    if role in ("admin", "committee"):  # everything, names included, whatever the policy
        board = view(facts(), policy, viewer, NOW)
        assert board["scope"] == "committee"
        assert models_in(board) == {"reference", "alice-model", "bob-model"}
        assert set(board["datasets"]) == set(NAMES.values())
        return
    if not admitted and role == "stranger":
        with pytest.raises(NotShared, match="shares its results with"):
            view(facts(), policy, viewer, NOW)
        return

    board = view(facts(), policy, viewer, NOW)
    shown = "rows" in board
    assert shown == (admitted and not embargoed)
    if admitted and embargoed:
        assert "held" in board
    if shown:
        assert board["scope"] == "shared"
        assert models_in(board) == {"reference", "alice-model", "bob-model"}
        if granularity == "matrix":
            assert set(board["datasets"]) == set(NAMES.values())
        else:  # no hospital's name leaves the committee unless the committee shares the matrix
            shared = json.dumps([board["rows"], board["datasets"]])
            assert not [name for name in NAMES.values() if name in shared]
            assert board["datasets"] == ([] if granularity == "aggregate" else ["Site A", "Site B", "Site C"])
    yours = board["yours"]
    if role == "model-owner":  # alice: her model on every site, nobody else's model
        assert models_in(yours) == {"alice-model"}
        assert cells_in(yours) == {("alice-model", n) for n in NAMES.values()}
    elif role == "data-owner":  # h2: every model's result on her site, no other site
        assert cells_in(yours) == {("reference", "hospital-2"), ("alice-model", "hospital-2")}
        assert yours["datasets"] == ["hospital-2"]
    else:
        assert yours is None


def test_a_model_below_min_sites_is_withheld_and_the_ranking_has_no_gap() -> None:
    board = view(facts(), SharingPolicy(visibility="public", min_sites=2), Viewer("eve", False), NOW)
    ranks = {row["model"]: row["rank"] for row in board["rows"]}
    assert ranks == {"alice-model": 1, "reference": 2, "bob-model": None}
    bob = next(row for row in board["rows"] if row["model"] == "bob-model")
    assert bob["withheld"] and bob["metrics"]["auc"]["mean"] is None and bob["per_dataset"] == {}
    committee = view(facts(), SharingPolicy(visibility="public", min_sites=2), Viewer("committee", False), NOW)
    assert next(r for r in committee["rows"] if r["model"] == "bob-model")["rank"] == 1  # the committee sees all


def test_small_sites_are_left_out_of_shared_views_but_not_out_of_their_owners() -> None:
    policy = SharingPolicy(visibility="participants", min_cases=10)
    board = view(facts(), policy, Viewer("h2", False), NOW)
    assert "hospital-2" not in board["datasets"] and set(board["datasets"]) == {"hospital-1", "hospital-3"}
    assert board["yours"]["datasets"] == ["hospital-2"]


def test_a_result_held_by_an_embargo_appears_once_the_time_has_come() -> None:
    policy = SharingPolicy(visibility="public", embargo_until=NOW + timedelta(hours=1))
    before = view(facts(), policy, Viewer("eve", False), NOW)
    after = view(facts(), policy, Viewer("eve", False), NOW + timedelta(hours=1))
    assert "rows" not in before and "held" in before
    assert models_in(after) == {"reference", "alice-model", "bob-model"}


def test_site_letters_continue_past_z() -> None:
    assert [site_letter(i) for i in (0, 1, 25, 26, 27)] == ["Site A", "Site B", "Site Z", "Site AA", "Site AB"]


def test_the_terminal_table_shows_the_shared_board_the_hold_or_only_your_own() -> None:
    own_only = {**view(facts(), SharingPolicy(visibility="committee"), Viewer("alice", False), NOW), "benchmark": "b"}
    text = leaderboard_table(own_only)
    assert text.startswith("Your results in b") and "alice-model" in text and "bob-model" not in text
    held = {**view(facts(), SharingPolicy(released=False), Viewer("bob", False), NOW), "benchmark": "b"}
    assert leaderboard_table(held).startswith("Leaderboard: b: results are held by the committee")
    shared = {
        **view(facts(), SharingPolicy(visibility="public", min_sites=2), Viewer("eve", False), NOW),
        "benchmark": "b",
    }
    (bob,) = [line for line in leaderboard_table(shared).splitlines() if "bob-model" in line]
    assert "(withheld: too few sites)" in bob and bob.startswith("-")
