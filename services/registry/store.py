"""The registry's tables. Only the registry reads or writes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    and_,
    or_,
    select,
    text,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.registry.domain import MAX_ID
from shared.db import UtcDateTime, messaging_tables
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = MetaData()


TABLES = messaging_tables(Base.metadata, "registry")


#: Other services key their projections by our ids, so a deleted row's id must never come back.
#: SQLite reuses the highest rowid after a delete unless the table is AUTOINCREMENT; PostgreSQL's
#: sequences never go back.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class _Entity:
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    is_valid: Mapped[bool] = mapped_column(default=True)
    state: Mapped[str] = mapped_column(String(16), default="DEVELOPMENT")
    user_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Container(_Entity, Base):
    __tablename__ = "registry_containers"
    __table_args__ = NEVER_REUSE_IDS
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class ContainerSource(Base):
    """The documents a container was registered from in MedPerf's format (``MedPerfSource``), as
    written, for ``medperf container view --original``. A table of its own, so databases made
    before it gain it at start; dropped when the spec is edited, since it would no longer describe it."""

    __tablename__ = "registry_container_sources"
    container_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    documents: Mapped[dict[str, Any]] = mapped_column(JSON)


class Model(_Entity, Base):
    __tablename__ = "registry_models"
    __table_args__ = NEVER_REUSE_IDS
    name: Mapped[str] = mapped_column(String(128), unique=True)
    container_id: Mapped[int] = mapped_column(ForeignKey("registry_containers.id"))


class Benchmark(_Entity, Base):
    __tablename__ = "registry_benchmarks"
    __table_args__ = NEVER_REUSE_IDS
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


_OPERATIONAL = text("state = 'OPERATION'")


class Dataset(_Entity, Base):
    __tablename__ = "registry_datasets"
    # Datasets in DEVELOPMENT may share prepared contents; operational ones may not. The domain
    # enforces that with a reason; this partial index only stops two concurrent requests both passing.
    __table_args__ = (
        Index(
            "registry_datasets_operational_prepared_hash",
            "prepared_hash",
            unique=True,
            sqlite_where=_OPERATIONAL,
            postgresql_where=_OPERATIONAL,
        ),
        NEVER_REUSE_IDS,
    )
    name: Mapped[str] = mapped_column(String(128))
    site: Mapped[str] = mapped_column(String(64), index=True)
    data_preparator_id: Mapped[int] = mapped_column(ForeignKey("registry_containers.id"))
    input_hash: Mapped[str] = mapped_column(String(128))
    prepared_hash: Mapped[str] = mapped_column(String(128), index=True)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DatasetRequest(Base):
    """Projection of the approvals service's ``AssociationRequested`` (kind dataset): the benchmarks a
    dataset asked to join. Their owners may read its statistics."""

    __tablename__ = "registry_dataset_requests"
    dataset_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)


class User(Base):
    __tablename__ = "registry_users"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Token(Base):
    """An API token, kept only as its sha256: the token itself is shown once, when issued."""

    __tablename__ = "registry_tokens"
    __table_args__ = NEVER_REUSE_IDS
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(ForeignKey("registry_users.name"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


ENTITIES: dict[str, type[_Entity]] = {
    "container": Container,
    "model": Model,
    "benchmark": Benchmark,
    "dataset": Dataset,
}


R = TypeVar("R")


async def load(s: AsyncSession, table: type[R], key: int | str) -> R | None:
    """The row with this primary key; an integer beyond 64 bits names none (SQLite cannot bind it)."""
    if isinstance(key, int) and not -MAX_ID <= key <= MAX_ID:
        return None
    return await s.get(table, key)


async def site_owners(session: AsyncSession, site: str) -> set[str]:
    """A site's owners: whoever registered its datasets or its keys."""
    datasets = await session.scalars(select(Dataset.owner).where(Dataset.site == site).distinct())
    keys = await session.scalars(select(SiteKey.owner).where(SiteKey.site == site).distinct())
    return set(datasets) | set(keys)


def visible(table: type[_Entity], actor: str, is_admin: bool) -> ColumnElement[bool]:
    """``domain.may_see`` as a WHERE clause, so that pages of a list are full pages."""
    if is_admin:
        return true()
    seen_by_all = table.is_valid.is_(True)
    if table is Benchmark:
        seen_by_all = and_(seen_by_all, Benchmark.approval_status == "APPROVED")
    return or_(table.owner == actor, seen_by_all)


def view(row: _Entity) -> dict[str, Any]:
    """The public JSON form of a row (ISO timestamps)."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:  # type: ignore[attr-defined]
        value = getattr(row, column.name)
        out[column.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


class SiteKey(Base):
    """A site's public signing key. Revoked keys stay, so that old results can still be checked."""

    __tablename__ = "registry_site_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    effective_from: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
