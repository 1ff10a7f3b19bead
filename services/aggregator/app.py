"""The aggregator service: turns result events into leaderboards."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.aggregator import handlers
from services.aggregator.store import TABLES, Base
from shared.commands import GetLeaderboard, Outcome
from shared.events import BenchmarkSubmitted, DatasetRegistered, ModelRegistered, ResultReported
from shared.messaging import consume
from shared.service import ServiceHost
from shared.settings import Settings


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("aggregator", settings, Base.metadata, TABLES)
    router = NatsRouter()

    @router.subscriber(**consume(host.name, BenchmarkSubmitted))
    async def on_benchmark_submitted(event: BenchmarkSubmitted) -> None:
        await handlers.record_benchmark(event, host.uow())

    @router.subscriber(**consume(host.name, ModelRegistered))
    async def on_model_registered(event: ModelRegistered) -> None:
        await handlers.record_model(event, host.uow())

    @router.subscriber(**consume(host.name, DatasetRegistered))
    async def on_dataset_registered(event: DatasetRegistered) -> None:
        await handlers.record_dataset(event, host.uow())

    @router.subscriber(**consume(host.name, ResultReported))
    async def on_result_reported(event: ResultReported) -> None:
        await handlers.record_result(event, host.uow())

    @router.subscriber(**host.answers(GetLeaderboard))
    async def leaderboard(query: GetLeaderboard) -> Outcome:
        return await handlers.get_leaderboard(query, host.uow())

    host.include(router)
    return host
