"""Registry facts feed the approvals service's own view of benchmarks, datasets and models.

No service reads another's tables: approvals learns owners, data preparators, states and validity
from the registry's events, and keeps just what its rules need.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from services.approvals import domain
from services.approvals.store import AuditEntry, BenchmarkApproval, Component, PendingEdit, SigningKey
from shared.db import UnitOfWork
from shared.events import (
    BenchmarkApproved,
    BenchmarkSubmitted,
    DatasetRegistered,
    EntityDeleted,
    EntityEdited,
    ModelRegistered,
    SiteKeyRegistered,
    SiteKeyRevoked,
    utcnow,
)
from shared.messaging import PermanentFailure

log = logging.getLogger("medperf.approvals")


async def open_benchmark_approval(event: BenchmarkSubmitted, uow: UnitOfWork, auto_approve_from: Iterable[str]) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        existing = await uow.session.get(BenchmarkApproval, event.benchmark_id)
        if existing is not None:
            _reused_id("benchmark", event.benchmark_id, existing, event.owner)
            await uow.commit()
            return
        row = BenchmarkApproval(
            benchmark_id=event.benchmark_id,
            name=event.name,
            owner=event.owner,
            data_preparator_id=event.data_preparator_id,
            state=event.state,
            edit_versions={},
        )
        uow.session.add(row)
        uow.session.add(
            AuditEntry(
                at=event.occurred_at,
                benchmark_id=event.benchmark_id,
                action="submitted",
                actor=event.owner,
                status="PENDING",
            )
        )
        await uow.session.flush()
        await _apply_pending_edits(uow, "benchmark", event.benchmark_id, row)
        if domain.benchmark_auto_approved(event.owner, auto_approve_from):
            reason = f"{event.owner} is on the list of users whose benchmarks are approved without review"
            row.status, row.decided_by, row.decided_at, row.reason = (
                "APPROVED",
                domain.AUTO_APPROVE_LIST,
                utcnow(),
                reason,
            )
            uow.session.add(
                AuditEntry(
                    at=row.decided_at,
                    benchmark_id=row.benchmark_id,
                    action="approved",
                    actor=domain.AUTO_APPROVE_LIST,
                    status="APPROVED",
                    reason=reason,
                )
            )
            uow.emit(
                BenchmarkApproved(
                    actor=domain.AUTO_APPROVE_LIST,
                    correlation_id=event.event_id,
                    benchmark_id=row.benchmark_id,
                    name=row.name,
                    reason=reason,
                )
            )
        await uow.commit()


async def record_component(event: DatasetRegistered | ModelRegistered, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        if isinstance(event, DatasetRegistered):
            kind, component_id, preparator = "dataset", event.dataset_id, event.data_preparator_id
        else:
            kind, component_id, preparator = "model", event.model_id, None
        existing = await uow.session.get(Component, (kind, component_id))
        if existing is not None:
            _reused_id(kind, component_id, existing, event.owner)
        else:
            row = Component(
                kind=kind,
                component_id=component_id,
                owner=event.owner,
                data_preparator_id=preparator,
                state=event.state,
                edit_versions={},
            )
            uow.session.add(row)
            await uow.session.flush()
            await _apply_pending_edits(uow, kind, component_id, row)
        await uow.commit()


async def apply_registry_edit(event: EntityEdited | EntityDeleted, uow: UnitOfWork) -> None:
    """Keep the projection current: state (DEVELOPMENT -> OPERATION), validity, deletion."""
    if event.entity not in domain.TRACKED:
        return  # containers: approvals rules never look at them
    if isinstance(event, EntityEdited):
        changes: dict[str, Any] = {name: change.new for name, change in event.changes.items()}
    else:
        changes = {"deleted": True}
    async with uow:
        if not await uow.claim(event):
            return
        row = await _projected(uow, event.entity, event.entity_id)
        if row is None:
            # The registration has not been handled yet: keep the edit for when it is.
            uow.session.add(
                PendingEdit(entity=event.entity, entity_id=event.entity_id, changes=changes, at=event.occurred_at)
            )
        else:
            _apply(row, event.entity, changes, event.occurred_at)
        await uow.commit()


def _reused_id(entity: str, entity_id: int, existing: BenchmarkApproval | Component, owner: str) -> None:
    """A second registration under a known id. Keep the first: its decisions and owner must not pass
    to another entity. The registry must never reuse an id (e.g. after a hard delete); say so loudly."""
    if existing.deleted or existing.owner != owner:
        log.error(
            "%s %s registered again (owner %s) after %s; ids must not be reused, the new one is ignored",
            entity,
            entity_id,
            owner,
            "its deletion" if existing.deleted else f"one owned by {existing.owner}",
        )


async def _projected(uow: UnitOfWork, entity: str, entity_id: int) -> BenchmarkApproval | Component | None:
    if entity == "benchmark":
        return await uow.session.get(BenchmarkApproval, entity_id)
    return await uow.session.get(Component, (entity, entity_id))


def _apply(row: BenchmarkApproval | Component, entity: str, changes: dict[str, Any], at: datetime) -> None:
    try:
        updates, versions = domain.apply_edit(entity, changes, at, row.edit_versions or {})
    except ValueError as exc:  # redelivering the same edit cannot make its value possible
        raise PermanentFailure(str(exc)) from exc
    for name, value in updates.items():
        setattr(row, name, value)
    row.edit_versions = versions


async def _apply_pending_edits(
    uow: UnitOfWork, entity: str, entity_id: int, row: BenchmarkApproval | Component
) -> None:
    edits = (
        await uow.session.scalars(
            select(PendingEdit)
            .where(PendingEdit.entity == entity, PendingEdit.entity_id == entity_id)
            .order_by(PendingEdit.id)
        )
    ).all()
    for edit in edits:
        _apply(row, entity, edit.changes, edit.at)
    if edits:
        await uow.session.execute(
            delete(PendingEdit).where(PendingEdit.entity == entity, PendingEdit.entity_id == entity_id)
        )


async def record_signing_key(event: SiteKeyRegistered, uow: UnitOfWork) -> None:
    """A key reports may be signed with, and who registered it (whose tests it vouches for)."""
    async with uow:
        if not await uow.claim(event):
            return
        row = await _signing_key(uow, event.key_id, event.site)
        row.site, row.owner, row.public_key = event.site, event.owner, event.public_key
        await uow.commit()


async def record_signing_key_revoked(event: SiteKeyRevoked, uow: UnitOfWork) -> None:
    """From now on the key's reports are refused (kept even if its registration comes later)."""
    async with uow:
        if not await uow.claim(event):
            return
        row = await _signing_key(uow, event.key_id, event.site)
        row.revoked_at, row.revoked_reason = event.occurred_at, event.reason
        await uow.commit()


async def _signing_key(uow: UnitOfWork, key_id: str, site: str) -> SigningKey:
    """The key's row, created on first mention (registration and revocation travel apart)."""
    row = await uow.session.get(SigningKey, key_id)
    if row is None:
        row = SigningKey(key_id=key_id, site=site)
        uow.session.add(row)
    return row
