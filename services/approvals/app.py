"""The approvals service: benchmark approvals, the association history and its policies."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.approvals import handlers, projections, queries, reports
from services.approvals.store import TABLES, Base
from shared.commands import (
    AuditTrail,
    DecideAssociation,
    DecideBenchmark,
    ListAssociations,
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
    BenchmarkSubmitted,
    CompatibilityTested,
    DatasetRegistered,
    EntityDeleted,
    EntityEdited,
    ModelRegistered,
    SiteKeyRegistered,
    SiteKeyRevoked,
)
from shared.messaging import consume
from shared.service import ServiceHost
from shared.settings import Settings


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("approvals", settings, Base.metadata, TABLES, group_commands=True)
    router = NatsRouter()
    auto_approve_from = tuple(getattr(settings, "auto_approve_benchmarks_from", []))

    # --- registry facts ---------------------------------------------------------------------

    async def open_benchmark_approval(event: BenchmarkSubmitted, uow: UnitOfWork) -> None:
        await projections.open_benchmark_approval(event, uow, auto_approve_from)

    host.projects(router, BenchmarkSubmitted, open_benchmark_approval)
    host.projects(router, DatasetRegistered, projections.record_component)
    host.projects(router, ModelRegistered, projections.record_component)
    host.projects(router, EntityEdited, projections.apply_registry_edit)
    host.projects(router, EntityDeleted, projections.apply_registry_edit)
    host.projects(router, SiteKeyRegistered, projections.record_signing_key)
    host.projects(router, SiteKeyRevoked, projections.record_signing_key_revoked)

    # --- site reports -----------------------------------------------------------------------

    @router.subscriber(**consume(host.name, CompatibilityTested))
    async def on_compatibility_tested(event: CompatibilityTested) -> None:
        await reports.attach_compatibility(event, host.uow())

    # --- commands and queries ---------------------------------------------------------------

    @host.answers(DecideBenchmark)
    async def decide_benchmark(cmd: DecideBenchmark) -> Outcome:
        return await handlers.decide_benchmark(cmd, host.uow())

    @host.answers(RequestAssociation)
    async def request_association(cmd: RequestAssociation) -> Outcome:
        return await handlers.request_association(cmd, host.uow())

    @host.answers(DecideAssociation)
    async def decide_association(cmd: DecideAssociation) -> Outcome:
        return await handlers.decide_association(cmd, host.uow())

    @host.answers(SetAutoApproval)
    async def set_auto_approval(cmd: SetAutoApproval) -> Outcome:
        return await handlers.set_auto_approval(cmd, host.uow())

    @host.answers(SetPriority)
    async def set_priority(cmd: SetPriority) -> Outcome:
        return await handlers.set_priority(cmd, host.uow())

    @host.answers(ListAssociations)
    async def list_associations(query: ListAssociations) -> Outcome:
        return await queries.list_associations(query, host.uow())

    @host.answers(AuditTrail)
    async def audit_trail(query: AuditTrail) -> Outcome:
        return await queries.audit_trail(query, host.uow())

    host.include(
        router,
        publishes=(
            BenchmarkApproved,
            BenchmarkRejected,
            AssociationRequested,
            AssociationApproved,
            AssociationRejected,
            AutoApprovalChanged,
            AssociationPriorityChanged,
        ),
    )
    return host
