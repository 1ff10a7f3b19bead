"""Approvals handlers for commands and site reports: decisions become history entries and events.

Every command that changes a benchmark's associations or settings first locks the benchmark's row
(``SELECT .. FOR UPDATE`` on PostgreSQL; SQLite serialises writers anyway), so two requests for
the same pair cannot both see "nothing pending" and both append.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.approvals import domain, trust
from services.approvals.store import (
    AssociationEntry,
    AuditEntry,
    AutoApprovalPolicy,
    BenchmarkApproval,
    Component,
    Priority,
    SigningKey,
)
from shared.commands import (
    DecideAssociation,
    DecideBenchmark,
    Outcome,
    RequestAssociation,
    SetAutoApproval,
    SetPriority,
)
from shared.db import UnitOfWork
from shared.events import (
    AssociationApproved,
    AssociationPriorityChanged,
    AssociationRejected,
    AssociationRequested,
    AutoApprovalChanged,
    BenchmarkApproved,
    BenchmarkRejected,
    CompatibilityReport,
    utcnow,
)


def _refused(refusal: domain.Refusal) -> Outcome:
    return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]


# --- benchmarks -------------------------------------------------------------------------------


async def decide_benchmark(cmd: DecideBenchmark, uow: UnitOfWork) -> Outcome:
    async with uow:
        row = await benchmark_row(uow, cmd.benchmark_id)
        if row is None or row.deleted:
            return Outcome.refused("not_found", f"no benchmark {cmd.benchmark_id} awaits a decision")
        try:
            row.status = domain.decide_benchmark(row.status, cmd.is_admin, cmd.approve)
        except domain.Refusal as refusal:
            return _refused(refusal)
        row.decided_by, row.decided_at, row.reason = cmd.actor, utcnow(), cmd.reason
        uow.session.add(
            AuditEntry(
                at=row.decided_at,
                benchmark_id=row.benchmark_id,
                action="approved" if cmd.approve else "rejected",
                actor=cmd.actor,
                status=row.status,
                reason=cmd.reason,
            )
        )
        event_type = BenchmarkApproved if cmd.approve else BenchmarkRejected
        uow.emit(event_type(actor=cmd.actor, benchmark_id=row.benchmark_id, name=row.name, reason=cmd.reason))
        await uow.commit()
        return Outcome.accepted(row.benchmark_id, {"status": row.status})


async def set_auto_approval(cmd: SetAutoApproval, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await benchmark_row(uow, cmd.benchmark_id)
        if benchmark is None or benchmark.deleted or not _sees(benchmark, cmd.actor, cmd.is_admin):
            return _refused(domain.not_found("benchmark", cmd.benchmark_id))
        try:
            domain.may_configure(cmd.actor, benchmark.facts(), cmd.is_admin, f"its {cmd.kind} auto-approval")
            allowlist = domain.normalise_allowlist(cmd.allowlist)
        except domain.Refusal as refusal:
            return _refused(refusal)
        policy = await uow.session.get(AutoApprovalPolicy, (cmd.benchmark_id, cmd.kind))
        data = {"benchmark_id": cmd.benchmark_id, "kind": cmd.kind, "mode": cmd.mode, "allowlist": allowlist}
        if policy is not None and (policy.mode, policy.allowlist) == (cmd.mode, allowlist):
            return Outcome.accepted(cmd.benchmark_id, {**data, "changed": False})
        old = {"mode": policy.mode, "allowlist": policy.allowlist} if policy else {"mode": "NEVER", "allowlist": []}
        if policy is None:
            policy = AutoApprovalPolicy(benchmark_id=cmd.benchmark_id, kind=cmd.kind)
            uow.session.add(policy)
        policy.mode, policy.allowlist = cmd.mode, allowlist
        uow.session.add(
            AuditEntry(
                benchmark_id=cmd.benchmark_id,
                kind=cmd.kind,
                action="auto_approval_changed",
                actor=cmd.actor,
                details={"old": old, "new": {"mode": cmd.mode, "allowlist": allowlist}},
            )
        )
        uow.emit(
            AutoApprovalChanged(
                actor=cmd.actor, benchmark_id=cmd.benchmark_id, kind=cmd.kind, mode=cmd.mode, allowlist=allowlist
            )
        )
        await uow.commit()
        return Outcome.accepted(cmd.benchmark_id, {**data, "changed": True})


async def set_priority(cmd: SetPriority, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await benchmark_row(uow, cmd.benchmark_id)
        if benchmark is None or benchmark.deleted or not _sees(benchmark, cmd.actor, cmd.is_admin):
            return _refused(domain.not_found("benchmark", cmd.benchmark_id))
        try:
            domain.may_configure(cmd.actor, benchmark.facts(), cmd.is_admin, "model priorities")
        except domain.Refusal as refusal:
            return _refused(refusal)
        if await latest_entry(uow, cmd.benchmark_id, "model", cmd.model_id) is None:
            return Outcome.refused(
                "not_found",
                f"model {cmd.model_id} has no association with benchmark {cmd.benchmark_id}; request one first",
            )
        row = await uow.session.get(Priority, (cmd.benchmark_id, cmd.model_id))
        old = row.priority if row is not None else 0
        data = {"benchmark_id": cmd.benchmark_id, "model_id": cmd.model_id, "old": old, "priority": cmd.priority}
        if old == cmd.priority:
            return Outcome.accepted(cmd.benchmark_id, {**data, "changed": False})
        if row is None:
            row = Priority(benchmark_id=cmd.benchmark_id, model_id=cmd.model_id)
            uow.session.add(row)
        row.priority = cmd.priority
        uow.session.add(
            AuditEntry(
                benchmark_id=cmd.benchmark_id,
                kind="model",
                component_id=cmd.model_id,
                action="priority_changed",
                actor=cmd.actor,
                details={"old": old, "new": cmd.priority},
            )
        )
        uow.emit(
            AssociationPriorityChanged(
                actor=cmd.actor, benchmark_id=cmd.benchmark_id, model_id=cmd.model_id, old=old, new=cmd.priority
            )
        )
        await uow.commit()
        return Outcome.accepted(cmd.benchmark_id, {**data, "changed": True})


# --- associations -----------------------------------------------------------------------------


async def request_association(cmd: RequestAssociation, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await benchmark_row(uow, cmd.benchmark_id)
        component = await uow.session.get(Component, (cmd.kind, cmd.component_id))
        if benchmark is None or component is None:
            missing = f"benchmark {cmd.benchmark_id}" if benchmark is None else f"{cmd.kind} {cmd.component_id}"
            # Registration events may still be on their way; the caller may retry shortly.
            return Outcome.refused(
                "unavailable", f"{missing} is not known to the approvals service (yet); retry shortly"
            )
        if not _sees(benchmark, cmd.actor, cmd.is_admin):
            return _refused(domain.not_found("benchmark", cmd.benchmark_id))
        if not domain.may_see_component(component.facts(), cmd.actor, cmd.is_admin):
            return _refused(domain.not_found(cmd.kind, cmd.component_id))
        latest = await latest_entry(uow, cmd.benchmark_id, cmd.kind, cmd.component_id)
        try:
            domain.may_request(
                latest.status if latest else None, benchmark.facts(), component.facts(), cmd.actor, cmd.is_admin
            )
            if cmd.compatibility is not None:
                await check_report(uow, cmd.compatibility, benchmark, component)
        except domain.Refusal as refusal:
            return _refused(refusal)
        entry = AssociationEntry(
            benchmark_id=cmd.benchmark_id,
            kind=cmd.kind,
            component_id=cmd.component_id,
            status="PENDING",
            initiated_by=cmd.actor,
            compatibility=cmd.compatibility.model_dump(mode="json") if cmd.compatibility else None,
            created_at=utcnow(),
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
        status, why = await auto_approve(uow, benchmark, component, entry)
        await uow.commit()
        return Outcome.accepted(entry.id, {"status": status, "auto_approval": why})


async def decide_association(cmd: DecideAssociation, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await benchmark_row(uow, cmd.benchmark_id)
        component = await uow.session.get(Component, (cmd.kind, cmd.component_id))
        latest = await latest_entry(uow, cmd.benchmark_id, cmd.kind, cmd.component_id)
        if (hidden := _hidden_side(cmd, benchmark, component, latest)) is not None:
            return hidden
        assert benchmark is not None and component is not None
        if latest is None:
            return Outcome.refused(
                "not_found", f"no association of {cmd.kind} {cmd.component_id} with benchmark {cmd.benchmark_id}"
            )
        passed = trust.counted_passed(latest.compatibility)
        try:
            status = domain.decide_association(
                latest.status,
                latest.initiated_by,
                cmd.actor,
                benchmark.facts(),
                component.facts(),
                cmd.is_admin,
                cmd.approve,
                passed,
            )
        except domain.Refusal as refusal:
            return _refused(refusal)
        reason = cmd.reason
        if latest.status == "APPROVED" and not reason:
            reason = f"approval revoked by {cmd.actor}"  # a revocation always says what happened
        entry = await _append_decision(uow, latest, status, cmd.actor, cmd.actor, reason)
        await uow.commit()
        return Outcome.accepted(entry.id, {"status": status})


async def check_report(
    uow: UnitOfWork, report: CompatibilityReport, benchmark: BenchmarkApproval, component: Component
) -> None:
    """Refuse a report that must not count (``trust.check_report``): unsigned, not this
    association's, signed by an unknown, revoked or unqualified key, or with a bad signature."""
    key = await uow.session.get(SigningKey, report.key_id) if report.key_id else None
    trust.check_report(
        report,
        benchmark_id=benchmark.benchmark_id,
        kind=component.kind,
        component_id=component.component_id,
        committee=benchmark.owner,
        component_owner=component.owner,
        signer=key.facts() if key is not None else None,
    )


async def auto_approve(
    uow: UnitOfWork, benchmark: BenchmarkApproval, component: Component, request: AssociationEntry
) -> tuple[str, str]:
    """Approve ``request`` if the rules consent without a person; the resulting status and why."""
    policy = await uow.session.get(AutoApprovalPolicy, (request.benchmark_id, request.kind))
    mode, allowlist = (policy.mode, policy.allowlist) if policy else ("NEVER", [])
    passed = trust.counted_passed(request.compatibility)
    approve, why = domain.auto_approval(
        kind=request.kind,
        benchmark_owner=benchmark.owner,
        component_owner=component.owner,
        initiator=request.initiated_by,
        mode=mode,
        allowlist=allowlist,
        compatibility_passed=passed,
    )
    if not approve:
        return "PENDING", why
    try:  # the request passed these checks, but either side may have changed since
        domain.check_joinable(benchmark.facts(), component.facts())
    except domain.Refusal as refusal:
        return "PENDING", f"would be approved automatically, but {refusal.reason}"
    approver = domain.auto_approver(benchmark.owner, component.owner, mode)
    await _append_decision(uow, request, "APPROVED", approver, approver, why)
    return "APPROVED", why


async def _append_decision(
    uow: UnitOfWork, request: AssociationEntry, status: str, actor: str, decided_by: str, reason: str
) -> AssociationEntry:
    """Append the decision to the history (never overwrite) and emit it."""
    entry = AssociationEntry(
        benchmark_id=request.benchmark_id,
        kind=request.kind,
        component_id=request.component_id,
        status=status,
        initiated_by=request.initiated_by,
        decided_by=decided_by,
        reason=reason,
        compatibility=request.compatibility,
        created_at=utcnow(),
    )
    uow.session.add(entry)
    await uow.session.flush()
    common: dict[str, Any] = {
        "actor": actor,
        "association_id": entry.id,
        "benchmark_id": entry.benchmark_id,
        "kind": entry.kind,
        "component_id": entry.component_id,
        "reason": reason,
    }
    if status == "APPROVED":
        priority = await priority_of(uow, entry.benchmark_id, entry.kind, entry.component_id)
        uow.emit(AssociationApproved(**common, priority=priority))
    else:
        uow.emit(AssociationRejected(**common))
    return entry


async def priority_of(uow: UnitOfWork, benchmark_id: int, kind: str, component_id: int) -> int:
    if kind != "model":
        return 0  # priorities order models; every dataset runs them all
    row = await uow.session.get(Priority, (benchmark_id, component_id))
    return row.priority if row is not None else 0


async def benchmark_row(uow: UnitOfWork, benchmark_id: int) -> BenchmarkApproval | None:
    # Locks the row on PostgreSQL for the rest of the transaction (see the module docstring).
    return await uow.session.get(BenchmarkApproval, benchmark_id, with_for_update=True)


def _sees(benchmark: BenchmarkApproval, actor: str, is_admin: bool) -> bool:
    return domain.may_see_benchmark(benchmark.facts(), actor, is_admin)


def _hidden_side(
    cmd: DecideAssociation,
    benchmark: BenchmarkApproval | None,
    component: Component | None,
    latest: AssociationEntry | None,
) -> Outcome | None:
    """Not found, in the words used for a missing one, for the side the caller may not see; the
    parties of an existing association see both sides, whatever became of either since."""
    if (
        benchmark is not None
        and component is not None
        and latest is not None
        and domain.is_party(cmd.actor, benchmark.facts(), component.facts(), cmd.is_admin)
    ):
        return None
    if benchmark is None or not _sees(benchmark, cmd.actor, cmd.is_admin):
        return _refused(domain.not_found("benchmark", cmd.benchmark_id))
    if component is None or not domain.may_see_component(component.facts(), cmd.actor, cmd.is_admin):
        return _refused(domain.not_found(cmd.kind, cmd.component_id))
    return None


async def latest_entry(uow: UnitOfWork, benchmark_id: int, kind: str, component_id: int) -> AssociationEntry | None:
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
