"""Approvals queries: the current associations, and the audit trail of every decision."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, func, or_, select

from services.approvals import domain, trust
from services.approvals.store import AssociationEntry, AuditEntry, BenchmarkApproval, Component, Priority
from shared.commands import AuditTrail, ListAssociations, Outcome
from shared.db import UnitOfWork


async def list_associations(query: ListAssociations, uow: UnitOfWork) -> Outcome:
    """The latest entry per pair that the caller may see, highest priority first, then oldest
    first: executors run models in this order, which is how priorities take effect."""
    async with uow:
        s = uow.session
        benchmark = await s.get(BenchmarkApproval, query.benchmark_id) if query.benchmark_id is not None else None
        if query.benchmark_id is not None and not query.involving_me and not _sees(benchmark, query):
            return _refused(domain.not_found("benchmark", query.benchmark_id))
        own = await s.execute(
            select(AssociationEntry.benchmark_id, AssociationEntry.kind, AssociationEntry.status)
            .join(
                Component,
                and_(Component.kind == AssociationEntry.kind, Component.component_id == AssociationEntry.component_id),
            )
            .where(Component.owner == query.actor, AssociationEntry.id.in_(_latest_ids()))
        )
        try:  # "involving me" shows only the caller's own, so it needs no relation to the benchmark
            visibility = None
            if not query.involving_me:
                visibility = domain.list_visibility(
                    query.actor,
                    query.is_admin,
                    benchmark.facts() if benchmark else None,
                    [(b, k, st) for b, k, st in own],
                    query.benchmark_id,
                )
        except domain.Refusal as refusal:
            return _refused(refusal)
        latest = _latest_ids()
        if query.benchmark_id is not None:
            latest = latest.where(AssociationEntry.benchmark_id == query.benchmark_id)
        if query.kind is not None:
            latest = latest.where(AssociationEntry.kind == query.kind)
        if query.component_id is not None:
            latest = latest.where(AssociationEntry.component_id == query.component_id)
        priority = func.coalesce(Priority.priority, 0).label("priority")
        stmt = (
            select(AssociationEntry, priority)
            .outerjoin(
                Priority,
                and_(
                    AssociationEntry.kind == "model",
                    Priority.benchmark_id == AssociationEntry.benchmark_id,
                    Priority.model_id == AssociationEntry.component_id,
                ),
            )
            .outerjoin(BenchmarkApproval, BenchmarkApproval.benchmark_id == AssociationEntry.benchmark_id)
            .outerjoin(
                Component,
                and_(Component.kind == AssociationEntry.kind, Component.component_id == AssociationEntry.component_id),
            )
            .where(AssociationEntry.id.in_(latest))
        )
        if query.status is not None:
            stmt = stmt.where(AssociationEntry.status == query.status)
        mine = or_(BenchmarkApproval.owner == query.actor, Component.owner == query.actor)
        if query.involving_me:
            stmt = stmt.where(mine)
        elif visibility is not None:
            stmt = stmt.where(
                or_(
                    mine,
                    and_(AssociationEntry.kind == "model", AssociationEntry.benchmark_id.in_(visibility.models_in)),
                    and_(AssociationEntry.kind == "dataset", AssociationEntry.benchmark_id.in_(visibility.datasets_in)),
                )
            )
        stmt = stmt.order_by(priority.desc(), AssociationEntry.id).limit(query.limit).offset(query.offset)
        rows = (await s.execute(stmt)).all()
        return Outcome.accepted(data=[_association(entry, prio) for entry, prio in rows])


def _sees(benchmark: BenchmarkApproval | None, query: ListAssociations | AuditTrail) -> bool:
    """Does the benchmark exist for the caller? (Unknown and invisible get the same 404.)"""
    return benchmark is not None and domain.may_see_benchmark(benchmark.facts(), query.actor, query.is_admin)


def _refused(refusal: domain.Refusal) -> Outcome:
    return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]


def _latest_ids() -> Select[tuple[int]]:
    """The id of the latest entry of every (benchmark, kind, component): the authoritative one."""
    return select(func.max(AssociationEntry.id)).group_by(
        AssociationEntry.benchmark_id, AssociationEntry.kind, AssociationEntry.component_id
    )


def _association(e: AssociationEntry, priority: int) -> dict[str, Any]:
    return {
        "id": e.id,
        "benchmark_id": e.benchmark_id,
        "kind": e.kind,
        "component_id": e.component_id,
        "status": e.status,
        "initiated_by": e.initiated_by,
        "decided_by": e.decided_by,
        "reason": e.reason,
        "compatibility": e.compatibility,
        "priority": priority,
        "created_at": e.created_at.isoformat(),
    }


async def audit_trail(query: AuditTrail, uow: UnitOfWork) -> Outcome:
    """Every decision about one benchmark, dataset or model, oldest first."""
    async with uow:
        s = uow.session
        if query.entity == "benchmark":
            benchmark = await s.get(BenchmarkApproval, query.id)
            if not _sees(benchmark, query):
                return _refused(domain.not_found("benchmark", query.id))
            assert benchmark is not None
            owner, owned = benchmark.owner, []
            entries_where = AssociationEntry.benchmark_id == query.id
            audit_where = AuditEntry.benchmark_id == query.id
        else:
            component = await s.get(Component, (query.entity, query.id))
            if component is None or not domain.may_see_component(component.facts(), query.actor, query.is_admin):
                return _refused(domain.not_found(query.entity, query.id))
            owner = component.owner
            entries_where = and_(AssociationEntry.kind == query.entity, AssociationEntry.component_id == query.id)
            audit_where = and_(AuditEntry.kind == query.entity, AuditEntry.component_id == query.id)
            joined = select(AssociationEntry.benchmark_id).where(entries_where).distinct()
            owned = list(
                await s.scalars(
                    select(BenchmarkApproval.benchmark_id).where(
                        BenchmarkApproval.owner == query.actor, BenchmarkApproval.benchmark_id.in_(joined)
                    )
                )
            )
        try:
            scope = domain.trail_scope(query.entity, query.actor, query.is_admin, owner, owned)
        except domain.Refusal as refusal:
            return _refused(refusal)
        if scope is not None:
            entries_where = and_(entries_where, AssociationEntry.benchmark_id.in_(scope))
            audit_where = and_(audit_where, AuditEntry.benchmark_id.in_(scope))
        history = (await s.scalars(select(AssociationEntry).where(entries_where).order_by(AssociationEntry.id))).all()
        audit = (await s.scalars(select(AuditEntry).where(audit_where).order_by(AuditEntry.id))).all()
        # Both tables are appended in time order; on a same-instant tie the audit row (a test
        # attached, a setting changed) comes first, since it is what caused the decision next to it.
        keyed = [*_history_items(history), *(((a.at, 0, a.id), _audit_item(a)) for a in audit)]
        keyed.sort(key=lambda pair: pair[0])
        return Outcome.accepted(data=[item for _, item in keyed])


def _history_items(history: Sequence[AssociationEntry]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    items = []
    previous: dict[tuple[int, str, int], str] = {}
    for e in history:
        pair = (e.benchmark_id, e.kind, e.component_id)
        action = domain.association_action(previous.get(pair), e.status)
        previous[pair] = e.status
        items.append(
            (
                (e.created_at, 1, e.id),
                {
                    "at": e.created_at.isoformat(),
                    "actor": e.decided_by or e.initiated_by,
                    "decided_by": e.decided_by,
                    "action": action,
                    "status": e.status,
                    "reason": e.reason,
                    "benchmark_id": e.benchmark_id,
                    "kind": e.kind,
                    "component_id": e.component_id,
                    "association_id": e.id,
                    "initiated_by": e.initiated_by,
                    "compatibility": e.compatibility,
                    # which report this entry (a decision, or the request) saw
                    "report": trust.summary(e.compatibility),
                },
            )
        )
    return items


def _audit_item(a: AuditEntry) -> dict[str, Any]:
    decision = a.action in ("approved", "rejected")  # a benchmark decision
    return {
        "at": a.at.isoformat(),
        "actor": a.actor,
        "decided_by": a.actor if decision else None,
        "action": a.action,
        "status": a.status,
        "reason": a.reason,
        "benchmark_id": a.benchmark_id,
        "kind": a.kind,
        "component_id": a.component_id,
        **a.details,
    }
