"""The sharing-policy preview (services/aggregator/preview.py): each audience's view under a policy
not yet set, and a model whose every run failed on every view of every policy.

The board: benchmark of ``com`` (reference model 1 is the committee's), model 2 of ``mo2`` (results
at both sites), model 3 of ``mo3`` (failed at both sites), model 4 of ``com`` too; datasets 10
(``alice``, site-a) and 11 (``bob``, site-b), 50 cases each."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator import policy
from services.aggregator.domain import Cell, Failure, Metric, Standings
from services.aggregator.preview import ANYONE, PARTICIPANT, audiences, model_owner
from shared.events import SharingPolicy

NOW = datetime(2026, 6, 1, tzinfo=UTC)
REASON = "infer failed: exited with 1"


def facts() -> policy.Facts:
    cells = [Cell(m, d, {"auc": v}, False, 50) for m, d, v in ((1, 10, 0.9), (1, 11, 0.8), (2, 10, 0.7), (2, 11, 0.6))]
    failures = [Failure(3, 10, "model", REASON), Failure(3, 11, "metrics", "evaluate failed: exited with 2")]
    return policy.Facts(
        owner="com",
        standings=Standings.of([Metric("auc")], "auc", 1, cells, failures),
        model_names={1: "ref", 2: "m2", 3: "m3", 4: "m4"},
        model_owners={1: "com", 2: "mo2", 3: "mo3", 4: "com"},
        dataset_labels={10: "site-a", 11: "site-b"},
        dataset_owners={10: "alice", 11: "bob"},
        dataset_cases={10: 50, 11: 50},
        participants=frozenset({"mo2", "mo3", "alice", "bob"}),
        approved_datasets=frozenset({10, 11}),
    )


def models(board: dict) -> list[str]:
    return [row["model"] for row in board["rows"]]


def test_a_committee_only_policy_refuses_the_public_and_shows_owners_their_own() -> None:
    shown = audiences(facts(), SharingPolicy(visibility="committee"), NOW)
    assert shown["public"] == {"refused": "this benchmark's committee shares its results with its committee only"}
    assert shown["participant"] == {"scope": "none", "yours": None}
    assert shown["model_owner_is"] == {"user": "mo2", "model_id": 2, "model": "m2"}
    assert shown["model_owner"]["scope"] == "own" and models(shown["model_owner"]["yours"]) == ["m2"]
    assert shown["committee"]["scope"] == "committee" and models(shown["committee"]) == ["ref", "m2", "m3"]


def test_a_participants_policy_by_site_letters() -> None:
    shown = audiences(facts(), SharingPolicy(visibility="participants", granularity="sites"), NOW)
    assert "refused" in shown["public"] and "owners of its models and datasets" in shown["public"]["refused"]
    participant = shown["participant"]
    assert participant["scope"] == "shared" and participant["yours"] is None
    assert participant["datasets"] == ["Site A", "Site B"] and models(participant) == ["ref", "m2", "m3"]
    assert shown["model_owner"]["scope"] == "shared" and models(shown["model_owner"]["yours"]) == ["m2"]
    assert shown["committee"]["datasets"] == ["site-a", "site-b"]


def test_a_public_aggregate_policy_and_an_embargo() -> None:
    public = SharingPolicy(visibility="public", granularity="aggregate", min_sites=2)
    shown = audiences(facts(), public, NOW)
    assert shown["public"]["scope"] == "shared" and shown["public"]["datasets"] == []
    assert shown["public"] == {**shown["participant"]}  # nobody's own results in either
    held = audiences(facts(), public.model_copy(update={"embargo_until": NOW + timedelta(days=1)}), NOW)
    assert held["public"] == {
        "scope": "none",
        "held": f"results are held until {(NOW + timedelta(days=1)).isoformat()} by the committee",
        "yours": None,
    }
    assert held["model_owner"]["scope"] == "own" and held["committee"]["scope"] == "committee"


def test_a_page_of_each_board() -> None:
    shown = audiences(facts(), SharingPolicy(visibility="public"), NOW, policy.Page(limit=1, offset=1))
    for audience in ("public", "participant", "committee"):
        assert models(shown[audience]) == ["m2"] and shown[audience]["total_rows"] == 3, audience


def test_which_model_owner_stands_for_model_owners() -> None:
    f = facts()
    assert model_owner(f) == {"user": "mo2", "model_id": 2, "model": "m2"}
    # A participating owner comes before one whose model is on the board without approval (lower id).
    assert model_owner(replace(f, participants=frozenset({"mo3"})))["user"] == "mo3"  # type: ignore[index]
    only_committee = replace(f, model_owners={1: "com", 4: "com"})
    assert model_owner(only_committee) is None
    shown = audiences(only_committee, SharingPolicy(), NOW)
    assert shown["model_owner_is"] is None and "no model but the reference" in shown["model_owner"]["refused"]


def test_the_stand_ins_are_no_ones_name() -> None:
    for name in (ANYONE, PARTICIPANT):
        assert "\x00" in name and name not in facts().participants


POLICIES = [
    SharingPolicy(visibility=v, granularity=g, min_sites=s, ranking=r)  # type: ignore[arg-type]
    for v, g, s, r in itertools.product(
        ("committee", "participants", "public"), ("matrix", "sites", "aggregate"), (1, 2, 3), ("primary", "mean_rank")
    )
]


@pytest.mark.parametrize("shared", POLICIES, ids=lambda p: f"{p.visibility}-{p.granularity}-{p.min_sites}-{p.ranking}")
def test_a_model_that_failed_everywhere_is_on_every_view_with_its_failed_cells(shared: SharingPolicy) -> None:
    """Its row is last and unranked, counts its failed sites, and names whose fault at each site
    (with the site's reason where sites are named, in general words where they are letters)."""
    boards = []
    for viewer in ("com", "mo3", "alice", "mo2", "stranger"):
        try:
            shown = policy.view(facts(), shared, policy.Viewer(viewer, False), NOW)
        except policy.NotShared:
            continue
        if "rows" in shown:
            boards.append((viewer, shown, shown["scope"]))
        if viewer in ("mo3", "alice") and shown.get("yours"):  # their own: model 3's, or site-a's
            boards.append((viewer, shown["yours"], "own"))
    assert {b[0] for b in boards} >= {"com", "mo3", "alice"}
    for viewer, board, scope in boards:
        row = next((r for r in board["rows"] if r["model_id"] == 3), None)
        assert row is not None, (viewer, scope)
        assert row["rank"] is None and row["metrics"]["auc"]["value"] is None and row is board["rows"][-1]
        sites = 1 if (viewer, scope) == ("alice", "own") else 2
        assert row["sites_failed"] == sites and row["complete"] is False, (viewer, scope)
        if scope == "shared" and shared.granularity == "aggregate":
            assert row["failed"] == {}  # one number per model: counted, no site named
        elif scope == "shared" and shared.granularity == "sites":
            assert row["failed"] == {
                "Site A": {"fault": "model", "reason": "the model failed"},
                "Site B": {"fault": "metrics", "reason": "the metrics container failed"},
            }
        else:
            expected = {"site-a": {"fault": "model", "reason": REASON}}
            if sites == 2:
                expected["site-b"] = {"fault": "metrics", "reason": "evaluate failed: exited with 2"}
            assert row["failed"] == expected, (viewer, scope)
