"""The approvals service: benchmark approvals, the association history and its policies."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.approvals import handlers, projections, queries
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
)
from shared.messaging import consume
from shared.service import ServiceHost
from shared.settings import Settings


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("approvals", settings, Base.metadata, TABLES)
    router = NatsRouter()
    auto_approve_from = tuple(getattr(settings, "auto_approve_benchmarks_from", []))

    # --- registry facts ---------------------------------------------------------------------

    @router.subscriber(**consume(host.name, BenchmarkSubmitted))
    async def on_benchmark_submitted(event: BenchmarkSubmitted) -> None:
        await projections.open_benchmark_approval(event, host.uow(), auto_approve_from)

    @router.subscriber(**consume(host.name, DatasetRegistered))
    async def on_dataset_registered(event: DatasetRegistered) -> None:
        await projections.record_component(event, host.uow())

    @router.subscriber(**consume(host.name, ModelRegistered))
    async def on_model_registered(event: ModelRegistered) -> None:
        await projections.record_component(event, host.uow())

    @router.subscriber(**consume(host.name, EntityEdited))
    async def on_entity_edited(event: EntityEdited) -> None:
        await projections.apply_registry_edit(event, host.uow())

    @router.subscriber(**consume(host.name, EntityDeleted))
    async def on_entity_deleted(event: EntityDeleted) -> None:
        await projections.apply_registry_edit(event, host.uow())

    # --- site reports -----------------------------------------------------------------------

    @router.subscriber(**consume(host.name, CompatibilityTested))
    async def on_compatibility_tested(event: CompatibilityTested) -> None:
        await handlers.attach_compatibility(event, host.uow())

    # --- commands and queries ---------------------------------------------------------------

    @router.subscriber(**host.answers(DecideBenchmark))
    async def decide_benchmark(cmd: DecideBenchmark) -> Outcome:
        return await handlers.decide_benchmark(cmd, host.uow())

    @router.subscriber(**host.answers(RequestAssociation))
    async def request_association(cmd: RequestAssociation) -> Outcome:
        return await handlers.request_association(cmd, host.uow())

    @router.subscriber(**host.answers(DecideAssociation))
    async def decide_association(cmd: DecideAssociation) -> Outcome:
        return await handlers.decide_association(cmd, host.uow())

    @router.subscriber(**host.answers(SetAutoApproval))
    async def set_auto_approval(cmd: SetAutoApproval) -> Outcome:
        return await handlers.set_auto_approval(cmd, host.uow())

    @router.subscriber(**host.answers(SetPriority))
    async def set_priority(cmd: SetPriority) -> Outcome:
        return await handlers.set_priority(cmd, host.uow())

    @router.subscriber(**host.answers(ListAssociations))
    async def list_associations(query: ListAssociations) -> Outcome:
        return await queries.list_associations(query, host.uow())

    @router.subscriber(**host.answers(AuditTrail))
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
