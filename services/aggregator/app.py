"""The aggregator service: turns result events into leaderboards, shared as each committee decides."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.aggregator import handlers, provenance
from services.aggregator.boards import Boards
from services.aggregator.store import TABLES, Base
from shared.commands import GetLeaderboard, GetProvenance, Outcome, SetSharingPolicy
from shared.events import ResultReported, SharingPolicyChanged
from shared.messaging import consume
from shared.service import ServiceHost
from shared.settings import Settings

#: Results arrive by the thousand: pulled up to 256 at a time, and committed a batch per transaction.
RESULT_BATCH = 256


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("aggregator", settings, Base.metadata, TABLES)
    router = NatsRouter()
    boards = Boards()

    @router.subscriber(**consume(host.name, ResultReported, batch_size=RESULT_BATCH))
    async def on_results_reported(deliveries: list[tuple[str, bytes]]) -> dict[int, Exception]:
        return await handlers.record_results(deliveries, host.uow())

    for event_type, project in handlers.PROJECTIONS.items():
        if event_type is not ResultReported and event_type is not SharingPolicyChanged:  # ours: see handlers
            host.projects(router, event_type, project)

    @router.subscriber(**host.answers(GetLeaderboard))
    async def leaderboard(query: GetLeaderboard) -> Outcome:
        return await handlers.get_leaderboard(query, host.uow(), boards)

    @router.subscriber(**host.answers(GetProvenance))
    async def get_provenance(query: GetProvenance) -> Outcome:
        return await provenance.get_provenance(query, host.uow())

    @router.subscriber(**host.answers(SetSharingPolicy))
    async def sharing_policy(cmd: SetSharingPolicy) -> Outcome:
        return await handlers.set_sharing_policy(cmd, host.uow())

    host.include(router, publishes=(SharingPolicyChanged,))
    return host
