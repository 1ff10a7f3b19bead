"""Registry handlers for the life of an entity after registration: edits (including the move to
OPERATION) and admin deletes. ``domain.plan_edit`` decides what an edit may touch; the checks here
only gather the facts that the other rows hold and hand them to the domain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.handlers import RACE, benchmark_parts, may_see, views
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
    view,
)
from shared.commands import DeleteEntity, EditEntity, Outcome
from shared.containers import ContainerSpec
from shared.db import UnitOfWork
from shared.events import EntityDeleted, EntityEdited, FieldChange, MetricSpec


async def edit_entity(cmd: EditEntity, uow: UnitOfWork) -> Outcome:
    table = ENTITIES[cmd.entity]
    async with uow:
        s = uow.session
        row = await load(s, table, cmd.id)
        if row is None or not may_see(row, cmd.actor, cmd.is_admin):
            return Outcome.refused("not_found", f"no {cmd.entity} {cmd.id}")
        try:
            plan = domain.plan_edit(cmd.entity, view(row), cmd.changes, cmd.actor, cmd.is_admin)
            await _CHECKS[cmd.entity](s, row, plan)
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        for column, value in plan.columns.items():
            setattr(row, column, value)
        if isinstance(row, Container):
            await _follow_source(s, row.id, plan)
        uow.emit(
            EntityEdited(
                actor=cmd.actor,
                entity=cmd.entity,
                entity_id=row.id,
                changes={field: FieldChange(old=old, new=new) for field, (old, new) in plan.changes.items()},
            )
        )
        try:
            await uow.commit()
        except IntegrityError:  # a unique name or operational hash taken between our check and commit
            return Outcome.refused("conflict", RACE.format(what=" or ".join(sorted(plan.changes))))
        return Outcome.accepted(row.id, (await views(s, [row], cmd.actor, cmd.is_admin))[0])


async def _follow_source(s: AsyncSession, container_id: int, plan: domain.EditPlan) -> None:
    """The MedPerf documents a container came from: gone once its spec is edited (they would no
    longer describe it); a moved additional_files URL is written into them."""
    source = await s.get(ContainerSource, container_id)
    if source is None:
        return
    if "spec" in plan.changes:
        await s.delete(source)
    elif "additional_files" in plan.changes:
        files = plan.changes["additional_files"][1]
        source.documents = {k: v for k, v in source.documents.items() if k != "additional_files"} | (
            {"additional_files": files} if files else {}
        )


async def _unique_name(s: AsyncSession, kind: str, row: _Entity, plan: domain.EditPlan) -> None:
    if "name" in plan.columns and kind in domain.UNIQUE_NAMES:
        table: Any = ENTITIES[kind]
        name = plan.columns["name"]
        if await s.scalar(select(table.id).where(table.name == name, table.id != row.id)):
            raise domain.Refusal("conflict", f"name: a {kind} named {name!r} already exists; choose another name")


async def _check_container(s: AsyncSession, row: Any, plan: domain.EditPlan) -> None:
    await _unique_name(s, "container", row, plan)
    if "spec" in plan.columns:
        # Whoever runs this container in a role must still find the tasks of that role.
        models = await s.scalars(select(Model).where(Model.container_id == row.id))
        uses = [(f"model {m.id} ({m.name})", "model") for m in models]
        benchmarks = await s.scalars(
            select(Benchmark).where(
                or_(Benchmark.data_preparator_id == row.id, Benchmark.metrics_container_id == row.id)
            )
        )
        for b in benchmarks:
            if b.data_preparator_id == row.id:
                uses.append((f"benchmark {b.id} ({b.name})", "data_preparator"))
            if b.metrics_container_id == row.id:
                uses.append((f"benchmark {b.id} ({b.name})", "metrics"))
        domain.check_dependants_fit(ContainerSpec.model_validate(plan.columns["spec"]), uses)


async def _check_model(s: AsyncSession, row: Any, plan: domain.EditPlan) -> None:
    await _unique_name(s, "model", row, plan)
    if "container_id" in plan.columns:
        container = await load(s, Container, plan.columns["container_id"])
        if container is None:
            raise domain.Refusal("not_found", f"container_id: no container {plan.columns['container_id']}")
        # Benchmarks that use this model as their reference need the same task, so one check covers both.
        if missing := ContainerSpec.model_validate(container.spec).missing_tasks("model"):
            raise domain.Refusal(
                "invalid", f"container_id: container {container.id} lacks the task(s) {', '.join(missing)}"
            )


async def _check_benchmark(s: AsyncSession, row: Any, plan: domain.EditPlan) -> None:
    await _unique_name(s, "benchmark", row, plan)
    parts_changed = domain.BENCHMARK_PARTS & set(plan.columns)
    if not parts_changed and plan.new_state != "OPERATION":
        return
    after = {field: plan.columns.get(field, getattr(row, field)) for field in domain.BENCHMARK_PARTS}
    parts = await benchmark_parts(
        s, after["data_preparator_id"], after["reference_model_id"], after["metrics_container_id"]
    )
    if parts_changed:
        parts.check([MetricSpec.model_validate(m) for m in after["metrics"]], after["primary_metric"])
    if plan.new_state == "OPERATION":
        domain.check_benchmark_operational(parts.states())


async def _check_dataset(s: AsyncSession, row: Any, plan: domain.EditPlan) -> None:
    if plan.new_state == "OPERATION":
        holders = await s.scalars(
            select(Dataset.id).where(
                Dataset.prepared_hash == row.prepared_hash, Dataset.state == "OPERATION", Dataset.id != row.id
            )
        )
        domain.check_prepared_hash_free(list(holders))


_CHECKS: dict[str, Callable[[AsyncSession, Any, domain.EditPlan], Awaitable[None]]] = {
    "container": _check_container,
    "model": _check_model,
    "benchmark": _check_benchmark,
    "dataset": _check_dataset,
}


async def delete_entity(cmd: DeleteEntity, uow: UnitOfWork) -> Outcome:
    table = ENTITIES[cmd.entity]
    what = f"{cmd.entity} {cmd.id}"
    async with uow:
        s = uow.session
        try:
            domain.check_may_delete(cmd.is_admin)
            row = await load(s, table, cmd.id)
            if row is None:
                raise domain.Refusal("not_found", f"no {what}")
            domain.check_no_dependants(what, await _dependants(s, cmd.entity, cmd.id))
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        try:
            if cmd.entity == "dataset":
                await s.execute(delete(DatasetRequest).where(DatasetRequest.dataset_id == cmd.id))
            elif cmd.entity == "benchmark":
                await s.execute(delete(DatasetRequest).where(DatasetRequest.benchmark_id == cmd.id))
            elif cmd.entity == "container":
                await s.execute(delete(ContainerSource).where(ContainerSource.container_id == cmd.id))
            await s.delete(row)
            uow.emit(EntityDeleted(actor=cmd.actor, entity=cmd.entity, entity_id=cmd.id, reason=cmd.reason))
            await uow.commit()
        except IntegrityError:  # something started using it between our check and the commit
            return Outcome.refused("conflict", f"{what} gained a user while being deleted; ask again")
        return Outcome.accepted(cmd.id)


async def _dependants(s: AsyncSession, kind: str, entity_id: int) -> list[str]:
    """The rows that point at this entity (their foreign keys would break)."""
    found: list[str] = []
    if kind == "container":
        for m in await s.scalars(select(Model).where(Model.container_id == entity_id).order_by(Model.id)):
            found.append(f"model {m.id} ({m.name})")
        uses = or_(Benchmark.data_preparator_id == entity_id, Benchmark.metrics_container_id == entity_id)
        for b in await s.scalars(select(Benchmark).where(uses).order_by(Benchmark.id)):
            found.append(f"benchmark {b.id} ({b.name})")
        for d in await s.scalars(select(Dataset).where(Dataset.data_preparator_id == entity_id).order_by(Dataset.id)):
            found.append(f"dataset {d.id} ({d.name})")
    elif kind == "model":
        for b in await s.scalars(
            select(Benchmark).where(Benchmark.reference_model_id == entity_id).order_by(Benchmark.id)
        ):
            found.append(f"benchmark {b.id} ({b.name}) as its reference model")
    return found
