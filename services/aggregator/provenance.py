"""Where a leaderboard entry came from: for one (benchmark, model), each site's result with the
dataset, container digests, dataset hash, signing key and time, and who approved the dataset's and
the model's associations, and when. Everything here was signed by the site or recorded from the
approvals service's events; nothing is recomputed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from services.aggregator import listings
from services.aggregator.store import (
    BenchmarkInfo,
    ContainerInfo,
    DatasetInfo,
    ModelInfo,
    Participant,
    Result,
    SiteKeyInfo,
)
from shared.commands import GetProvenance, Outcome
from shared.db import UnitOfWork


def sees_every_cell(actor: str, is_admin: bool, committee: str, model_owner: str) -> bool:
    """Admins, the committee and the model's owner see every site's cell; a data owner sees only its
    own datasets' (as on the board, where each always sees its own results)."""
    return is_admin or actor in (committee, model_owner)


async def get_provenance(query: GetProvenance, uow: UnitOfWork) -> Outcome:
    async with uow:
        s = uow.session
        benchmark = await s.get(BenchmarkInfo, query.benchmark_id)
        if benchmark is None or not await listings.sees(s, query, "benchmark", query.benchmark_id, benchmark.owner):
            return listings.not_found("benchmark", query.benchmark_id)
        model = await s.get(ModelInfo, query.model_id)
        if model is None or not await listings.sees(s, query, "model", query.model_id, model.owner):
            return listings.not_found("model", query.model_id)
        rows = (
            await s.execute(
                select(Result, DatasetInfo, SiteKeyInfo)
                .join(DatasetInfo, DatasetInfo.dataset_id == Result.dataset_id)
                .outerjoin(SiteKeyInfo, SiteKeyInfo.key_id == Result.key_id)
                .where(Result.benchmark_id == query.benchmark_id, Result.model_id == query.model_id)
                .order_by(Result.dataset_id)
            )
        ).all()
        approvals = {
            (p.kind, p.component_id): p
            for p in await s.scalars(select(Participant).where(Participant.benchmark_id == query.benchmark_id))
        }
        if not sees_every_cell(query.actor, query.is_admin, benchmark.owner, model.owner):
            own = set(await s.scalars(select(DatasetInfo.dataset_id).where(DatasetInfo.owner == query.actor))) & {
                component for kind, component in approvals if kind == "dataset"
            }
            if not own:
                return Outcome.refused(
                    "forbidden",
                    "provenance is for the benchmark's committee, admins, the model's owner and the owners of "
                    "datasets approved for the benchmark",
                )
            rows = [r for r in rows if r[1].dataset_id in own]
        current_metrics = (
            await s.get(ContainerInfo, benchmark.metrics_container_id) if benchmark.metrics_container_id else None
        )
        cells = [
            _cell(result, dataset, key, approvals.get(("dataset", dataset.dataset_id))) for result, dataset, key in rows
        ]
        for cell in cells:
            cell["stale"] = current_metrics is not None and cell["container_digests"].get("metrics") != (
                current_metrics.image_digest
            )
        return Outcome.accepted(
            query.model_id,
            {
                "benchmark_id": benchmark.benchmark_id,
                "benchmark": benchmark.name,
                "committee": benchmark.owner,
                "model_id": model.model_id,
                "model": model.name,
                "model_owner": model.owner,
                "model_association": _approval(approvals.get(("model", model.model_id))),
                "cells": cells,
            },
        )


def _cell(result: Result, dataset: DatasetInfo, key: SiteKeyInfo | None, approval: Participant | None) -> dict:
    return {
        "site": result.site,
        "dataset_id": dataset.dataset_id,
        "dataset": dataset.name,
        "dataset_owner": dataset.owner,
        "metrics": result.metrics,
        "partial": result.partial,
        "container_digests": result.container_digests,
        "dataset_hash": result.dataset_hash,
        "event_id": result.event_id,
        "reported_at": _iso(result.reported_at),
        "key_id": result.key_id,
        # Signed before its key was revoked: it stays on the board, and says so here.
        "key_revoked_at": _iso(key.revoked_at) if key is not None else None,
        "dataset_association": _approval(approval),
    }


def _approval(row: Participant | None) -> dict[str, Any] | None:
    if row is None:
        return None  # not approved (or revoked since): the board would not show it to participants
    return {"approved_by": row.approved_by, "approved_at": _iso(row.approved_at)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
