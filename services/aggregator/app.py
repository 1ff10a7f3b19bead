"""The aggregator service: turns result events into leaderboards, shared as each committee decides."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.aggregator import failures, handlers, preview, provenance, trust
from services.aggregator.boards import Boards
from services.aggregator.store import TABLES, Base
from shared.commands import GetLeaderboard, GetProvenance, Outcome, PreviewSharingPolicy, SetSharingPolicy
from shared.events import JobFailed, ResultReported, SharingPolicyChanged
from shared.messaging import consume
from shared.service import PROJECTION_BATCH, PROJECTION_LINGER, ServiceHost
from shared.settings import Settings

#: Results arrive by the thousand: pulled up to 1,024 at a time, and committed a batch per
#: transaction (the aggregator's CPU per result, bench/aggregator.py: 250 us in batches of 256,
#: 190 us of 512, 160 us of 1,024).
RESULT_BATCH = 1024
#: Batches in hand at once (pull loops on the one durable consumer): while one batch is in its
#: transaction, the next one's signatures are checked in a worker process and a third is fetched
#: (bench/aggregator.py, 200,000 results: 2,945 results/s with two loops, 3,116-3,251 with three,
#: before verification moved to libsodium).
RESULT_PIPELINES = 3


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("aggregator", settings, Base.metadata, TABLES)
    router = NatsRouter()
    boards = Boards()

    signatures = trust.Signatures()
    host.on_stop(signatures.stop)

    async def on_results_reported(deliveries: list[tuple[str, bytes]]) -> dict[int, Exception]:
        return await handlers.record_results(deliveries, host.uow(), signatures)

    for _ in range(RESULT_PIPELINES):
        router.subscriber(**consume(host.name, ResultReported, batch_size=RESULT_BATCH))(on_results_reported)

    # Failed runs: the site in the subject is checked against the body's, as for results.
    @router.subscriber(**consume(host.name, JobFailed, batch_size=PROJECTION_BATCH, linger=PROJECTION_LINGER))
    async def on_job_failed(deliveries: list[tuple[str, bytes]]) -> dict[int, Exception]:
        return await failures.record_failures(deliveries, host.uow())

    for event_type, project in handlers.PROJECTIONS.items():
        if event_type not in (ResultReported, JobFailed, SharingPolicyChanged):  # subscribed above, or ours
            host.projects(router, event_type, project)

    @host.answers(GetLeaderboard)
    async def leaderboard(query: GetLeaderboard) -> bytes:  # an Outcome, encoded (see leaderboard_reply)
        return await handlers.leaderboard_reply(query, host.uow(), boards)

    @host.answers(GetProvenance)
    async def get_provenance(query: GetProvenance) -> Outcome:
        return await provenance.get_provenance(query, host.uow())

    @host.answers(SetSharingPolicy)
    async def sharing_policy(cmd: SetSharingPolicy) -> Outcome:
        return await handlers.set_sharing_policy(cmd, host.uow())

    @host.answers(PreviewSharingPolicy)
    async def preview_sharing_policy(query: PreviewSharingPolicy) -> Outcome:
        return await preview.preview_sharing_policy(query, host.uow(), boards)

    host.include(router, publishes=(SharingPolicyChanged,))
    return host
