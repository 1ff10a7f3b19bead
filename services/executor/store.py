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
    """One run of a model and the metrics container on one dataset, and its outcome.

    The key pins everything that determines the result, so the same run is never repeated and a
    changed container or dataset is a new job."""

    __tablename__ = "site_jobs"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    benchmark_id: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # succeeded / failed
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    container_digests: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    released: Mapped[bool] = mapped_column(default=False)
    detail: Mapped[str] = mapped_column(Text, default="")
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
