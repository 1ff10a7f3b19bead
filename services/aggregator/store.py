"""The aggregator's read model: what it knows of benchmarks, models and datasets, and the results."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UtcDateTime, messaging_tables
from shared.events import SharingPolicy


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "aggregator")


class BenchmarkInfo(Base):
    __tablename__ = "aggregator_benchmarks"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))
    reference_model_id: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    primary_metric: Mapped[str] = mapped_column(String(64))
    # Results scored by another metrics container than this one's current digest are stale.
    metrics_container_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: SharingPolicy().model_dump(mode="json"))


class Listing(Base):
    """Whether the registry shows a benchmark or model to everyone, from the approvals' decisions
    and the registry's edits: a benchmark once approved and while valid, a model while valid (no
    row: a benchmark not yet approved, a model never invalidated). Its owner and admins always see
    it. A table of its own, so that a database from before it gains it at start; the decisions then
    replay from the stream, but invalidations made before it are learnt only by a rebuild."""

    __tablename__ = "aggregator_listings"
    entity: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    approval_status: Mapped[str] = mapped_column(String(16), default="PENDING")
    is_valid: Mapped[bool] = mapped_column(default=True)


class Clock(Base):
    """One row: ``tick`` advances with every transaction that changes what a board shows (results
    carry the tick that wrote them); ``meta_tick`` is the last tick that changed anything else
    (names, participants, policies, digests). A process's in-memory boards compare the two with
    what they loaded: unchanged, a query reads nothing more; new results, only those are read.
    The row is locked by each writer until its commit, so ticks become visible in order."""

    __tablename__ = "aggregator_clock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tick: Mapped[int] = mapped_column(Integer)
    meta_tick: Mapped[int] = mapped_column(Integer)


class ContainerInfo(Base):
    __tablename__ = "aggregator_containers"
    container_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    image_digest: Mapped[str] = mapped_column(String(80))


class ModelInfo(Base):
    __tablename__ = "aggregator_models"
    model_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128))


class DatasetInfo(Base):
    __tablename__ = "aggregator_datasets"
    dataset_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    site: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128))
    cases: Mapped[int | None] = mapped_column(Integer, nullable=True)  # statistics["cases"], if declared


class Participant(Base):
    """An approved model or dataset of a benchmark: its owner is a participant."""

    __tablename__ = "aggregator_participants"
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    component_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # Provenance: who approved the association, and when (AssociationApproved's actor and time).
    approved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class SiteKeyInfo(Base):
    """A site's public signing key as the registry announced it; results are verified against it."""

    __tablename__ = "aggregator_site_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Results signed from ``effective_from`` on are refused; those before it stay, flagged.
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    effective_from: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_reason: Mapped[str] = mapped_column(String(500), default="")


class Result(Base):
    """The latest result of one model on one dataset for one benchmark."""

    __tablename__ = "aggregator_results"
    __table_args__ = (Index("aggregator_results_by_revision", "benchmark_id", "revision"),)
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dataset_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    site: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    container_digests: Mapped[dict[str, str]] = mapped_column(JSON)
    dataset_hash: Mapped[str] = mapped_column(String(128))
    partial: Mapped[bool] = mapped_column(default=False)
    event_id: Mapped[str] = mapped_column(String(36))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the site key that signed it
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revision: Mapped[int] = mapped_column(Integer)  # the clock's tick that wrote it


class FailedRun(Base):
    """The latest final failure (JobFailed, no retry left) of one model's run on one dataset for one
    benchmark. A result for the same cell outranks it on the boards, whichever came first; the
    failure's log tail is never stored (it may hold patient data), only whose fault and why."""

    __tablename__ = "aggregator_failed_runs"
    __table_args__ = (Index("aggregator_failed_runs_by_revision", "benchmark_id", "revision"),)
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dataset_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    site: Mapped[str] = mapped_column(String(64))
    fault: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(36))
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revision: Mapped[int] = mapped_column(Integer)  # the clock's tick that wrote it


@functools.cache
def upsert_newer(table: Table, time_column: str, dialect: str) -> Any:
    """INSERT .. ON CONFLICT DO UPDATE for one cell (benchmark, model, dataset), built once per
    table and dialect: a newer row (by ``time_column``) replaces the cell's, an older one arriving
    late does not."""
    statement = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(table)
    key = ("benchmark_id", "model_id", "dataset_id")
    return statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in key],
        set_={c.name: statement.excluded[c.name] for c in table.c if c.name not in key},
        where=table.c[time_column] < statement.excluded[time_column],
    )
