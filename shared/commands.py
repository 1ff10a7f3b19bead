"""Every request a service answers, one pydantic model per command or query.

Commands ask a service to change state; the service answers at once with an ``Outcome``
(accepted, or refused with a reason a user can act on) and records the change as events.
Queries read a service's own state; only the service that owns a table answers questions about it.
Both travel over core NATS request/reply on ``medperf.cmd.<service>.<name>``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.containers import ContainerSpec, HostedFile
from shared.events import AssociationKind, CompatibilityReport, MetricSpec, _finite

RefusalCode = Literal["invalid", "unauthenticated", "forbidden", "not_found", "conflict", "unavailable"]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    SERVICE: ClassVar[str]
    NAME: ClassVar[str]

    actor: str = Field(min_length=1, description="the authenticated user on whose behalf this is asked")
    is_admin: bool = False

    @classmethod
    def subject(cls) -> str:
        return f"medperf.cmd.{cls.SERVICE}.{cls.NAME}"


class Outcome(BaseModel):
    """The answer to any command or query."""

    ok: bool
    id: int | None = None
    data: Any = None
    reason: str | None = None
    code: RefusalCode | None = None

    @classmethod
    def accepted(cls, id: int | None = None, data: Any = None) -> Outcome:
        return cls(ok=True, id=id, data=data)

    @classmethod
    def refused(cls, code: RefusalCode, reason: str) -> Outcome:
        return cls(ok=False, code=code, reason=reason)


# --- registry commands ------------------------------------------------------------------------


class RegisterContainer(Command):
    SERVICE, NAME = "registry", "register_container"
    name: str = Field(min_length=1, max_length=128)
    spec: ContainerSpec


class RegisterModel(Command):
    SERVICE, NAME = "registry", "register_model"
    name: str = Field(min_length=1, max_length=128)
    container_id: int


class SubmitBenchmark(Command):
    SERVICE, NAME = "registry", "submit_benchmark"
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    data_preparator_id: int
    reference_model_id: int
    metrics_container_id: int
    demo_dataset: HostedFile
    metrics: list[MetricSpec] = Field(min_length=1)
    primary_metric: str


class RegisterDataset(Command):
    SERVICE, NAME = "registry", "register_dataset"
    name: str = Field(min_length=1, max_length=128)
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    data_preparator_id: int
    input_hash: str
    prepared_hash: str
    statistics: dict[str, float | int | str]

    _check_finite = field_validator("statistics")(_finite)


# --- registry queries -------------------------------------------------------------------------


class GetEntity(Command):
    """One entity by id; ``benchmark`` lookups also accept a unique name."""

    SERVICE, NAME = "registry", "get"
    entity: Literal["container", "model", "benchmark", "dataset"]
    id: int | None = None
    name: str | None = None


class ListEntities(Command):
    SERVICE, NAME = "registry", "list"
    entity: Literal["container", "model", "benchmark", "dataset"]
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


# --- approvals commands -----------------------------------------------------------------------


class DecideBenchmark(Command):
    SERVICE, NAME = "approvals", "decide_benchmark"
    benchmark_id: int
    approve: bool
    reason: str = ""


class RequestAssociation(Command):
    SERVICE, NAME = "approvals", "request_association"
    benchmark_id: int
    kind: AssociationKind
    component_id: int
    compatibility: CompatibilityReport | None = None


class DecideAssociation(Command):
    SERVICE, NAME = "approvals", "decide_association"
    benchmark_id: int
    kind: AssociationKind
    component_id: int
    approve: bool
    reason: str = ""


class ListAssociations(Command):
    SERVICE, NAME = "approvals", "list_associations"
    benchmark_id: int | None = None
    kind: AssociationKind | None = None
    status: Literal["PENDING", "APPROVED", "REJECTED"] | None = None


# --- aggregator queries -----------------------------------------------------------------------


class GetLeaderboard(Command):
    SERVICE, NAME = "aggregator", "leaderboard"
    benchmark_id: int
