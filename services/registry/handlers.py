"""Registry handlers: each takes one command or event and a unit of work."""

from __future__ import annotations

from sqlalchemy import func, select

from services.registry import domain
from services.registry.store import ENTITIES, Benchmark, Container, Dataset, Model, view
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
from shared.db import UnitOfWork
from shared.events import (
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    ContainerRegistered,
    DatasetRegistered,
    ModelRegistered,
    utcnow,
)
from shared.messaging import PermanentFailure


async def register_container(cmd: RegisterContainer, uow: UnitOfWork) -> Outcome:
    async with uow:
        if await uow.session.scalar(select(Container.id).where(Container.name == cmd.name)):
            return Outcome.refused("conflict", f"a container named {cmd.name!r} already exists; choose another name")
        row = Container(name=cmd.name, owner=cmd.actor, spec=cmd.spec.model_dump(mode="json"))
        uow.session.add(row)
        await uow.session.flush()
        uow.emit(
            ContainerRegistered(actor=cmd.actor, container_id=row.id, name=row.name, owner=row.owner, spec=cmd.spec)
        )
        await uow.commit()
        return Outcome.accepted(row.id)


async def register_model(cmd: RegisterModel, uow: UnitOfWork) -> Outcome:
    async with uow:
        container = await uow.session.get(Container, cmd.container_id)
        if container is None:
            return Outcome.refused("not_found", f"container_id: no container {cmd.container_id}; register it first")
        if missing := ContainerSpec.model_validate(container.spec).missing_tasks("model"):
            return Outcome.refused("invalid", f"container_id: container {container.id} lacks the task(s) {missing}")
        if await uow.session.scalar(select(Model.id).where(Model.name == cmd.name)):
            return Outcome.refused("conflict", f"a model named {cmd.name!r} already exists; choose another name")
        row = Model(name=cmd.name, owner=cmd.actor, container_id=container.id)
        uow.session.add(row)
        await uow.session.flush()
        uow.emit(
            ModelRegistered(
                actor=cmd.actor, model_id=row.id, name=row.name, owner=row.owner, container_id=row.container_id
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
        preparator = await s.get(Container, cmd.data_preparator_id)
        reference = await s.get(Model, cmd.reference_model_id)
        evaluator = await s.get(Container, cmd.metrics_container_id)
        missing = [
            f"{field}: no {kind} {value}"
            for field, kind, value, row in (
                ("data_preparator_id", "container", cmd.data_preparator_id, preparator),
                ("reference_model_id", "model", cmd.reference_model_id, reference),
                ("metrics_container_id", "container", cmd.metrics_container_id, evaluator),
            )
            if row is None
        ]
        if missing:
            return Outcome.refused("not_found", "; ".join(missing))
        assert preparator and reference and evaluator
        reference_container = await s.get(Container, reference.container_id)
        assert reference_container is not None
        problems = domain.benchmark_problems(
            ContainerSpec.model_validate(preparator.spec),
            ContainerSpec.model_validate(reference_container.spec),
            ContainerSpec.model_validate(evaluator.spec),
            cmd.metrics,
            cmd.primary_metric,
        )
        if problems:
            return Outcome.refused("invalid", "; ".join(problems))
        row = Benchmark(
            name=cmd.name,
            owner=cmd.actor,
            description=cmd.description,
            data_preparator_id=preparator.id,
            reference_model_id=reference.id,
            metrics_container_id=evaluator.id,
            demo_dataset=cmd.demo_dataset.model_dump(mode="json"),
            metrics=[m.model_dump(mode="json") for m in cmd.metrics],
            primary_metric=cmd.primary_metric,
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
            )
        )
        await uow.commit()
        return Outcome.accepted(row.id)


async def register_dataset(cmd: RegisterDataset, uow: UnitOfWork) -> Outcome:
    async with uow:
        s = uow.session
        if await s.get(Container, cmd.data_preparator_id) is None:
            return Outcome.refused("not_found", f"data_preparator_id: no container {cmd.data_preparator_id}")
        existing = await s.scalar(select(Dataset).where(Dataset.prepared_hash == cmd.prepared_hash))
        if existing is not None:
            # A site agent that crashed after registering asks again: give it the same answer.
            if existing.owner == cmd.actor and existing.name == cmd.name and existing.site == cmd.site:
                return Outcome.accepted(existing.id)
            return Outcome.refused(
                "conflict", "prepared_hash: a dataset with these prepared contents is already registered"
            )
        row = Dataset(
            name=cmd.name,
            owner=cmd.actor,
            site=cmd.site,
            data_preparator_id=cmd.data_preparator_id,
            input_hash=cmd.input_hash,
            prepared_hash=cmd.prepared_hash,
            statistics=cmd.statistics,
        )
        s.add(row)
        await s.flush()
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
            )
        )
        await uow.commit()
        return Outcome.accepted(row.id)


async def get_entity(query: GetEntity, uow: UnitOfWork) -> Outcome:
    table = ENTITIES[query.entity]
    async with uow:
        if query.id is not None:
            row = await uow.session.get(table, query.id)
        elif query.name is not None and query.entity in ("container", "model", "benchmark"):
            row = await uow.session.scalar(select(table).where(table.name == query.name))  # type: ignore[attr-defined]
        else:
            return Outcome.refused("invalid", "give an id (or a name, for containers, models and benchmarks)")
        if row is None or not _visible(row, query.actor, query.is_admin):
            return Outcome.refused(
                "not_found", f"no {query.entity} {query.id if query.id is not None else query.name!r}"
            )
        return Outcome.accepted(row.id, _redacted(view(row), row, query.actor, query.is_admin))


async def list_entities(query: ListEntities, uow: UnitOfWork) -> Outcome:
    table = ENTITIES[query.entity]
    async with uow:
        rows = (
            await uow.session.scalars(select(table).order_by(table.id).offset(query.offset).limit(query.limit))
        ).all()
        visible = [
            _redacted(view(r), r, query.actor, query.is_admin) for r in rows if _visible(r, query.actor, query.is_admin)
        ]
        return Outcome.accepted(data=visible)


def _visible(row: object, actor: str, is_admin: bool) -> bool:
    if isinstance(row, Benchmark):
        return domain.may_see_benchmark(row.approval_status, row.owner, actor, is_admin)
    return True


def _redacted(data: dict, row: object, actor: str, is_admin: bool) -> dict:
    if isinstance(row, Dataset) and not domain.may_see_dataset_statistics(row.owner, actor, is_admin):
        data["statistics"] = None
    return data


async def record_benchmark_decision(event: BenchmarkApproved | BenchmarkRejected, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        row = await uow.session.get(Benchmark, event.benchmark_id)
        if row is None:
            raise PermanentFailure(f"benchmark {event.benchmark_id} is not registered here")
        row.approval_status = "APPROVED" if isinstance(event, BenchmarkApproved) else "REJECTED"
        row.approved_at = utcnow() if isinstance(event, BenchmarkApproved) else None
        await uow.commit()
