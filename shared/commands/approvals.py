"""Commands and queries the approvals service answers: decisions, association requests, auto-approval,
priorities and the audit trail."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.commands.base import MAX_ID, Command, Id
from shared.events import ApprovalMode, AssociationKind, CompatibilityReport

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
