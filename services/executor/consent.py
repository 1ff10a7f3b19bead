"""The data owner's consent given from afar: the ingress authenticates the site's owner and relays
their release of held results, or of a failed job's log tail, to this agent by request/reply on
the site's own subjects (``medperf.cmd.site.<site>.*``). The agent runs what the site's CLI runs
(``services.executor.operations``) and answers with what left the site.

Two checks stay here, whatever the ingress decided: the command must come on behalf of this site's
own data owner (``MEDPERF_SITE_OWNER``; the registry's idea of a site's owner is whoever registered
a dataset naming it), and the site must allow consent from afar at all
(``MEDPERF_SITE_REMOTE_RELEASE``; a site that wants it given only on its own machine says false).
"""

from __future__ import annotations

from collections.abc import Callable

from services.executor import operations
from services.executor.settings import SiteSettings
from services.executor.store import Job
from shared.commands import Outcome, ReleaseLog, ReleaseResults, SiteCommand
from shared.db import UnitOfWork
from shared.service import ServiceHost


def refusal(site: SiteSettings, command: SiteCommand) -> Outcome | None:
    """Why this agent will not act on ``command``, or None."""
    if command.site != site.name:  # its subject names this site, so only a misrouted one
        return Outcome.refused("not_found", f"this is the agent of site {site.name}, not of {command.site}")
    if command.actor != site.owner:
        return Outcome.refused(
            "forbidden", f"site {site.name}'s agent takes consent from its data owner ({site.owner}) only"
        )
    if not site.remote_release:
        verb = "medperf result release" if isinstance(command, ReleaseResults) else "medperf job release-log"
        return Outcome.refused(
            "forbidden",
            f"site {site.name} takes its data owner's consent only on its own machine "
            f"(MEDPERF_SITE_REMOTE_RELEASE=false): run `{verb}` there",
        )
    return None


def released(job: Job) -> dict:
    return {
        "job_id": job.id,
        "benchmark_id": job.benchmark_id,
        "model_id": job.model_id,
        "dataset_id": job.dataset_id,
        "metrics": job.metrics,
        "partial": job.partial,
    }


def not_possible(exc: operations.NotPossible) -> Outcome:
    return Outcome.refused("not_found" if isinstance(exc, operations.NoSuchJob) else "conflict", str(exc))


def answer_consent(host: ServiceHost, site: SiteSettings, uow: Callable[[], UnitOfWork]) -> None:
    """Answer ``ReleaseResults`` and ``ReleaseLog`` for ``site`` (``SITE_ANSWERS`` in shared/nats_config.py)."""

    @host.answers(ReleaseResults)
    async def release_results(cmd: ReleaseResults) -> Outcome:
        if (refused := refusal(site, cmd)) is not None:
            return refused
        try:
            jobs = await operations.release_results(uow(), site, None if cmd.all else list(cmd.job_ids))
        except operations.NotPossible as exc:
            return not_possible(exc)
        return Outcome.accepted(data={"site": site.name, "released": [released(job) for job in jobs]})

    @host.answers(ReleaseLog)
    async def release_log(cmd: ReleaseLog) -> Outcome:
        if (refused := refusal(site, cmd)) is not None:
            return refused
        try:
            tail = await operations.release_log(uow(), site, cmd.job_id)
        except operations.NotPossible as exc:
            return not_possible(exc)
        return Outcome.accepted(data={"site": site.name, "job_id": cmd.job_id, "lines": len(tail.splitlines())})
