"""Events of the approvals service: benchmark and association decisions, and the compatibility reports
that vouch for an association."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.events.envelope import ApprovalMode, AssociationKind, Event, FailureKind, _finite

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
