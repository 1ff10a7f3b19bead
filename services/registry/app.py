"""The registry service: owns containers, models, benchmarks and datasets."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.registry import handlers
from services.registry.store import TABLES, Base
from shared.commands import (
    GetEntity,
    ListEntities,
    Outcome,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    SubmitBenchmark,
)
from shared.events import (
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    ContainerRegistered,
    DatasetRegistered,
    ModelRegistered,
)
from shared.messaging import consume
from shared.service import ServiceHost, answers
from shared.settings import Settings


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("registry", settings, Base.metadata, TABLES)
    router = NatsRouter()

    @router.subscriber(**answers(RegisterContainer))
    async def register_container(cmd: RegisterContainer) -> Outcome:
        return await handlers.register_container(cmd, host.uow())

    @router.subscriber(**answers(RegisterModel))
    async def register_model(cmd: RegisterModel) -> Outcome:
        return await handlers.register_model(cmd, host.uow())

    @router.subscriber(**answers(SubmitBenchmark))
    async def submit_benchmark(cmd: SubmitBenchmark) -> Outcome:
        return await handlers.submit_benchmark(cmd, host.uow())

    @router.subscriber(**answers(RegisterDataset))
    async def register_dataset(cmd: RegisterDataset) -> Outcome:
        return await handlers.register_dataset(cmd, host.uow())

    @router.subscriber(**answers(GetEntity))
    async def get_entity(query: GetEntity) -> Outcome:
        return await handlers.get_entity(query, host.uow())

    @router.subscriber(**answers(ListEntities))
    async def list_entities(query: ListEntities) -> Outcome:
        return await handlers.list_entities(query, host.uow())

    @router.subscriber(**consume(host.name, BenchmarkApproved))
    async def on_benchmark_approved(event: BenchmarkApproved) -> None:
        await handlers.record_benchmark_decision(event, host.uow())

    @router.subscriber(**consume(host.name, BenchmarkRejected))
    async def on_benchmark_rejected(event: BenchmarkRejected) -> None:
        await handlers.record_benchmark_decision(event, host.uow())

    host.include(router, publishes=(ContainerRegistered, ModelRegistered, BenchmarkSubmitted, DatasetRegistered))
    return host
