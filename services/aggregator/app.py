"""The aggregator service: turns result events into leaderboards, shared as each committee decides."""

from __future__ import annotations

from faststream.nats import NatsMessage, NatsRouter

from services.aggregator import handlers
from services.aggregator.store import TABLES, Base
from shared.commands import GetLeaderboard, Outcome, SetSharingPolicy
from shared.events import (
    AssociationApproved,
    AssociationRejected,
    BenchmarkSubmitted,
    DatasetRegistered,
    ModelRegistered,
    ResultReported,
    SharingPolicyChanged,
)
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
    async def on_result_reported(event: ResultReported, msg: NatsMessage) -> None:
        # The subject is what the broker checked against the publisher's credentials; the body is not.
        await handlers.record_result(event, host.uow(), subject=msg.raw_message.subject)

    @router.subscriber(**consume(host.name, AssociationApproved))
    async def on_association_approved(event: AssociationApproved) -> None:
        await handlers.record_association(event, host.uow())

    @router.subscriber(**consume(host.name, AssociationRejected))
    async def on_association_rejected(event: AssociationRejected) -> None:
        await handlers.record_association(event, host.uow())

    @router.subscriber(**host.answers(GetLeaderboard))
    async def leaderboard(query: GetLeaderboard) -> Outcome:
        return await handlers.get_leaderboard(query, host.uow())

    @router.subscriber(**host.answers(SetSharingPolicy))
    async def sharing_policy(cmd: SetSharingPolicy) -> Outcome:
        return await handlers.set_sharing_policy(cmd, host.uow())

    host.include(router, publishes=(SharingPolicyChanged,))
    return host
