"""The approvals service's tables: its own projections of registry facts, and the decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UtcDateTime, messaging_tables
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "approvals")


class BenchmarkApproval(Base):
    """One per benchmark, opened when the registry reports the submission."""

    __tablename__ = "approvals_benchmarks"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))
    data_preparator_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="PENDING")
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class Component(Base):
    """What approvals needs to know about a dataset or model to rule on its associations."""

    __tablename__ = "approvals_components"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    component_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(128))
    data_preparator_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


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
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
