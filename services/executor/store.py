"""The site agent's tables, in the site's own database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UtcDateTime, messaging_tables
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "site")


class PreparedDataset(Base):
    """A local dataset prepared for one benchmark. Paths and hashes stay here; the registry gets
    only hashes and statistics."""

    __tablename__ = "site_datasets"
    __table_args__ = (UniqueConstraint("benchmark_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    benchmark_id: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    prepared_path: Mapped[str] = mapped_column(Text)
    input_hash: Mapped[str] = mapped_column(String(64))
    prepared_hash: Mapped[str] = mapped_column(String(64))
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON)
    association: Mapped[str] = mapped_column(String(16), default="NONE")  # NONE/PENDING/APPROVED/REJECTED


class Job(Base):
    """One unit of work at this site (the rules of its life are in ``services.executor.domain``).

    ``key`` pins everything that determines the result (benchmark, model, dataset, container
    digests, dataset hash): the same key is not run twice unless a re-run is asked for, and a
    changed container or dataset is a new key."""

    __tablename__ = "site_jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # prepare / compatibility / run
    benchmark_id: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # none for prepare
    dataset_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # none before registration, or demo data
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    failure: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    partial: Mapped[bool] = mapped_column(default=False)
    container_digests: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    dataset_hash: Mapped[str] = mapped_column(String(64), default="")
    release: Mapped[str] = mapped_column(String(16), default="none")  # none / held / released
    detail: Mapped[str] = mapped_column(Text, default="")
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SiteState(Base):
    """One row: whether the site takes new jobs (drain mode for maintenance)."""

    __tablename__ = "site_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    draining: Mapped[bool] = mapped_column(default=False)
