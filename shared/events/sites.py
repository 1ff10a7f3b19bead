"""Events a site agent publishes (results, compatibility tests, job transitions and progress), and its
heartbeat."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events.approvals import CompatibilityReport
from shared.events.envelope import AssociationKind, Event, FailureKind, _finite, utcnow

# --- sites (executor agents) ------------------------------------------------------------------


class SiteEvent(Event):
    """Events published by a site agent carry the site in their subject, so that a site's
    credentials can be limited to its own subjects."""

    OWNER = "site"
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")

    @property
    def subject(self) -> str:
        return f"medperf.site.{self.site}.{self.type}"

    @classmethod
    def subscription(cls) -> str:
        return f"medperf.site.*.{cls.model_fields['type'].default}"


class ResultReported(SiteEvent):
    """Metrics of one model on one dataset. Only aggregate metrics; never cases or predictions."""

    type: Literal["result.reported"] = "result.reported"
    benchmark_id: int
    model_id: int
    dataset_id: int
    metrics: dict[str, float]
    container_digests: dict[str, str] = Field(description="role -> image digest that produced the result")
    dataset_hash: str
    partial: bool = False
    key_id: str | None = Field(
        default=None,
        max_length=64,
        description="the site's signing key (SiteKeyRegistered); the aggregator requires it",
    )
    signature: str | None = Field(
        default=None, max_length=128, description="Ed25519 over shared.signing.canonical_result, base64"
    )

    _check_finite = field_validator("metrics")(_finite)


class CompatibilityTested(SiteEvent):
    """A site ran the benchmark's reference workflow for a pending association request."""

    type: Literal["compatibility.tested"] = "compatibility.tested"
    benchmark_id: int
    kind: AssociationKind
    component_id: int
    report: CompatibilityReport


JobKind = Literal["prepare", "compatibility", "run"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobEvent(SiteEvent):
    """A transition of one unit of work at a site. Names what ran on what, never the data itself."""

    job_id: int = Field(ge=1)
    kind: JobKind = "run"
    benchmark_id: int
    model_id: int | None = None
    dataset_id: int | None = None


class JobQueued(JobEvent):
    type: Literal["job.queued"] = "job.queued"
    reason: str = Field(description="what triggered it: an approval, a re-run, a restart")


class JobStarted(JobEvent):
    type: Literal["job.started"] = "job.started"
    attempt: int = Field(ge=1)


class JobSucceeded(JobEvent):
    type: Literal["job.succeeded"] = "job.succeeded"
    partial: bool = Field(default=False, description="the model failed on some cases; metrics cover the rest")
    held: bool = Field(default=False, description="the result waits for the data owner to release it")


#: The longest log tail an event carries: the executor reads at most this many bytes of a log's end
#: (``services.executor.engine.TAIL_BYTES``), which decode to at most as many characters.
LOG_TAIL_CHARS = 4096


class JobFailed(JobEvent):
    type: Literal["job.failed"] = "job.failed"
    failure: FailureKind
    will_retry: bool = False
    reason: str
    log_tail: str = Field(default="", max_length=LOG_TAIL_CHARS)


class JobLogReleased(JobEvent):
    """The site's data owner let a failed job's log tail leave the site (it may quote patient data:
    it leaves only this way, or with every failure where the site says so)."""

    type: Literal["job.log_released"] = "job.log_released"
    log_tail: str = Field(max_length=LOG_TAIL_CHARS)


class JobCancelled(JobEvent):
    type: Literal["job.cancelled"] = "job.cancelled"


#: A progress stage's name: the workflow's (hash, prepare, sanity_check, statistics, verify, run,
#: evaluate), short and plain so that a console can show it as it comes.
ProgressStage = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
#: A report summary counts at most this many distinct status values; the rest count as "other".
REPORT_STATUS_KEYS = 16


class ReportSummary(BaseModel):
    """What a data preparator's report says, in aggregate. The report itself is keyed by case (subject
    id), i.e. per-case output that never leaves the site: only how many cases it lists and how many
    are at each status value do."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cases: int = Field(ge=0, description="cases the report lists so far")
    statuses: dict[Annotated[str, Field(max_length=32)], Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        max_length=REPORT_STATUS_KEYS,
        description="cases per value of the report's status column (numbers, or short labels)",
    )


class JobProgress(JobEvent):
    """How far a running job got: its stage, bytes or items done of a total, a preparator's report
    in aggregate. Rate-limited where it is published (``services.executor.progress``): one at each
    stage change and at the end of a counted stage, otherwise at most one per job every few seconds.
    Nothing acts on it; consumers that fold job state ignore it."""

    type: Literal["job.progress"] = "job.progress"
    stage: ProgressStage
    done: int | None = Field(default=None, ge=0, description="e.g. bytes hashed so far")
    total: int | None = Field(default=None, ge=0, description="e.g. bytes to hash in all")
    message: str = Field(default="", max_length=500)
    report: ReportSummary | None = None


class SiteHeartbeat(BaseModel):
    """A site agent's periodic "still here" with what it is doing. Not an event (no state changes):
    published straight to ``medperf.heartbeat.<site>``, where the stream keeps the latest only."""

    site: str
    at: datetime = Field(default_factory=utcnow)
    running: list[int] = Field(default_factory=list, description="ids of the jobs running now")
    queued: int = 0
    draining: bool = False
    every: float | None = Field(default=None, description="seconds until the next one; the console's silence rule")
