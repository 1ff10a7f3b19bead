"""Who sees what of a benchmark's results, free of I/O: the committee's sharing policy applied to
one viewer.

- The committee (the benchmark's owner) and admins see the whole board, always.
- A model's owner sees its own model's results; a data owner sees the results from its own
  datasets; always, whatever the policy (as "yours").
- Everyone else sees the shared board only if the policy's visibility admits them (committee:
  nobody else; participants: owners of an approved model or dataset of the benchmark; public:
  any authenticated user) and no embargo holds; it is shaped by the granularity, with models below
  ``min_sites`` reporting sites withheld and datasets below ``min_cases`` left out of per-site views.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from services.aggregator.domain import Cell, Metric, leaderboard
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
    metrics: list[Metric]
    primary: str
    reference_model_id: int
    model_names: dict[int, str]
    model_owners: dict[int, str]
    dataset_labels: dict[int, str]
    dataset_owners: dict[int, str]
    dataset_cases: dict[int, int | None]
    participants: frozenset[str]  # owners of approved models and datasets
    cells: list[Cell]


def view(facts: Facts, policy: SharingPolicy, viewer: Viewer, now: datetime) -> dict:
    """The board ``viewer`` may see, with ``scope`` saying why, and ``yours`` for their own results."""
    if viewer.is_admin or viewer.name == facts.owner:
        return {"scope": "committee", **_board(facts, facts.cells, facts.dataset_labels), "policy": policy.model_dump()}
    own = [
        c
        for c in facts.cells
        if facts.model_owners.get(c.model_id) == viewer.name or facts.dataset_owners.get(c.dataset_id) == viewer.name
    ]
    yours = _board(facts, own, facts.dataset_labels) if own else None
    admitted = policy.visibility == "public" or (
        policy.visibility == "participants" and viewer.name in facts.participants
    )
    if admitted and policy.embargoed(now):
        until = f" until {policy.embargo_until.isoformat()}" if policy.embargo_until else ""
        return {"scope": "own" if own else "none", "held": f"results are held{until} by the committee", "yours": yours}
    if admitted:
        return {"scope": "shared", **shared_board(facts, policy), "yours": yours}
    if own or viewer.name in facts.participants:
        return {"scope": "own" if own else "none", "yours": yours}
    raise NotShared(policy.visibility)


class NotShared(Exception):
    def __init__(self, visibility: str) -> None:
        who = {"committee": "its committee only", "participants": "the owners of its models and datasets"}
        super().__init__(f"this benchmark's committee shares its results with {who.get(visibility, visibility)}")


def shared_board(facts: Facts, policy: SharingPolicy) -> dict:
    """The board as the policy shapes it for everyone it admits."""
    large_enough = {
        d
        for d in facts.dataset_labels
        if policy.min_cases == 0 or (facts.dataset_cases.get(d) or 0) >= policy.min_cases
    }
    cells = [c for c in facts.cells if c.dataset_id in large_enough]
    if policy.granularity == "matrix":
        labels = {d: facts.dataset_labels[d] for d in large_enough}
    else:  # anonymised: the order of registration, not the name, decides the letter
        labels = {d: site_letter(i) for i, d in enumerate(sorted(large_enough))}
    board = _board(facts, cells, labels)
    for row in board["rows"]:
        if row["datasets_reported"] < policy.min_sites:
            row["withheld"] = f"fewer than {policy.min_sites} sites have reported"
            row["metrics"] = {name: dict.fromkeys(summary, None) for name, summary in row["metrics"].items()}
            row["per_dataset"] = {}
            row["rank"] = None
    board["rows"].sort(key=lambda r: (r["rank"] is None, r["rank"] or 0))
    ranked = [row for row in board["rows"] if row["rank"] is not None]
    for rank, row in enumerate(ranked, start=1):  # withheld models leave no gaps in the ranking
        row["rank"] = rank
    if policy.granularity == "aggregate":
        board["datasets"] = []
        for row in board["rows"]:
            row["per_dataset"] = {}
    return board


def site_letter(index: int) -> str:
    letters = string.ascii_uppercase
    name = ""
    index += 1
    while index:  # A..Z, AA, AB, ... like spreadsheet columns
        index, remainder = divmod(index - 1, 26)
        name = letters[remainder] + name
    return f"Site {name}"


def _board(facts: Facts, cells: list[Cell], labels: dict[int, str]) -> dict:
    shown = {c.dataset_id for c in cells} & labels.keys()
    return leaderboard(
        facts.metrics,
        facts.primary,
        facts.model_names,
        {d: labels[d] for d in shown},
        facts.reference_model_id,
        [c for c in cells if c.dataset_id in shown],
    )
