"""Who sees what of a benchmark's results, free of I/O: the committee's sharing policy applied to
one viewer.

- The committee (the benchmark's owner) and admins see the whole board, always.
- A model's owner sees its own model's results; a data owner sees the results from its own
  datasets; always, whatever the policy (as "yours").
- Everyone else sees the shared board only if the policy's visibility admits them (committee:
  nobody else; participants: owners of an approved model or dataset of the benchmark; public:
  any authenticated user) and no embargo holds; it is shaped by the granularity, with models below
  ``min_sites`` reporting sites withheld and datasets below ``min_cases`` left out of per-site views.

Failed runs are shown in every view as whose fault and a short reason (views that name sites by
letter give the fault in general words: a site's reason may name its data); aggregate views count
them. ``complete``: the model reported on every approved dataset the view counts (a data owner's
view of others' models counts its own datasets only).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.aggregator.domain import Standings, board
from shared.events import SharingPolicy

Scope = Literal["committee", "shared", "own", "none"]


@dataclass(frozen=True)
class Viewer:
    name: str
    is_admin: bool


@dataclass(frozen=True)
class Facts:
    """What the aggregator knows of one benchmark, for the policy to decide on."""

    owner: str
    standings: Standings
    model_names: dict[int, str]
    model_owners: dict[int, str]
    dataset_labels: dict[int, str]
    dataset_owners: dict[int, str]
    dataset_cases: dict[int, int | None]
    participants: frozenset[str]  # owners of approved models and datasets
    approved_datasets: frozenset[int] = frozenset()  # what a model must report on to be complete


@dataclass(frozen=True)
class Page:
    limit: int | None = None
    offset: int = 0


def view(facts: Facts, policy: SharingPolicy, viewer: Viewer, now: datetime, page: Page = Page()) -> dict:
    """The board ``viewer`` may see, with ``scope`` saying why, and ``yours`` for their own results."""
    if viewer.is_admin or viewer.name == facts.owner:
        labels = _reported(facts, facts.dataset_labels)
        shown = board(
            facts.standings,
            facts.model_names,
            labels,
            ranking=policy.ranking,
            expected=facts.approved_datasets,
            **vars(page),
        )
        return {"scope": "committee", **shown, "policy": policy.model_dump()}
    yours = _yours(facts, viewer, policy)
    admitted = policy.visibility == "public" or (
        policy.visibility == "participants" and viewer.name in facts.participants
    )
    if admitted and policy.embargoed(now):
        until = f" until {policy.embargo_until.isoformat()}" if policy.embargo_until else ""
        return {
            "scope": "own" if yours else "none",
            "held": f"results are held{until} by the committee",
            "yours": yours,
        }
    if admitted:
        return {"scope": "shared", **shared_board(facts, policy, page), "yours": yours}
    if yours or viewer.name in facts.participants:
        return {"scope": "own" if yours else "none", "yours": yours}
    raise NotShared(policy.visibility)


class NotShared(Exception):
    def __init__(self, visibility: str) -> None:
        who = {"committee": "its committee only", "participants": "the owners of its models and datasets"}
        super().__init__(f"this benchmark's committee shares its results with {who.get(visibility, visibility)}")


def _yours(facts: Facts, viewer: Viewer, policy: SharingPolicy) -> dict | None:
    """The viewer's own models' results, and every result from the viewer's own datasets."""
    models = [m for m, owner in facts.model_owners.items() if owner == viewer.name]
    mine = [d for d, owner in facts.dataset_owners.items() if owner == viewer.name]
    all_cells, all_failures = facts.standings.cells, facts.standings.failures

    def own(per_model: dict[int, dict[int, Any]]) -> list:
        theirs = [item for m in models for item in per_model.get(m, {}).values()]
        return theirs + [
            per_dataset[d]
            for m, per_dataset in per_model.items()
            if facts.model_owners.get(m) != viewer.name
            for d in mine
            if d in per_dataset
        ]

    cells, failures = own(all_cells), own(all_failures)
    if not cells and not failures:
        return None
    base = facts.standings
    standings = Standings.of(base.metrics, base.primary, base.reference_model_id, cells, failures)
    approved, own_approved = facts.approved_datasets, facts.approved_datasets & frozenset(mine)
    return board(
        standings,
        facts.model_names,
        _reported(facts, facts.dataset_labels, standings),
        ranking=policy.ranking,
        # Another's model is complete here if it reported on each of the viewer's approved datasets.
        expected=lambda model_id: approved if facts.model_owners.get(model_id) == viewer.name else own_approved,
    )


def shared_board(facts: Facts, policy: SharingPolicy, page: Page = Page()) -> dict:
    """The board as the policy shapes it for everyone it admits."""
    large_enough = {
        d
        for d in facts.dataset_labels
        if policy.min_cases == 0 or (facts.dataset_cases.get(d) or 0) >= policy.min_cases
    }
    expected = facts.approved_datasets & frozenset(large_enough)
    if policy.granularity == "matrix":
        labels = {d: facts.dataset_labels[d] for d in large_enough}
    else:  # anonymised: the order of registration, not the name, decides the letter
        labels = {d: site_letter(i) for i, d in enumerate(sorted(large_enough))}
    return board(
        facts.standings,
        facts.model_names,
        _reported(facts, labels),
        ranking=policy.ranking,
        min_sites=policy.min_sites,
        per_dataset=policy.granularity != "aggregate",
        expected=expected,
        reasons=policy.granularity == "matrix",
        **vars(page),
    )


def site_letter(index: int) -> str:
    letters = string.ascii_uppercase
    name = ""
    index += 1
    while index:  # A..Z, AA, AB, ... like spreadsheet columns
        index, remainder = divmod(index - 1, 26)
        name = letters[remainder] + name
    return f"Site {name}"


def _reported(facts: Facts, labels: dict[int, str], standings: Standings | None = None) -> dict[int, str]:
    """The labelled datasets with at least one result or failed run: a column nobody filled is not shown."""
    reported = (standings or facts.standings).reported_datasets
    return {d: label for d, label in labels.items() if d in reported}
