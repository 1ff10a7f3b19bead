"""What each audience would see of a board under a sharing policy the committee is considering,
side by side, before it sets it: ``policy.view`` applied to stand-ins for each audience.

- ``public``: an authenticated user related to nothing on the board;
- ``participant``: a participant (as an approved data or model owner is) whose own results are not
  on the board, so the view shows only what the policy shares of everyone else's;
- ``model_owner``: the owner of one model on the board, the first (lowest id) other than the
  reference model and not the committee's own, preferring owners who participate; named in
  ``model_owner_is``;
- ``committee``: the whole board, as the committee and admins always see it.

A refused audience (the policy does not share with it) is ``{"refused": "<why>"}``. Nothing is
saved, and the stand-ins are names no user can have, so no real user's results become "theirs".
``audiences`` is free of I/O; ``preview_sharing_policy`` answers the command with it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from services.aggregator import listings
from services.aggregator.boards import Boards
from services.aggregator.policy import Facts, NotShared, Page, Viewer, view
from shared.commands import Outcome, PreviewSharingPolicy
from shared.db import UnitOfWork
from shared.events import SharingPolicy, utcnow

#: Stand-ins: a NUL is in no user name (the registry's names, an OIDC claim or a token's holder).
ANYONE = "\x00anyone"
PARTICIPANT = "\x00participant"
AUDIENCES = ("public", "participant", "model_owner", "committee")


def audiences(facts: Facts, policy: SharingPolicy, now: datetime, page: Page | None = None) -> dict[str, Any]:
    """Each audience's view of the board under ``policy``, a page of rows each."""

    def seen(facts_: Facts, name: str) -> dict[str, Any]:
        try:
            return view(facts_, policy, Viewer(name, is_admin=False), now, page or Page())
        except NotShared as refusal:
            return {"refused": str(refusal)}

    chosen = model_owner(facts)
    with_participant = replace(facts, participants=facts.participants | {PARTICIPANT})
    return {
        "public": seen(facts, ANYONE),
        "participant": seen(with_participant, PARTICIPANT),
        "model_owner": (
            seen(facts, chosen["user"])
            if chosen
            else {"refused": "no model but the reference model is on this board yet: no model owner to show"}
        ),
        "model_owner_is": chosen,
        "committee": seen(facts, facts.owner),
    }


def model_owner(facts: Facts) -> dict[str, Any] | None:
    """The model whose owner stands for model owners: who, which model."""
    reference = facts.standings.reference_model_id
    candidates = sorted(
        (owner not in facts.participants, model_id, owner)
        for model_id, owner in facts.model_owners.items()
        if model_id in facts.model_names and model_id != reference and owner != facts.owner
    )
    if not candidates:
        return None
    _, model_id, owner = candidates[0]
    return {"user": owner, "model_id": model_id, "model": facts.model_names[model_id]}


async def preview_sharing_policy(cmd: PreviewSharingPolicy, uow: UnitOfWork, boards: Boards) -> Outcome:
    """The committee's or an admin's preview; a benchmark the caller may not see is missing (404)."""
    async with uow:
        loaded = await boards.get(uow.session, cmd.benchmark_id)
    if loaded is None or not listings.may_see(loaded.facts.owner, cmd.actor, cmd.is_admin, loaded.public):
        return listings.not_found("benchmark", cmd.benchmark_id)
    if not (cmd.is_admin or cmd.actor == loaded.facts.owner):
        return Outcome.refused(
            "forbidden", "only the benchmark's committee (its owner) or an admin previews its sharing policy"
        )
    shown = audiences(loaded.facts, cmd.policy, utcnow(), Page(cmd.limit, cmd.offset))
    return Outcome.accepted(
        cmd.benchmark_id,
        {
            "benchmark_id": cmd.benchmark_id,
            "benchmark": loaded.name,
            "policy": cmd.policy.model_dump(mode="json"),
            "current_policy": loaded.policy.model_dump(mode="json"),
            **shown,
        },
    )
