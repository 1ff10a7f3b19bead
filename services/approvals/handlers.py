"""Approvals handlers: registry facts feed the projections; commands become decisions and events."""

from __future__ import annotations

from sqlalchemy import select

from services.approvals import domain
from services.approvals.store import AssociationEntry, BenchmarkApproval, Component
from shared.commands import DecideAssociation, DecideBenchmark, ListAssociations, Outcome, RequestAssociation
from shared.db import UnitOfWork
from shared.events import (
    AssociationApproved,
    AssociationRejected,
    AssociationRequested,
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    CompatibilityTested,
    DatasetRegistered,
    ModelRegistered,
    utcnow,
)

# --- projections of registry facts ------------------------------------------------------------


async def open_benchmark_approval(event: BenchmarkSubmitted, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        uow.session.add(
            BenchmarkApproval(
                benchmark_id=event.benchmark_id,
                name=event.name,
                owner=event.owner,
                data_preparator_id=event.data_preparator_id,
            )
        )
        await uow.commit()


async def record_component(event: DatasetRegistered | ModelRegistered, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        if isinstance(event, DatasetRegistered):
            row = Component(
                kind="dataset",
                component_id=event.dataset_id,
                owner=event.owner,
                data_preparator_id=event.data_preparator_id,
            )
        else:
            row = Component(kind="model", component_id=event.model_id, owner=event.owner)
        uow.session.add(row)
        await uow.commit()


async def attach_compatibility(event: CompatibilityTested, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        latest = await _latest(uow, event.benchmark_id, event.kind, event.component_id)
        if latest is not None and latest.status == "PENDING":
            latest.compatibility = event.report.model_dump(mode="json")
        await uow.commit()


# --- decisions --------------------------------------------------------------------------------


async def decide_benchmark(cmd: DecideBenchmark, uow: UnitOfWork) -> Outcome:
    async with uow:
        row = await uow.session.get(BenchmarkApproval, cmd.benchmark_id)
        if row is None:
            return Outcome.refused("not_found", f"no benchmark {cmd.benchmark_id} awaits a decision")
        try:
            row.status = domain.decide_benchmark(row.status, cmd.is_admin, cmd.approve)
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        row.decided_by, row.decided_at, row.reason = cmd.actor, utcnow(), cmd.reason
        event_type = BenchmarkApproved if cmd.approve else BenchmarkRejected
        uow.emit(event_type(actor=cmd.actor, benchmark_id=row.benchmark_id, name=row.name, reason=cmd.reason))
        await uow.commit()
        return Outcome.accepted(row.benchmark_id, {"status": row.status})


async def request_association(cmd: RequestAssociation, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await uow.session.get(BenchmarkApproval, cmd.benchmark_id)
        component = await uow.session.get(Component, (cmd.kind, cmd.component_id))
        if benchmark is None or component is None:
            missing = f"benchmark {cmd.benchmark_id}" if benchmark is None else f"{cmd.kind} {cmd.component_id}"
            # Registration events may still be on their way; the caller may retry shortly.
            return Outcome.refused(
                "unavailable", f"{missing} is not known to the approvals service (yet); retry shortly"
            )
        if cmd.kind == "dataset" and component.data_preparator_id != benchmark.data_preparator_id:
            return Outcome.refused(
                "invalid",
                f"dataset {cmd.component_id} was prepared with container {component.data_preparator_id}, but the "
                f"benchmark needs its data preparator {benchmark.data_preparator_id}; prepare the data with it",
            )
        parties = domain.Party(benchmark_owner=benchmark.owner, component_owner=component.owner)
        latest = await _latest(uow, cmd.benchmark_id, cmd.kind, cmd.component_id)
        try:
            domain.may_request(latest.status if latest else None, benchmark.status, cmd.actor, parties, cmd.is_admin)
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        compatibility = cmd.compatibility.model_dump(mode="json") if cmd.compatibility else None
        entry = AssociationEntry(
            benchmark_id=cmd.benchmark_id,
            kind=cmd.kind,
            component_id=cmd.component_id,
            status="PENDING",
            initiated_by=cmd.actor,
            compatibility=compatibility,
        )
        uow.session.add(entry)
        await uow.session.flush()
        uow.emit(
            AssociationRequested(
                actor=cmd.actor,
                association_id=entry.id,
                benchmark_id=cmd.benchmark_id,
                kind=cmd.kind,
                component_id=cmd.component_id,
                compatibility=cmd.compatibility,
            )
        )
        passed = cmd.compatibility.passed if cmd.compatibility else None
        if domain.auto_approves(parties, cmd.actor, passed):
            await _append_decision(uow, entry, "APPROVED", cmd.actor, "same owner on both sides")
        await uow.commit()
        return Outcome.accepted(entry.id, {"status": "PENDING"})


async def decide_association(cmd: DecideAssociation, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await uow.session.get(BenchmarkApproval, cmd.benchmark_id)
        component = await uow.session.get(Component, (cmd.kind, cmd.component_id))
        latest = await _latest(uow, cmd.benchmark_id, cmd.kind, cmd.component_id)
        if benchmark is None or component is None or latest is None:
            return Outcome.refused(
                "not_found", f"no association of {cmd.kind} {cmd.component_id} with benchmark {cmd.benchmark_id}"
            )
        parties = domain.Party(benchmark_owner=benchmark.owner, component_owner=component.owner)
        passed = latest.compatibility.get("passed") if latest.compatibility else None
        try:
            status = domain.decide_association(
                latest.status, latest.initiated_by, cmd.actor, parties, cmd.is_admin, cmd.approve, passed
            )
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        entry = await _append_decision(uow, latest, status, cmd.actor, cmd.reason)
        await uow.commit()
        return Outcome.accepted(entry.id, {"status": status})


async def _append_decision(
    uow: UnitOfWork, request: AssociationEntry, status: str, actor: str, reason: str
) -> AssociationEntry:
    """Append the decision to the history (never overwrite) and emit it."""
    entry = AssociationEntry(
        benchmark_id=request.benchmark_id,
        kind=request.kind,
        component_id=request.component_id,
        status=status,
        initiated_by=request.initiated_by,
        decided_by=actor,
        reason=reason,
        compatibility=request.compatibility,
        priority=request.priority,
    )
    uow.session.add(entry)
    await uow.session.flush()
    common = {
        "actor": actor,
        "association_id": entry.id,
        "benchmark_id": entry.benchmark_id,
        "kind": entry.kind,
        "component_id": entry.component_id,
        "reason": reason,
    }
    if status == "APPROVED":
        uow.emit(AssociationApproved(**common, priority=entry.priority))
    else:
        uow.emit(AssociationRejected(**common))
    return entry


async def _latest(uow: UnitOfWork, benchmark_id: int, kind: str, component_id: int) -> AssociationEntry | None:
    return await uow.session.scalar(
        select(AssociationEntry)
        .where(
            AssociationEntry.benchmark_id == benchmark_id,
            AssociationEntry.kind == kind,
            AssociationEntry.component_id == component_id,
        )
        .order_by(AssociationEntry.id.desc())
        .limit(1)
    )


async def list_associations(query: ListAssociations, uow: UnitOfWork) -> Outcome:
    async with uow:
        stmt = select(AssociationEntry).order_by(AssociationEntry.id)
        if query.benchmark_id is not None:
            stmt = stmt.where(AssociationEntry.benchmark_id == query.benchmark_id)
        if query.kind is not None:
            stmt = stmt.where(AssociationEntry.kind == query.kind)
        latest: dict[tuple[int, str, int], AssociationEntry] = {}
        for entry in (await uow.session.scalars(stmt)).all():
            latest[(entry.benchmark_id, entry.kind, entry.component_id)] = entry
        rows = [e for e in latest.values() if query.status is None or e.status == query.status]
        rows.sort(key=lambda e: (-e.priority, e.id))  # executors run higher priority first
        return Outcome.accepted(
            data=[
                {
                    "id": e.id,
                    "benchmark_id": e.benchmark_id,
                    "kind": e.kind,
                    "component_id": e.component_id,
                    "status": e.status,
                    "initiated_by": e.initiated_by,
                    "decided_by": e.decided_by,
                    "reason": e.reason,
                    "compatibility": e.compatibility,
                    "priority": e.priority,
                    "created_at": e.created_at.isoformat(),
                }
                for e in rows
            ]
        )
