"""Every request a service answers, one pydantic model per command or query.

Commands ask a service to change state; the service answers at once with an ``Outcome``
(accepted, or refused with a reason a user can act on) and records the change as events.
Queries read a service's own state; only the service that owns a table answers questions about it.
Both travel over core NATS request/reply on ``medperf.cmd.<service>.<name>``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.containers import ContainerSpec, HostedFile
from shared.events import (
    ApprovalMode,
    AssociationKind,
    CompatibilityReport,
    EntityKind,
    EntityState,
    MetricSpec,
    SharingPolicy,
    Statistics,
    _finite,
)
from shared.limits import check_statistics_size, rows_that_fit
from shared.medperf_format import MedPerfFormatError, MedPerfSource, to_spec
from shared.timestamps import Timestamp

#: Ids and counters are stored in 32-bit integer columns (PostgreSQL INTEGER); a larger number
#: can only be a mistake, so every command refuses it before it reaches a database.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
#: Rows in one answer of a leaderboard query: 100 rows by 200 sites stay well under NATS's 1 MB.
MAX_LEADERBOARD_ROWS = 100
#: A screenful: a row of a board shows every site's value, ~6 kB of JSON at two hundred sites.
DEFAULT_LEADERBOARD_ROWS = 25
#: A policy preview answers four boards at once: 4 x 25 rows by two hundred sites is ~600 kB.
MAX_PREVIEW_ROWS = 25
DEFAULT_PREVIEW_ROWS = 10

#: ``unavailable``: retrying can succeed (a service or the database is busy or restarting);
#: ``internal``: a fault of the service's own, which a retry would only repeat (its log says more);
#: ``too_large``: the request, the event it would record or the answer is past a limit (shared.limits).
RefusalCode = Literal[
    "invalid", "unauthenticated", "forbidden", "not_found", "conflict", "too_large", "unavailable", "internal"
]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    SERVICE: ClassVar[str]
    NAME: ClassVar[str]

    actor: str = Field(min_length=1, description="the authenticated user on whose behalf this is asked")
    is_admin: bool = False

    @classmethod
    def subject(cls) -> str:
        return f"medperf.cmd.{cls.SERVICE}.{cls.NAME}"

    def destination(self) -> str:
        """The subject this command is sent on: its type's (a site's command adds the site)."""
        return self.subject()

    def not_answering(self) -> str:
        """What the caller is told when no one answers (503): retrying can succeed."""
        return f"the {self.SERVICE} service did not answer; try again shortly"


class Outcome(BaseModel):
    """The answer to any command or query."""

    ok: bool
    id: int | None = None
    data: Any = None
    reason: str | None = None
    code: RefusalCode | None = None
    next_offset: int | None = Field(default=None, description="a page with more rows after it: ask from this offset")

    @classmethod
    def accepted(cls, id: int | None = None, data: Any = None, next_offset: int | None = None) -> Outcome:
        return cls(ok=True, id=id, data=data, next_offset=next_offset)

    @classmethod
    def page(cls, rows: list[Any], offset: int = 0, more: bool = False) -> Outcome:
        """As many of ``rows`` as one answer can carry (``shared.limits.rows_that_fit``), and where
        the next page starts when some were cut or ``more`` follow them."""
        kept = rows_that_fit(rows)
        follows = kept < len(rows) or more
        return cls.accepted(data=rows[:kept], next_offset=offset + kept if follows else None)

    @classmethod
    def refused(cls, code: RefusalCode, reason: str) -> Outcome:
        return cls(ok=False, code=code, reason=reason)


# --- registry commands ------------------------------------------------------------------------


class RegisterContainer(Command):
    SERVICE, NAME = "registry", "register_container"
    name: str = Field(min_length=1, max_length=128)
    spec: ContainerSpec | None = Field(default=None, description="the canonical spec; or give medperf instead")
    medperf: MedPerfSource | None = Field(
        default=None, description="MedPerf's documents (container_config.yaml or mlcube.yaml, ...), converted here"
    )
    state: EntityState = "DEVELOPMENT"

    @model_validator(mode="after")
    def _one_spec(self) -> RegisterContainer:
        if self.medperf is None:
            if self.spec is None:
                raise ValueError("give spec (the JSON container spec) or medperf (MedPerf's YAML documents)")
            return self
        try:
            converted = to_spec(self.medperf)
        except MedPerfFormatError as exc:
            raise ValueError(f"medperf: {exc}") from exc
        if self.spec is not None and self.spec != converted:
            raise ValueError("spec and medperf describe different containers; give one of them")
        object.__setattr__(self, "spec", converted)  # frozen; filled once, while validating
        return self

    @property
    def container_spec(self) -> ContainerSpec:
        assert self.spec is not None  # the validator fills it
        return self.spec


class RegisterModel(Command):
    SERVICE, NAME = "registry", "register_model"
    name: str = Field(min_length=1, max_length=128)
    container_id: Id
    state: EntityState = "DEVELOPMENT"


class SubmitBenchmark(Command):
    SERVICE, NAME = "registry", "submit_benchmark"
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    data_preparator_id: Id
    reference_model_id: Id
    metrics_container_id: Id
    demo_dataset: HostedFile
    metrics: list[MetricSpec] = Field(min_length=1)
    primary_metric: str
    state: EntityState = "DEVELOPMENT"


class RegisterDataset(Command):
    SERVICE, NAME = "registry", "register_dataset"
    name: str = Field(min_length=1, max_length=128)
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    data_preparator_id: Id
    input_hash: str
    prepared_hash: str
    statistics: Statistics
    state: EntityState = "DEVELOPMENT"

    _check_finite = field_validator("statistics")(_finite)
    _check_size = field_validator("statistics")(check_statistics_size)


class EditEntity(Command):
    """Change fields of an entity; which fields may change depends on the entity and its state
    (see ``services.registry.domain.EDITABLE``). ``state`` moves DEVELOPMENT -> OPERATION only."""

    SERVICE, NAME = "registry", "edit"
    entity: EntityKind
    id: Id
    changes: dict[str, Any] = Field(min_length=1)


class DeleteEntity(Command):
    """Hard delete; admins only."""

    SERVICE, NAME = "registry", "delete"
    entity: EntityKind
    id: Id
    reason: str = ""


class CreateUser(Command):
    """Admins only. A user exists before a token is issued to them."""

    SERVICE, NAME = "registry", "create_user"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,127}$")
    admin: bool = False


class IssueToken(Command):
    """Admins only. The token is in the answer once (``data.token``) and stored only as a hash."""

    SERVICE, NAME = "registry", "issue_token"
    user: str
    label: str = Field(default="", max_length=128)


class RevokeToken(Command):
    SERVICE, NAME = "registry", "revoke_token"
    token_id: Id


SiteName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class RegisterSiteKey(Command):
    """The site's owner (or an admin) registers the public key its agent signs results with.
    A site's owner is whoever registered its datasets or its first key. Registering the same key
    again is accepted (an agent does it at every start)."""

    SERVICE, NAME = "registry", "register_site_key"
    site: SiteName
    public_key: str = Field(min_length=1, max_length=64, description="raw Ed25519 public key, base64")


class RevokeSiteKey(Command):
    """The site's owner or an admin stops trusting a key; ``compromised_since`` also refuses results
    signed from that earlier time on (a leaked key)."""

    SERVICE, NAME = "registry", "revoke_site_key"
    site: SiteName
    key_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)
    compromised_since: Timestamp | None = None


class ListSiteKeys(Command):
    """A site's keys, active and revoked; public keys are public."""

    SERVICE, NAME = "registry", "site_keys"
    site: SiteName


class CheckSiteOwner(Command):
    """Is the caller this site's owner (who registered its datasets or its first key)? Asked by the
    ingress before it passes a data owner's consent on to the site's agent: accepted with the
    owners; ``forbidden`` for anyone else, admins included (consent is the data owner's);
    ``not_found`` for a site the caller cannot see (none of its datasets or keys is visible to them)."""

    SERVICE, NAME = "registry", "site_owner"
    site: SiteName


# --- registry queries -------------------------------------------------------------------------


class Authenticate(Command):
    """Asked by the ingress with ``actor='ingress'``: who holds the token with this sha256?
    Answers ``data = {"user": ..., "is_admin": ...}`` or refuses ``unauthenticated``."""

    SERVICE, NAME = "registry", "authenticate"
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class GetEntity(Command):
    """One entity by id; containers, models and benchmarks also by their unique name."""

    SERVICE, NAME = "registry", "get"
    entity: EntityKind
    id: Id | None = None
    name: str | None = None


class ListEntities(Command):
    """A page of entities, newest last; ``mine`` keeps the caller's own."""

    SERVICE, NAME = "registry", "list"
    entity: EntityKind
    mine: bool = False
    owner: str | None = None
    state: EntityState | None = None
    is_valid: bool | None = True
    approval_status: Literal["PENDING", "APPROVED", "REJECTED"] | None = None  # benchmarks only
    name_contains: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class GetRelations(Command):
    """What the caller owns: the ids of their benchmarks, models, datasets and containers, and the
    sites they own (those of their datasets and keys, as for ``RegisterSiteKey``). The live feed
    shows a non-admin the events about these. Answers ``data = {"benchmarks": [...], ...}``."""

    SERVICE, NAME = "registry", "relations"


# --- approvals commands -----------------------------------------------------------------------


class DecideBenchmark(Command):
    SERVICE, NAME = "approvals", "decide_benchmark"
    benchmark_id: Id
    approve: bool
    reason: str = ""


class RequestAssociation(Command):
    SERVICE, NAME = "approvals", "request_association"
    benchmark_id: Id
    kind: AssociationKind
    component_id: Id
    compatibility: CompatibilityReport | None = None


class DecideAssociation(Command):
    SERVICE, NAME = "approvals", "decide_association"
    benchmark_id: Id
    kind: AssociationKind
    component_id: Id
    approve: bool
    reason: str = ""


class SetAutoApproval(Command):
    """Benchmark owner or admin: how requests of ``kind`` are approved without a person deciding.
    Same-owner requests are always approved; a failed compatibility test never is."""

    SERVICE, NAME = "approvals", "set_auto_approval"
    benchmark_id: Id
    kind: AssociationKind
    mode: ApprovalMode
    allowlist: list[str] = Field(default_factory=list, description="users, for mode ALLOWLIST")


class SetPriority(Command):
    """Benchmark owner or admin: executors run higher priority models first."""

    SERVICE, NAME = "approvals", "set_priority"
    benchmark_id: Id
    model_id: Id
    priority: int = Field(ge=-1000, le=1000)


class ListAssociations(Command):
    """The latest entry per (benchmark, kind, component); ``involving_me`` keeps those where the
    caller owns the benchmark or the component."""

    SERVICE, NAME = "approvals", "list_associations"
    benchmark_id: Id | None = None
    kind: AssociationKind | None = None
    component_id: Id | None = None
    status: Literal["PENDING", "APPROVED", "REJECTED"] | None = None
    involving_me: bool = False
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class AuditTrail(Command):
    """Every decision about one benchmark, dataset or model: who, when, what, why; oldest first."""

    SERVICE, NAME = "approvals", "audit_trail"
    entity: Literal["benchmark", "dataset", "model"]
    id: Id


# --- aggregator queries -----------------------------------------------------------------------


class GetLeaderboard(Command):
    """The board as the asking user may see it under the benchmark's sharing policy."""

    SERVICE, NAME = "aggregator", "leaderboard"
    benchmark_id: Id
    # A page of rows: a thousand models by two hundred sites is too much for one answer.
    limit: int = Field(default=DEFAULT_LEADERBOARD_ROWS, ge=1, le=MAX_LEADERBOARD_ROWS)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class GetProvenance(Command):
    """Where one model's results on a benchmark came from: per site, the dataset, container digests,
    dataset hash, signing key and time, and who approved each association and when. The committee
    and admins see every cell, the model's owner its model's, a data owner its own datasets'."""

    SERVICE, NAME = "aggregator", "provenance"
    benchmark_id: Id
    model_id: Id


class SetSharingPolicy(Command):
    """The committee (or an admin) sets what its benchmark shares; releasing an embargo is one."""

    SERVICE, NAME = "aggregator", "sharing_policy"
    benchmark_id: Id
    policy: SharingPolicy


class PreviewSharingPolicy(Command):
    """The committee (or an admin) sees what each audience would see of its board under ``policy``,
    side by side, before setting it; nothing is saved (``services.aggregator.preview``)."""

    SERVICE, NAME = "aggregator", "preview_sharing_policy"
    benchmark_id: Id
    policy: SharingPolicy
    # Four boards in one answer: a page of each, smaller than a leaderboard's to fit NATS's 1 MB.
    limit: int = Field(default=DEFAULT_PREVIEW_ROWS, ge=1, le=MAX_PREVIEW_ROWS)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


# --- console queries and commands ---------------------------------------------------------------


class ListSites(Command):
    """Admins only: every site agent heard of, its last heartbeat, its jobs, and whether it went silent."""

    SERVICE, NAME = "console", "sites"


class ListJobs(Command):
    """Jobs as the sites reported them, newest first, with why each failure happened: every job for
    admins; for others those of their sites, their models and their benchmarks, with log tails
    (which may quote patient data) only from their own sites."""

    SERVICE, NAME = "console", "jobs"
    site: str | None = Field(default=None, max_length=63)
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    benchmark_id: Id | None = None
    model_id: Id | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ListHeldResults(Command):
    """Results a site holds for its data owner to release: all for admins, a site owner's own otherwise."""

    SERVICE, NAME = "console", "held_results"


class ListDeadLetters(Command):
    """Admins only: the messages consumers gave up on, oldest first, with the reason."""

    SERVICE, NAME = "console", "dead_letters"
    limit: int = Field(default=100, ge=1, le=1000)


class RetryDeadLetter(Command):
    """Admins only: publish the parked message to its original subject again, then forget the letter.
    Safe: consumers that handled it already skip it by its event id."""

    SERVICE, NAME = "console", "retry_dead_letter"
    sequence: Id


class DiscardDeadLetter(Command):
    """Admins only: forget a parked message for good."""

    SERVICE, NAME = "console", "discard_dead_letter"
    sequence: Id


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
