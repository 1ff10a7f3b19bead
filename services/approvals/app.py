"""The approvals service: benchmark approvals and the association history."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.approvals import handlers
from services.approvals.store import TABLES, Base
from shared.commands import DecideAssociation, DecideBenchmark, ListAssociations, Outcome, RequestAssociation
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
)
from shared.messaging import consume
from shared.service import ServiceHost, answers
from shared.settings import Settings


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("approvals", settings, Base.metadata, TABLES)
    router = NatsRouter()

    @router.subscriber(**consume(host.name, BenchmarkSubmitted))
    async def on_benchmark_submitted(event: BenchmarkSubmitted) -> None:
        await handlers.open_benchmark_approval(event, host.uow())

    @router.subscriber(**consume(host.name, DatasetRegistered))
    async def on_dataset_registered(event: DatasetRegistered) -> None:
        await handlers.record_component(event, host.uow())

    @router.subscriber(**consume(host.name, ModelRegistered))
    async def on_model_registered(event: ModelRegistered) -> None:
        await handlers.record_component(event, host.uow())

    @router.subscriber(**consume(host.name, CompatibilityTested))
    async def on_compatibility_tested(event: CompatibilityTested) -> None:
        await handlers.attach_compatibility(event, host.uow())

    @router.subscriber(**answers(DecideBenchmark))
    async def decide_benchmark(cmd: DecideBenchmark) -> Outcome:
        return await handlers.decide_benchmark(cmd, host.uow())

    @router.subscriber(**answers(RequestAssociation))
    async def request_association(cmd: RequestAssociation) -> Outcome:
        return await handlers.request_association(cmd, host.uow())

    @router.subscriber(**answers(DecideAssociation))
    async def decide_association(cmd: DecideAssociation) -> Outcome:
        return await handlers.decide_association(cmd, host.uow())

    @router.subscriber(**answers(ListAssociations))
    async def list_associations(query: ListAssociations) -> Outcome:
        return await handlers.list_associations(query, host.uow())

    host.include(
        router,
        publishes=(
            BenchmarkApproved,
            BenchmarkRejected,
            AssociationRequested,
            AssociationApproved,
            AssociationRejected,
        ),
    )
    return host
