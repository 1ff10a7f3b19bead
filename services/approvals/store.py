"""The approvals service's tables: its own projections of registry facts, and the decisions.

Decisions are never overwritten: association entries and audit rows are only ever appended. The
projections (benchmarks, components) and the current settings (auto-approval, priorities) are
kept current, and every change to the settings is also appended to the audit table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.approvals.domain import BenchmarkFacts, ComponentFacts
from services.approvals.trust import SignerFacts
from shared.db import UtcDateTime, messaging_tables
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "approvals")


class BenchmarkApproval(Base):
    """One per benchmark, opened when the registry reports the submission; holds the latest decision
    (the audit table holds them all)."""

    __tablename__ = "approvals_benchmarks"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))
    data_preparator_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="DEVELOPMENT")
    is_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: field -> ISO time of the registry edit it was last taken from (see ``domain.apply_edit``)
    edit_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")

    def facts(self) -> BenchmarkFacts:
        return BenchmarkFacts(
            id=self.benchmark_id,
            owner=self.owner,
            status=self.status,
            data_preparator_id=self.data_preparator_id,
            is_valid=self.is_valid,
            deleted=self.deleted,
        )


class Component(Base):
    """What approvals needs to know about a dataset or model to rule on its associations."""

    __tablename__ = "approvals_components"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    component_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(128))
    data_preparator_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="DEVELOPMENT")
    is_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    edit_versions: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)

    def facts(self) -> ComponentFacts:
        return ComponentFacts(
            kind=self.kind,
            id=self.component_id,
            owner=self.owner,
            state=self.state,
            is_valid=self.is_valid,
            deleted=self.deleted,
            data_preparator_id=self.data_preparator_id,
        )


class PendingEdit(Base):
    """An edit or deletion that arrived before the registration it applies to (each event type has
    its own consumer, so their order is not guaranteed); applied when the registration arrives."""

    __tablename__ = "approvals_pending_edits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(16))
    entity_id: Mapped[int] = mapped_column(Integer)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class AssociationEntry(Base):
    """Append-only history; the latest entry per (benchmark, kind, component) is authoritative."""

    __tablename__ = "approvals_associations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    benchmark_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    component_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    initiated_by: Mapped[str] = mapped_column(String(128))
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    compatibility: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class AutoApprovalPolicy(Base):
    """How requests of one kind join a benchmark without a person deciding; no row means NEVER."""

    __tablename__ = "approvals_auto_approval"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16), default="NEVER")
    allowlist: Mapped[list[str]] = mapped_column(JSON, default=list)


class Priority(Base):
    """A model's priority in a benchmark, kept apart from the history: changing it decides nothing."""

    __tablename__ = "approvals_priorities"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    priority: Mapped[int] = mapped_column(Integer, default=0)


class AuditEntry(Base):
    """Append-only record of everything that is not an association entry: benchmark submissions
    and decisions, auto-approval and priority changes, compatibility tests attached to a request."""

    __tablename__ = "approvals_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    benchmark_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    component_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SigningKey(Base):
    """A site's public signing key as the registry announced it, and who registered it: a
    compatibility report counts only when a key of the committee or the component's owner signed it.
    A revocation may arrive before its registration (another consumer): then the key is unknown."""

    __tablename__ = "approvals_signing_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128), default="")
    public_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_reason: Mapped[str] = mapped_column(String(500), default="")

    def facts(self) -> SignerFacts | None:
        if self.public_key is None:
            return None
        return SignerFacts(self.key_id, self.site, self.owner, self.public_key, self.revoked_at, self.revoked_reason)
