"""Commands one site's agent answers: its data owner's consent for results and logs to leave the site."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from shared.commands.base import Command, Id, SiteName

# --- site agent commands --------------------------------------------------------------------------

#: Job ids in one release: a site holds a few results per model and dataset; more is a mistake.
MAX_RELEASE_IDS = 500


class SiteCommand(Command):
    """A command one site's agent answers, on ``medperf.cmd.site.<site>.<name>``: the site is in
    the subject, so only that site's agent may subscribe to it (shared/nats_config.py). The agent
    acts only for its own data owner, and not at all with ``MEDPERF_SITE_REMOTE_RELEASE=false``."""

    SERVICE: ClassVar[str] = "site"
    site: SiteName

    @classmethod
    def subject(cls) -> str:
        return cls.subject_at("*")

    @classmethod
    def subject_at(cls, site: str) -> str:
        return f"medperf.cmd.site.{site}.{cls.NAME}"

    def destination(self) -> str:
        return self.subject_at(self.site)

    def not_answering(self) -> str:
        return f"the site's agent at {self.site} is not answering; it acts when it is back online — retry then"


class ReleaseResults(SiteCommand):
    """The data owner's consent for held results to leave the site (``medperf result release``):
    the jobs named, or ``all`` held. All or none: a named job with nothing held refuses the lot
    (``conflict``). Answers ``data = {"site", "released": [{job_id, benchmark_id, model_id,
    dataset_id, metrics, partial}]}``; ``all`` with nothing held releases nothing."""

    NAME = "release_results"
    job_ids: list[Id] = Field(default_factory=list, max_length=MAX_RELEASE_IDS)
    all: bool = False

    @model_validator(mode="after")
    def _which(self) -> ReleaseResults:
        if self.all == bool(self.job_ids):
            raise ValueError('give either job_ids (a list of job ids) or "all": true')
        return self


class ReleaseLog(SiteCommand):
    """The data owner's consent for one failed job's log tail (it may quote patient data) to leave
    the site (``medperf job release-log``). Answers ``data = {"site", "job_id", "lines"}``: the
    tail itself goes out as the ``job.log_released`` event, to those who see the job."""

    NAME = "release_log"
    job_id: Id
