"""The registry's tables. Only the registry reads or writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UtcDateTime, messaging_tables
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "registry")


class _Entity:
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    is_valid: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str] = mapped_column(String(16), default="OPERATION")
    user_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Container(_Entity, Base):
    __tablename__ = "registry_containers"
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class Model(_Entity, Base):
    __tablename__ = "registry_models"
    name: Mapped[str] = mapped_column(String(128), unique=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("registry_containers.id"))


class Benchmark(_Entity, Base):
    __tablename__ = "registry_benchmarks"
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    data_preparator_id: Mapped[int] = mapped_column(ForeignKey("registry_containers.id"))
    reference_model_id: Mapped[int] = mapped_column(ForeignKey("registry_models.id"))
    metrics_container_id: Mapped[int] = mapped_column(ForeignKey("registry_containers.id"))
    demo_dataset: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    primary_metric: Mapped[str] = mapped_column(String(64))
    approval_status: Mapped[str] = mapped_column(String(16), default="PENDING")
    approved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Dataset(_Entity, Base):
    __tablename__ = "registry_datasets"
    name: Mapped[str] = mapped_column(String(128))
    site: Mapped[str] = mapped_column(String(64), index=True)
    data_preparator_id: Mapped[int] = mapped_column(ForeignKey("registry_containers.id"))
    input_hash: Mapped[str] = mapped_column(String(128))
    prepared_hash: Mapped[str] = mapped_column(String(128), unique=True)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


ENTITIES: dict[str, type[_Entity]] = {
    "container": Container,
    "model": Model,
    "benchmark": Benchmark,
    "dataset": Dataset,
}


def view(row: _Entity) -> dict[str, Any]:
    """The public JSON form of a row (ISO timestamps)."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:  # type: ignore[attr-defined]
        value = getattr(row, column.name)
        out[column.name] = value.isoformat() if isinstance(value, datetime) else value
    return out
