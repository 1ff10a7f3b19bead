"""Registry handlers for registrations, reads and the facts it learns from other services; each takes
one command or event and a unit of work. Edits and deletes are in ``handlers_edit``, users and
tokens in ``handlers_users``."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.store import (
    ENTITIES,
    Benchmark,
    Container,
    ContainerSource,
    Dataset,
    DatasetRequest,
    Model,
    _Entity,
    load,
    site_owners,
    view,
    visible,
)
from shared.commands import (
    GetEntity,
    ListEntities,
    Outcome,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    SubmitBenchmark,
)
from shared.containers import ContainerSpec
from shared.db import UnitOfWork, execute_prebuilt, insert_unless_exists
from shared.events import (
    AssociationRequested,
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    ContainerRegistered,
    DatasetRegistered,
    ModelRegistered,
    utcnow,
)
from shared.messaging import PermanentFailure

RACE = "another request claimed the same {what} at the same moment; read it again and retry"


async def register_container(cmd: RegisterContainer, uow: UnitOfWork) -> Outcome:
    async with uow:
        # One prebuilt statement, no ORM flush: the most frequent registration, and SQLAlchemy's
        # work around a statement costs more than SQLite's. The unique name decides a conflict.
        spec = cmd.container_spec
        values = {"name": cmd.name, "owner": cmd.actor, "spec": spec.model_dump(mode="json"), "state": cmd.state}
        inserted = await execute_prebuilt(uow.session, _new_container(uow.session.bind.dialect.name), values)
        container_id = inserted.scalar()
        if container_id is None:
            return Outcome.refused("conflict", f"a container named {cmd.name!r} already exists; choose another name")
        if cmd.medperf is not None:
            # The documents stay here; the event carries the canonical spec only (consumers that
            # predate this field refuse unknown ones, and the documents would double its size).
            documents = cmd.medperf.model_dump(mode="json", exclude_none=True)
            uow.session.add(ContainerSource(container_id=container_id, documents=documents))
        uow.emit(
            ContainerRegistered(
                actor=cmd.actor,
                container_id=container_id,
                name=cmd.name,
                owner=cmd.actor,
                spec=spec,
                state=cmd.state,
            )
        )
        await uow.commit()
        return Outcome.accepted(container_id)


@functools.cache
def _new_container(dialect: str) -> Any:
    table = Container.__table__
    return insert_unless_exists(dialect, table, "name").returning(table.c.id)


async def register_model(cmd: RegisterModel, uow: UnitOfWork) -> Outcome:
    async with uow:
        container = await load(uow.session, Container, cmd.container_id)
        if container is None:
            return Outcome.refused("not_found", f"container_id: no container {cmd.container_id}; register it first")
        if missing := ContainerSpec.model_validate(container.spec).missing_tasks("model"):
            return Outcome.refused("invalid", f"container_id: container {container.id} lacks the task(s) {missing}")
        if await uow.session.scalar(select(Model.id).where(Model.name == cmd.name)):
            return Outcome.refused("conflict", f"a model named {cmd.name!r} already exists; choose another name")
        row = Model(name=cmd.name, owner=cmd.actor, container_id=container.id, state=cmd.state)
        uow.session.add(row)
        await uow.session.flush()
        uow.emit(
            ModelRegistered(
                actor=cmd.actor,
                model_id=row.id,
                name=row.name,
                owner=row.owner,
                container_id=row.container_id,
                state=cmd.state,
            )
        )
        await uow.commit()
        return Outcome.accepted(row.id)


async def submit_benchmark(cmd: SubmitBenchmark, uow: UnitOfWork) -> Outcome:
    async with uow:
        s = uow.session
        if await s.scalar(select(Benchmark.id).where(Benchmark.name == cmd.name)):
            return Outcome.refused("conflict", f"a benchmark named {cmd.name!r} already exists; choose another name")
        pending = await s.scalar(
            select(func.count()).where(Benchmark.owner == cmd.actor, Benchmark.approval_status == "PENDING")
        )
        if pending:
            return Outcome.refused(
                "conflict", "you already have a benchmark waiting for approval; wait for its decision"
            )
        try:
            parts = await benchmark_parts(s, cmd.data_preparator_id, cmd.reference_model_id, cmd.metrics_container_id)
            parts.check(cmd.metrics, cmd.primary_metric)
            if cmd.state == "OPERATION":
                domain.check_benchmark_operational(parts.states())
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        row = Benchmark(
            name=cmd.name,
            owner=cmd.actor,
            description=cmd.description,
            data_preparator_id=cmd.data_preparator_id,
            reference_model_id=cmd.reference_model_id,
            metrics_container_id=cmd.metrics_container_id,
            demo_dataset=cmd.demo_dataset.model_dump(mode="json"),
            metrics=[m.model_dump(mode="json") for m in cmd.metrics],
            primary_metric=cmd.primary_metric,
            state=cmd.state,
        )
        s.add(row)
        await s.flush()
        uow.emit(
            BenchmarkSubmitted(
                actor=cmd.actor,
                benchmark_id=row.id,
                name=row.name,
                description=row.description,
                owner=row.owner,
                data_preparator_id=row.data_preparator_id,
                reference_model_id=row.reference_model_id,
                metrics_container_id=row.metrics_container_id,
                demo_dataset=cmd.demo_dataset,
                metrics=cmd.metrics,
                primary_metric=cmd.primary_metric,
                state=cmd.state,
            )
        )
        await uow.commit()
        return Outcome.accepted(row.id)


class BenchmarkParts:
    """The rows a benchmark runs, loaded for the rules that span them."""

    def __init__(self, preparator: Container, reference: Model, reference_container: Container, metrics: Container):
        self.preparator = preparator
        self.reference = reference
        self.reference_container = reference_container
        self.metrics = metrics

    def check(self, metrics: Sequence[Any], primary_metric: str) -> None:
        problems = domain.benchmark_problems(
            ContainerSpec.model_validate(self.preparator.spec),
            ContainerSpec.model_validate(self.reference_container.spec),
            ContainerSpec.model_validate(self.metrics.spec),
            list(metrics),
            primary_metric,
        )
        if problems:
            raise domain.Refusal("invalid", "; ".join(problems))

    def states(self) -> dict[str, str]:
        return {
            f"data preparator container {self.preparator.id} ({self.preparator.name})": self.preparator.state,
            f"reference model {self.reference.id} ({self.reference.name})": self.reference.state,
            f"the reference model's container {self.reference_container.id} ({self.reference_container.name})": (
                self.reference_container.state
            ),
            f"metrics container {self.metrics.id} ({self.metrics.name})": self.metrics.state,
        }


async def benchmark_parts(
    s: AsyncSession, data_preparator_id: int, reference_model_id: int, metrics_container_id: int
) -> BenchmarkParts:
    preparator = await load(s, Container, data_preparator_id)
    reference = await load(s, Model, reference_model_id)
    evaluator = await load(s, Container, metrics_container_id)
    missing = [
        f"{field}: no {kind} {value}"
        for field, kind, value, row in (
            ("data_preparator_id", "container", data_preparator_id, preparator),
            ("reference_model_id", "model", reference_model_id, reference),
            ("metrics_container_id", "container", metrics_container_id, evaluator),
        )
        if row is None
    ]
    if missing:
        raise domain.Refusal("not_found", "; ".join(missing))
    assert preparator and reference and evaluator
    reference_container = await load(s, Container, reference.container_id)
    assert reference_container is not None  # a foreign key
    return BenchmarkParts(preparator, reference, reference_container, evaluator)


async def register_dataset(cmd: RegisterDataset, uow: UnitOfWork) -> Outcome:
    async with uow:
        s = uow.session
        if await load(s, Container, cmd.data_preparator_id) is None:
            return Outcome.refused("not_found", f"data_preparator_id: no container {cmd.data_preparator_id}")
        same_contents = (await s.scalars(select(Dataset).where(Dataset.prepared_hash == cmd.prepared_hash))).all()
        for existing in same_contents:
            if domain.is_repeated_registration(view(existing), cmd.actor, cmd.name, cmd.site):
                return Outcome.accepted(existing.id)
        try:
            domain.check_dataset_site(cmd.site, await site_owners(s, cmd.site), cmd.actor)
            domain.check_prepared_hash_free([d.id for d in same_contents if d.state == "OPERATION"])
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        row = Dataset(
            name=cmd.name,
            owner=cmd.actor,
            site=cmd.site,
            data_preparator_id=cmd.data_preparator_id,
            input_hash=cmd.input_hash,
            prepared_hash=cmd.prepared_hash,
            statistics=cmd.statistics,
            state=cmd.state,
        )
        s.add(row)
        try:
            await s.flush()
        except IntegrityError:  # the partial unique index: an operational twin committed meanwhile
            return Outcome.refused("conflict", RACE.format(what="prepared_hash"))
        uow.emit(
            DatasetRegistered(
                actor=cmd.actor,
                dataset_id=row.id,
                name=row.name,
                owner=row.owner,
                site=row.site,
                data_preparator_id=row.data_preparator_id,
                input_hash=row.input_hash,
                prepared_hash=row.prepared_hash,
                statistics=row.statistics,
                state=cmd.state,
            )
        )
        await uow.commit()
        return Outcome.accepted(row.id)


# --- reads --------------------------------------------------------------------------------------


async def get_entity(query: GetEntity, uow: UnitOfWork) -> Outcome:
    table = ENTITIES[query.entity]
    async with uow:
        if query.id is not None:
            row = await load(uow.session, table, query.id)
        elif query.name is not None and query.entity in ("container", "model", "benchmark"):
            row = await uow.session.scalar(select(table).where(table.name == query.name))  # type: ignore[attr-defined]
        else:
            return Outcome.refused("invalid", "give an id (or a name, for containers, models and benchmarks)")
        if row is None or not may_see(row, query.actor, query.is_admin):
            return Outcome.refused(
                "not_found", f"no {query.entity} {query.id if query.id is not None else query.name!r}"
            )
        found = (await views(uow.session, [row], query.actor, query.is_admin))[0]
        if isinstance(row, Container):
            source = await uow.session.get(ContainerSource, row.id)
            found["medperf"] = source.documents if source is not None else None
        return Outcome.accepted(row.id, found)


async def list_entities(query: ListEntities, uow: UnitOfWork) -> Outcome:
    try:
        domain.check_list_filters(query.entity, query.approval_status)
    except domain.Refusal as refusal:
        return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
    table: Any = ENTITIES[query.entity]
    statement = select(table).where(visible(table, query.actor, query.is_admin))
    if query.mine:
        statement = statement.where(table.owner == query.actor)
    if query.owner is not None:
        statement = statement.where(table.owner == query.owner)
    if query.state is not None:
        statement = statement.where(table.state == query.state)
    if query.is_valid is not None:
        statement = statement.where(table.is_valid.is_(query.is_valid))
    if query.approval_status is not None:
        statement = statement.where(Benchmark.approval_status == query.approval_status)
    if query.name_contains:
        statement = statement.where(func.lower(table.name).contains(query.name_contains.lower(), autoescape=True))
    async with uow:
        # One row more than asked for tells whether another page follows.
        page = statement.order_by(table.id).offset(min(query.offset, domain.MAX_ID)).limit(query.limit + 1)
        rows = (await uow.session.scalars(page)).all()
        found = await views(uow.session, rows[: query.limit], query.actor, query.is_admin)
        # A plain list of views: the agents, the demo and the ingress read it as such.
        return Outcome.page(found, query.offset, more=len(rows) > query.limit)


def may_see(row: _Entity, actor: str, is_admin: bool) -> bool:
    status = row.approval_status if isinstance(row, Benchmark) else None
    return domain.may_see(row.owner, row.is_valid, actor, is_admin, status)


async def views(s: AsyncSession, rows: Sequence[_Entity], actor: str, is_admin: bool) -> list[dict[str, Any]]:
    """The rows' public form, with a dataset's statistics hidden from those who may not see them."""
    out = [view(r) for r in rows]
    datasets = [(r, v) for r, v in zip(rows, out, strict=True) if isinstance(r, Dataset)]
    if not datasets or is_admin:
        return out
    ids = [r.id for r, _ in datasets]
    preparator_ids = {r.data_preparator_id for r, _ in datasets}
    containers = await s.execute(select(Container.id, Container.owner).where(Container.id.in_(preparator_ids)))
    preparator_owners = {container_id: owner for container_id, owner in containers}
    benchmark_owners: dict[int, set[str]] = defaultdict(set)
    requests = await s.execute(
        select(DatasetRequest.dataset_id, Benchmark.owner)
        .join(Benchmark, Benchmark.id == DatasetRequest.benchmark_id)
        .where(DatasetRequest.dataset_id.in_(ids))
    )
    for dataset_id, owner in requests:
        benchmark_owners[dataset_id].add(owner)
    for row, data in datasets:
        if not domain.may_see_dataset_statistics(
            row.owner, actor, is_admin, preparator_owners.get(row.data_preparator_id), benchmark_owners[row.id]
        ):
            data["statistics"] = None
    return out


# --- facts from other services ------------------------------------------------------------------


async def record_benchmark_decision(event: BenchmarkApproved | BenchmarkRejected, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        row = await load(uow.session, Benchmark, event.benchmark_id)
        if row is None:
            raise PermanentFailure(f"benchmark {event.benchmark_id} is not registered here")
        row.approval_status = "APPROVED" if isinstance(event, BenchmarkApproved) else "REJECTED"
        row.approved_at = utcnow() if isinstance(event, BenchmarkApproved) else None
        await uow.commit()


async def record_association_request(event: AssociationRequested, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        # A dataset may ask again after a rejection: the pair is recorded once.
        key = (event.component_id, event.benchmark_id)
        if event.kind == "dataset" and await uow.session.get(DatasetRequest, key) is None:
            uow.session.add(DatasetRequest(dataset_id=event.component_id, benchmark_id=event.benchmark_id))
        await uow.commit()
