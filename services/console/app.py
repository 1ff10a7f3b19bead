"""The console service: a read model of the site agents and their jobs for the admin console
(fed by job events, results and heartbeats through durable consumers, and by the registry's events
for who owns which model and benchmark), and the dead-letter desk."""

from __future__ import annotations

from typing import Annotated, Any

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsRouter, PullSub
from nats.js import JetStreamContext
from pydantic import Field

from services.console import deadletters, handlers
from services.console.store import TABLES, Base
from shared.commands import (
    DiscardDeadLetter,
    ListDeadLetters,
    ListHeldResults,
    ListJobs,
    ListSites,
    Outcome,
    RetryDeadLetter,
)
from shared.events import (
    BenchmarkSubmitted,
    JobCancelled,
    JobFailed,
    JobLogReleased,
    JobProgress,
    JobQueued,
    JobStarted,
    JobSucceeded,
    ModelRegistered,
    ResultReported,
    SiteHeartbeat,
)
from shared.messaging import consume
from shared.service import ServiceHost
from shared.settings import Settings
from shared.streams import HEARTBEATS, SITES

AnyJobEvent = Annotated[
    JobQueued | JobStarted | JobProgress | JobSucceeded | JobFailed | JobCancelled | JobLogReleased,
    Field(discriminator="type"),
]


def _durable(name: str, subject: str, stream: str) -> dict[str, Any]:
    """One consumer for a family of subjects: a job's transitions then arrive in the order the
    site published them (separate consumers per type could interleave them)."""
    return {
        "subject": subject,
        "stream": JStream(stream, declare=False),
        "durable": f"console-{name}",
        "pull_sub": PullSub(batch_size=16, timeout=1.0),
        "config": ConsumerConfig(ack_wait=60.0, max_ack_pending=256),
        "ack_policy": AckPolicy.MANUAL,
    }


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("console", settings, Base.metadata, TABLES)
    router = NatsRouter()

    def js() -> JetStreamContext:
        return host.broker.connection.jetstream()

    @router.subscriber(**_durable("jobs", "medperf.site.*.job.*", SITES.name))
    async def on_job_event(event: AnyJobEvent) -> None:
        if isinstance(event, JobProgress):
            return  # a job's state changes with its transitions; its progress is for the live feed
        await handlers.record_job_event(event, host.uow())

    @router.subscriber(**consume(host.name, ResultReported))
    async def on_result(event: ResultReported) -> None:
        await handlers.record_result(event, host.uow())

    # Who owns which model and benchmark, so that owners read the jobs of what they own.
    @router.subscriber(**consume(host.name, ModelRegistered))
    async def on_model(event: ModelRegistered) -> None:
        await handlers.record_owner(event, host.uow())

    @router.subscriber(**consume(host.name, BenchmarkSubmitted))
    async def on_benchmark(event: BenchmarkSubmitted) -> None:
        await handlers.record_owner(event, host.uow())

    @router.subscriber(**_durable("heartbeats", "medperf.heartbeat.*", HEARTBEATS.name))
    async def on_heartbeat(beat: SiteHeartbeat) -> None:
        await handlers.record_heartbeat(beat, host.uow())

    @host.answers(ListSites)
    async def sites(query: ListSites) -> Outcome:
        return await handlers.list_sites(query, host.uow())

    @host.answers(ListJobs)
    async def jobs(query: ListJobs) -> Outcome:
        return await handlers.list_jobs(query, host.uow())

    @host.answers(ListHeldResults)
    async def held(query: ListHeldResults) -> Outcome:
        return await handlers.held_results(query, host.uow())

    @host.answers(ListDeadLetters)
    async def dead_letters(query: ListDeadLetters) -> Outcome:
        return await deadletters.list_letters(query, js())

    @host.answers(RetryDeadLetter)
    async def retry(cmd: RetryDeadLetter) -> Outcome:
        return await deadletters.retry(cmd, js())

    @host.answers(DiscardDeadLetter)
    async def discard(cmd: DiscardDeadLetter) -> Outcome:
        return await deadletters.discard(cmd, js())

    host.include(router)
    return host
