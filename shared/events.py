"""Every fact the system records, one pydantic model per event.

An event is immutable and self-describing: the common envelope (``Event``) says who did what,
when, and why (correlation), and each subclass adds its payload. Subjects are derived from the
event type and the owning service, so publishing never needs a lookup table.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from shared.containers import ContainerSpec, HostedFile
from shared.timestamps import Timestamp

AssociationKind = Literal["dataset", "model"]
EntityKind = Literal["container", "model", "benchmark", "dataset"]
EntityState = Literal["DEVELOPMENT", "OPERATION"]
ApprovalMode = Literal["NEVER", "ALWAYS", "ALLOWLIST"]
#: Whose fault a failure was, so that it reaches who can fix it: a model's owner, the benchmark's
#: committee (its metrics container, or its own registration: demo data, the data preparator's
#: hosted files), the site's data owner, or the site's infrastructure (engine, disk, network), the
#: only one retried.
FailureKind = Literal["model", "metrics", "benchmark", "data", "infrastructure"]


def utcnow() -> datetime:
    return datetime.now(UTC)


#: A dataset's statistics may nest, as MedPerf's do (``labels_count: {pneumonia: 3}``); they are
#: kept as written and shown flattened (``flatten_statistics``). Four levels at most, spelled out:
#: a recursive type would admit any depth, past what the ingress and consumers take.
_Leaf = float | int | str | bool | None
_Nested1 = _Leaf | list[_Leaf] | dict[str, _Leaf]
_Nested2 = _Leaf | list[_Nested1] | dict[str, _Nested1]
Statistic = _Leaf | list[_Nested2] | dict[str, _Nested2]
Statistics = dict[str, Statistic]
STATISTICS_DEPTH = 4


def _finite(values: dict[str, Any]) -> dict:
    # JSON has no NaN or infinity: pydantic would write null, and no consumer could read the event.
    for name, value in flatten_statistics(values).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}; only finite numbers can be recorded")
    return values


def flatten_statistics(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as one level of dotted keys: ``{"labels_count": {"a": 3}}`` is
    ``{"labels_count.a": 3}``; a list's items are numbered."""
    if isinstance(values, dict):
        items: Any = values.items()
    elif isinstance(values, list):
        items = enumerate(values)
    else:
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_statistics(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Service that owns the event's stream; the subject is ``medperf.<owner>.<type>``.
    OWNER: ClassVar[str]

    event_id: UUID = Field(default_factory=uuid4, description="unique; consumers dedupe on it")
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    actor: str = Field(min_length=1, description="user (or site agent) whose action this records")
    correlation_id: UUID | None = Field(default=None, description="the command or event that caused this one")

    @property
    def subject(self) -> str:
        return f"medperf.{self.OWNER}.{self.type}"

    @classmethod
    def subscription(cls) -> str:
        """The subject pattern that receives every event of this type."""
        return f"medperf.{cls.OWNER}.{cls.model_fields['type'].default}"


# --- registry ---------------------------------------------------------------------------------


class ContainerRegistered(Event):
    OWNER = "registry"
    type: Literal["container.registered"] = "container.registered"
    container_id: int
    name: str
    owner: str
    spec: ContainerSpec
    state: EntityState = "DEVELOPMENT"


class ModelRegistered(Event):
    OWNER = "registry"
    type: Literal["model.registered"] = "model.registered"
    model_id: int
    name: str
    owner: str
    container_id: int
    state: EntityState = "DEVELOPMENT"


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The metrics container's own spelling (MedPerf's are often ``Accuracy``, ``AUC``); a dotted
    # name reaches into nested results (``AUC.pneumonia``).
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    higher_is_better: bool = True
    aggregate: Literal["mean", "weighted_mean", "median", "min"] = Field(
        default="mean",
        description="how one model's values across sites combine: weighted_mean weighs each site by its "
        "dataset's 'cases' (or MedPerf's 'num_cases') statistic (a site that declares neither counts as one "
        "case); min is the worst site",
    )


class BenchmarkSubmitted(Event):
    OWNER = "registry"
    type: Literal["benchmark.submitted"] = "benchmark.submitted"
    benchmark_id: int
    name: str
    description: str
    owner: str
    data_preparator_id: int
    reference_model_id: int
    metrics_container_id: int
    demo_dataset: HostedFile
    metrics: list[MetricSpec]
    primary_metric: str
    state: EntityState = "DEVELOPMENT"


class DatasetRegistered(Event):
    OWNER = "registry"
    type: Literal["dataset.registered"] = "dataset.registered"
    dataset_id: int
    name: str
    owner: str
    site: str
    data_preparator_id: int
    input_hash: str
    prepared_hash: str
    statistics: Statistics
    state: EntityState = "DEVELOPMENT"

    _check_finite = field_validator("statistics")(_finite)


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    old: Any
    new: Any


class EntityEdited(Event):
    """An owner (or admin) changed fields of a registered entity; ``changes`` holds old and new values.
    A change of ``state`` (DEVELOPMENT -> OPERATION) or ``is_valid`` is an edit like any other."""

    OWNER = "registry"
    type: Literal["entity.edited"] = "entity.edited"
    entity: EntityKind
    entity_id: int
    changes: dict[str, FieldChange] = Field(min_length=1)


class EntityDeleted(Event):
    """An admin deleted an entity for good (hard delete)."""

    OWNER = "registry"
    type: Literal["entity.deleted"] = "entity.deleted"
    entity: EntityKind
    entity_id: int
    reason: str = ""


class UserCreated(Event):
    OWNER = "registry"
    type: Literal["user.created"] = "user.created"
    user: str
    is_admin: bool = False


class TokenIssued(Event):
    """An admin issued an API token; the event never carries the token, only its id."""

    OWNER = "registry"
    type: Literal["token.issued"] = "token.issued"
    user: str
    token_id: int
    label: str = ""


class TokenRevoked(Event):
    OWNER = "registry"
    type: Literal["token.revoked"] = "token.revoked"
    user: str
    token_id: int


class SiteKeyRegistered(Event):
    """A site's public signing key, registered by the site's owner (or an admin). Results signed
    with it are accepted until it is revoked."""

    OWNER = "registry"
    type: Literal["site_key.registered"] = "site_key.registered"
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    key_id: str
    public_key: str = Field(description="raw Ed25519 public key, base64")
    owner: str = Field(description="the site's owner, who registered it")


class SiteKeyRevoked(Event):
    """A site's key stopped being trusted. Results signed (``occurred_at``) from ``effective_from``
    on are refused; those signed before stay, and their provenance shows the revocation."""

    OWNER = "registry"
    type: Literal["site_key.revoked"] = "site_key.revoked"
    site: str
    key_id: str
    effective_from: datetime = Field(description="the revocation time, or earlier when the key leaked before")
    reason: str = ""


# --- approvals --------------------------------------------------------------------------------


class BenchmarkApproved(Event):
    OWNER = "approvals"
    type: Literal["benchmark.approved"] = "benchmark.approved"
    benchmark_id: int
    name: str
    reason: str = ""


class BenchmarkRejected(Event):
    OWNER = "approvals"
    type: Literal["benchmark.rejected"] = "benchmark.rejected"
    benchmark_id: int
    name: str
    reason: str = ""


class AutoApprovalChanged(Event):
    """A benchmark owner set how requests of one kind are approved without a person deciding."""

    OWNER = "approvals"
    type: Literal["auto_approval.changed"] = "auto_approval.changed"
    benchmark_id: int
    kind: AssociationKind
    mode: ApprovalMode
    allowlist: list[str] = Field(default_factory=list)


class AssociationPriorityChanged(Event):
    """Executors run a benchmark's models in descending priority."""

    OWNER = "approvals"
    type: Literal["association.priority_changed"] = "association.priority_changed"
    benchmark_id: int
    model_id: int
    old: int
    new: int


class CompatibilityReport(BaseModel):
    """Outcome of running the benchmark's workflow for an association, and who vouches for it.

    A report counts toward approval only when signed (``shared.signing.canonical_report``) by a
    registered, unrevoked key of the benchmark's committee or of the component's owner; the
    signature covers every field but itself, so a report cannot be lifted onto another request."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    passed: bool
    metrics: dict[str, float] = Field(default_factory=dict)
    detail: str = ""
    failure: FailureKind | None = Field(default=None, description="whose fault a failed test was")
    # What was tested, on what, by whom: set when the report is signed.
    report_id: UUID | None = Field(default=None, description="unique per test run")
    benchmark_id: int | None = None
    kind: AssociationKind | None = None
    component_id: int | None = None
    container_digests: dict[str, str] = Field(
        default_factory=dict, description="role (preparator, model, metrics) -> image digest tested"
    )
    data_hash: str | None = Field(
        default=None, max_length=128, description="sha256 of the demo tarball, or the prepared dataset's hash"
    )
    site: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the signer's site")
    key_id: str | None = Field(default=None, max_length=64)
    signed_at: datetime | None = None
    signature: str | None = Field(default=None, max_length=128, description="Ed25519, base64")

    _check_finite = field_validator("metrics")(_finite)

    @property
    def signed(self) -> bool:
        return self.key_id is not None and self.signature is not None


class AssociationRequested(Event):
    OWNER = "approvals"
    type: Literal["association.requested"] = "association.requested"
    association_id: int
    benchmark_id: int
    kind: AssociationKind
    component_id: int
    compatibility: CompatibilityReport | None = None


class AssociationApproved(Event):
    OWNER = "approvals"
    type: Literal["association.approved"] = "association.approved"
    association_id: int
    benchmark_id: int
    kind: AssociationKind
    component_id: int
    priority: int = 0
    reason: str = ""


class AssociationRejected(Event):
    OWNER = "approvals"
    type: Literal["association.rejected"] = "association.rejected"
    association_id: int
    benchmark_id: int
    kind: AssociationKind
    component_id: int
    reason: str = ""


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


Visibility = Literal["committee", "participants", "public"]
Granularity = Literal["aggregate", "sites", "matrix"]


class SharingPolicy(BaseModel):
    """What a benchmark's committee shares of its results, and with whom. The committee, a model's
    owner (its own model) and a data owner (its own site) always see theirs, whatever this says."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    visibility: Visibility = Field(
        default="participants", description="who else sees the board: the committee only, those associated, anyone"
    )
    granularity: Granularity = Field(
        default="matrix",
        description="aggregate: one number per model; sites: per-site values as 'Site A', 'Site B'; "
        "matrix: the full model x dataset table with names",
    )
    min_sites: int = Field(
        default=1, ge=1, le=10_000, description="a model's aggregate shows once this many sites reported"
    )
    min_cases: int = Field(
        default=0, ge=0, description="datasets with fewer cases (statistics 'cases') are left out of per-site views"
    )
    ranking: Literal["primary", "mean_rank"] = Field(
        default="primary",
        description="primary: by the primary metric combined across sites as declared; mean_rank: by each "
        "model's mean rank across the sites (ties: more sites, then the better primary value, then the older model)",
    )
    released: bool = Field(default=True, description="false: held (embargo) until the committee releases")
    embargo_until: Timestamp | None = Field(default=None, description="held until this time, then shown at once")

    def embargoed(self, now: datetime) -> bool:
        return not self.released or (self.embargo_until is not None and now < self.embargo_until)


class SharingPolicyChanged(Event):
    """A committee changed what its benchmark shares; it applies to what is shown from then on."""

    OWNER = "aggregator"
    type: Literal["sharing_policy.changed"] = "sharing_policy.changed"
    benchmark_id: int
    old: SharingPolicy
    new: SharingPolicy


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


AnyEvent = Annotated[
    ContainerRegistered
    | ModelRegistered
    | BenchmarkSubmitted
    | DatasetRegistered
    | EntityEdited
    | EntityDeleted
    | UserCreated
    | TokenIssued
    | TokenRevoked
    | SiteKeyRegistered
    | SiteKeyRevoked
    | BenchmarkApproved
    | BenchmarkRejected
    | AssociationRequested
    | AssociationApproved
    | AssociationRejected
    | AutoApprovalChanged
    | AssociationPriorityChanged
    | ResultReported
    | CompatibilityTested
    | SharingPolicyChanged
    | JobQueued
    | JobStarted
    | JobSucceeded
    | JobFailed
    | JobCancelled
    | JobLogReleased
    | JobProgress,
    Field(discriminator="type"),
]
EVENTS: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def parse_event(data: bytes | str) -> Event:
    """Decode any event from its JSON form; raises ``pydantic.ValidationError`` if malformed."""
    return EVENTS.validate_json(data)


class DeadLetter(BaseModel):
    """A message a consumer gave up on, parked on ``medperf.deadletter.<service>`` for the console."""

    service: str
    consumer: str
    subject: str
    reason: str
    deliveries: int
    payload: str = Field(description="the original body, as text (truncated to 64 KiB)")
    stream_sequence: int | None = None
    dead_lettered_at: datetime = Field(default_factory=utcnow)
