"""The site agent's tables, in the site's own database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, MetaData, String, Text, UniqueConstraint
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
    association: Mapped[str] = mapped_column(String(16), default="NONE")  # NONE/PENDING/APPROVED/REJECTED/WITHDRAWN


class Withdrawal(Base):
    """`medperf dataset withdraw`, written on the site machine: the agent rejects the dataset's
    association (no new jobs) and records the outcome here. A table of its own, so that a site's
    existing database needs no new column."""

    __tablename__ = "site_withdrawals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(Integer, index=True)  # the registry's id
    status: Mapped[str] = mapped_column(String(16), default="requested")  # requested / done / failed
    detail: Mapped[str] = mapped_column(Text, default="")


class DatasetSubmission(Base):
    """A dataset handed to the agent by its data owner (`medperf dataset submit`), and how far it
    got. The CLI and the agent share this row: the CLI writes the request and the consent, the
    agent the progress. Only people with access to the site machine can write it."""

    __tablename__ = "site_submissions"
    __table_args__ = (UniqueConstraint("benchmark", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    benchmark: Mapped[str] = mapped_column(String(128))  # as the data owner named it: its name or id
    benchmark_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data_path: Mapped[str] = mapped_column(Text)
    labels_path: Mapped[str] = mapped_column(Text)
    # submitted / waiting (for the benchmark's approval) / preparing / prepared / registering /
    # requested / declined / failed
    status: Mapped[str] = mapped_column(String(16), default="submitted", index=True)
    consent: Mapped[str] = mapped_column(String(16), default="pending")  # pending / given / declined
    stages: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # stage -> running / done / failed
    detail: Mapped[str] = mapped_column(Text, default="")
    # What RegisterDataset sends, shown to the data owner before consent.
    data_preparator_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    input_hash: Mapped[str] = mapped_column(String(64), default="")
    prepared_hash: Mapped[str] = mapped_column(String(64), default="")
    prepared_path: Mapped[str] = mapped_column(Text, default="")
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    association: Mapped[str] = mapped_column(String(16), default="NONE")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class SubmissionProgress(Base):
    """The running stage of a submission, as ``medperf dataset submit`` shows it: bytes hashed of
    how many, the preparator's report's last lines verbatim (per-case output: this table, like the
    whole database, stays on the site machine). A table of its own, so that a site's existing
    database needs no new column."""

    __tablename__ = "site_submission_progress"
    submission_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    stage: Mapped[str] = mapped_column(String(32), default="")
    done: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # bytes: past 2**31
    total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lines: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


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
