"""A site's executor agent: a long-running process at a hospital, wired to the federation."""

from __future__ import annotations

from faststream.nats import NatsRouter
from faststream.nats.annotations import NatsMessage

from services.executor.agent import SiteAgent
from services.executor.assets import AssetCache
from services.executor.consent import answer_consent
from services.executor.keys import KeyRegistration
from services.executor.runtime import ContainerRuntime, DockerRuntime
from services.executor.settings import SiteSettings
from services.executor.store import TABLES, Base
from services.executor.workflow import Workflow
from shared.commands import Command, SiteCommand
from shared.events import (
    AssociationApproved,
    AssociationRejected,
    AssociationRequested,
    BenchmarkApproved,
    CompatibilityTested,
    JobCancelled,
    JobFailed,
    JobProgress,
    JobQueued,
    JobStarted,
    JobSucceeded,
    ResultReported,
)
from shared.messaging import consume, still_working
from shared.service import ServiceHost
from shared.settings import Settings

# Container work (preparing data, a compatibility run) can outlast any fixed ack wait, so the
# handlers report progress (``still_working``) and the wait itself stays short: an agent killed
# mid-handling gets its message back within a minute of restarting, not an hour later.
ACK_WAIT = 30.0


def _own_subject(command: type[Command], site: str) -> str:
    """An agent answers its own site's commands only (the broker lets no agent subscribe to another's)."""
    if not issubclass(command, SiteCommand):
        raise TypeError(f"a site agent answers site commands only, not {command.__name__}")
    return command.subject_at(site)


def create_agent(settings: Settings, site: SiteSettings, runtime: ContainerRuntime | None = None) -> ServiceHost:
    # The site's database is its own, never the federation's.
    site_settings = settings.model_copy(update={"database_url": site.database()})
    # With credentials of its own the agent joins a federation whose streams exist; a site's user
    # may not create or change streams (shared/nats_config.py).
    host = ServiceHost(
        f"site-{site.name}",
        site_settings,
        Base.metadata,
        TABLES,
        declare_streams=not settings.nats_user,
        command_subject=lambda command: _own_subject(command, site.name),
    )
    cache = AssetCache(
        site.work_dir / "cache",
        config_dir=settings.state_dir,
        downloads=site.download_limits(),
        extraction=site.extraction_limits(),
    )
    workflow = Workflow(
        runtime, cache, site.work_dir, site.task_timeout, limits=site.task_limits(), pull_images=site.pull_images
    )

    async def connect_engine() -> None:
        if workflow.runtime is None:  # connect at start, so building the app (e.g. for docs) needs no engine
            workflow.runtime = DockerRuntime.from_env(site.container_limits())

    host.on_start(connect_engine)
    agent = SiteAgent(site, host.broker, host.uow, workflow, settings.request_timeout)
    keys = KeyRegistration(site, host.broker, settings.request_timeout)

    async def load_key() -> None:  # before the runner starts: releasing a result signs it
        agent.runner.key = await keys.start()

    def last_try(msg: NatsMessage) -> bool:
        # The delivery after which shared.messaging parks the event: a failure now is final.
        return msg.raw_message.metadata.num_delivered >= settings.max_deliveries

    answer_consent(host, site, host.uow)
    host.on_start(load_key)
    host.on_start(agent.runner.start)
    host.on_start(agent.intake.start)
    host.on_stop(agent.intake.stop)
    host.on_stop(agent.runner.stop)
    host.on_stop(keys.stop)
    router = NatsRouter()

    @router.subscriber(**consume(host.name, BenchmarkApproved, ack_wait=ACK_WAIT, user=settings.nats_user))
    async def on_benchmark_approved(event: BenchmarkApproved, msg: NatsMessage) -> None:
        async with still_working(msg, ACK_WAIT):
            await agent.on_benchmark_approved(event, last_try(msg))

    @router.subscriber(**consume(host.name, AssociationApproved, ack_wait=ACK_WAIT, user=settings.nats_user))
    async def on_association_approved(event: AssociationApproved, msg: NatsMessage) -> None:
        async with still_working(msg, ACK_WAIT):
            await agent.on_association_approved(event)

    @router.subscriber(**consume(host.name, AssociationRejected, ack_wait=ACK_WAIT, user=settings.nats_user))
    async def on_association_rejected(event: AssociationRejected) -> None:
        await agent.intake.on_association_rejected(event)

    @router.subscriber(**consume(host.name, AssociationRequested, ack_wait=ACK_WAIT, user=settings.nats_user))
    async def on_association_requested(event: AssociationRequested, msg: NatsMessage) -> None:
        async with still_working(msg, ACK_WAIT):
            await agent.on_association_requested(event, last_try(msg))

    host.include(
        router,
        publishes=(
            ResultReported,
            CompatibilityTested,
            JobQueued,
            JobStarted,
            JobProgress,
            JobSucceeded,
            JobFailed,
            JobCancelled,
        ),
    )
    return host
