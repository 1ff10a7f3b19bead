"""The console's read model: what it has heard of each site agent and each job, from events only."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.console.domain import JobState
from shared.db import UtcDateTime, messaging_tables


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "console")


class Site(Base):
    """One agent, as its heartbeats describe it (none yet: heard of only through job events)."""

    __tablename__ = "console_sites"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    every: Mapped[float | None] = mapped_column(Float, nullable=True)
    running: Mapped[list[int]] = mapped_column(JSON, default=list)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)


class Owner(Base):
    """Who registered each model and benchmark, from the registry's events (owners never change):
    a model's owner reads its jobs at every site, a benchmark's committee every job of it."""

    __tablename__ = "console_owners"
    entity: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(String(128), index=True)


class Job(Base):
    """A job at a site, folded from its ``medperf.site.<site>.job.*`` events."""

    __tablename__ = "console_jobs"
    site: Mapped[str] = mapped_column(String(63), primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    benchmark_id: Mapped[int] = mapped_column(Integer, index=True)
    model_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dataset_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(128))
    last_event_at: Mapped[datetime] = mapped_column(UtcDateTime())
    queued_reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    failure: Mapped[str | None] = mapped_column(String(16), nullable=True)
    failure_reason: Mapped[str] = mapped_column(Text, default="")
    will_retry: Mapped[bool] = mapped_column(Boolean, default=False)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    held: Mapped[bool] = mapped_column(Boolean, default=False)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)

    STATE_FIELDS = tuple(f.name for f in fields(JobState))

    def state(self) -> JobState:
        return JobState(**{f: getattr(self, f) for f in self.STATE_FIELDS})

    def update(self, state: JobState) -> None:
        for f in self.STATE_FIELDS:
            setattr(self, f, getattr(state, f))

    def view(self) -> dict:
        """The job as the console shows it. A log tail here left its site with the data owner's
        consent (the site shares tails, or its owner released this one); a failed job without one
        says its tail was kept at the site."""
        view = {
            "site": self.site,
            "job_id": self.job_id,
            **{f: getattr(self, f) for f in self.STATE_FIELDS if f != "last_event_at"},
            "last_event_at": self.last_event_at.isoformat(),
        }
        view["log_tail_kept_at_site"] = self.status == "failed" and not self.log_tail
        return view
