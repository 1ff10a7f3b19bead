"""Which benchmarks and models the aggregator may name to whom: the registry's rule, kept from
events. A caller who may not see one is answered as if it did not exist: the same 404, in the same
words as for a missing id (``not_found``), never a 403 that would confirm it is there."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.clock import advance_clock
from services.aggregator.store import Listing
from shared.commands import Command, Outcome
from shared.db import UnitOfWork
from shared.events import BenchmarkApproved, BenchmarkRejected


def may_see(owner: str, actor: str, is_admin: bool, public: bool) -> bool:
    """Its owner and admins always; everyone else once it is public (``is_public``)."""
    return is_admin or actor == owner or public


def not_found(entity: str, entity_id: int) -> Outcome:
    """The registry's words for a missing entity, for missing and hidden alike."""
    return Outcome.refused("not_found", f"no {entity} {entity_id}")


async def sees(session: AsyncSession, asked: Command, entity: str, entity_id: int, owner: str) -> bool:
    """May the caller of ``asked`` see this benchmark or model?"""
    return may_see(owner, asked.actor, asked.is_admin, await is_public(session, entity, entity_id))


async def is_public(session: AsyncSession, entity: str, entity_id: int) -> bool:
    row = await session.get(Listing, (entity, entity_id))
    if entity == "benchmark":
        return row is not None and row.approval_status == "APPROVED" and row.is_valid
    return row is None or row.is_valid


async def _row(uow: UnitOfWork, entity: str, entity_id: int) -> Listing:
    row = await uow.session.get(Listing, (entity, entity_id))
    if row is None:
        row = Listing(entity=entity, entity_id=entity_id, approval_status="PENDING", is_valid=True)
        uow.session.add(row)
    return row


async def set_valid(uow: UnitOfWork, entity: str, entity_id: int, valid: bool) -> None:
    """An edit of ``is_valid`` (inside the caller's transaction)."""
    (await _row(uow, entity, entity_id)).is_valid = valid


async def record_decision(event: BenchmarkApproved | BenchmarkRejected, uow: UnitOfWork) -> None:
    """An admin's decision on a benchmark: who may see its board, provenance and policy follows.
    Each type has its own consumer, so a revocation may arrive before the approval it revokes:
    REJECTED is final, and the only move out of APPROVED is to REJECTED, so a rejection wins."""
    async with uow:
        if not await uow.claim(event):
            return
        row = await _row(uow, "benchmark", event.benchmark_id)
        if isinstance(event, BenchmarkRejected) or row.approval_status != "REJECTED":
            row.approval_status = "APPROVED" if isinstance(event, BenchmarkApproved) else "REJECTED"
        await advance_clock(uow, meta=True)
        await uow.commit()
