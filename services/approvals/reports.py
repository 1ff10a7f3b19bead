"""Compatibility tests that sites report (``CompatibilityTested``): checked like a report attached to
a request (``trust.check_report``), then kept on the request they test."""

from __future__ import annotations

from services.approvals import domain
from services.approvals.handlers import auto_approve, benchmark_row, check_report, latest_entry
from services.approvals.store import AuditEntry, Component
from shared.db import UnitOfWork
from shared.events import CompatibilityTested
from shared.messaging import NotYet, PermanentFailure


async def attach_compatibility(event: CompatibilityTested, uow: UnitOfWork) -> None:
    """A site tested a request: keep its signed report on the request (the latest test counts, so
    the committee's own test supersedes one the model's owner attached) and, if the benchmark's
    policy already consents, approve it now. A test that arrives after the decision is kept in the
    audit trail, where the parties see it (e.g. the committee's test failing a model approved on
    its owner's report)."""
    async with uow:
        if not await uow.claim(event):
            return
        benchmark = await benchmark_row(uow, event.benchmark_id)
        component = await uow.session.get(Component, (event.kind, event.component_id))
        latest = await latest_entry(uow, event.benchmark_id, event.kind, event.component_id)
        if benchmark is None or component is None or latest is None or latest.status == "REJECTED":
            await uow.commit()  # withdrawn before the test finished: nothing to attach to
            return
        if event.report.site != event.site:
            raise PermanentFailure(f"site {event.site!r} published a report signed for site {event.report.site!r}")
        try:
            await check_report(uow, event.report, benchmark, component)
        except domain.Refusal as refusal:
            error = NotYet if refusal.code == "unavailable" else PermanentFailure
            raise error(f"compatibility report from site {event.site!r} refused: {refusal.reason}") from refusal
        report = event.report.model_dump(mode="json")
        pending = latest.status == "PENDING"
        if pending:
            latest.compatibility = report  # the request's attachment, not a decision
        uow.session.add(
            AuditEntry(
                benchmark_id=event.benchmark_id,
                kind=event.kind,
                component_id=event.component_id,
                action="compatibility_tested",
                actor=event.actor,
                status="PASSED" if event.report.passed else "FAILED",
                reason=event.report.detail if pending else f"after the {latest.status} decision: {event.report.detail}",
                details={"site": event.site, "association_id": latest.id, "report": report},
            )
        )
        if pending:
            await auto_approve(uow, benchmark, component, latest)
        await uow.commit()
