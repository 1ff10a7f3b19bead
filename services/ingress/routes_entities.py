"""Routes for the registry's entities: containers, models, benchmarks, datasets.

Each entity gets the same six routes (create, list, list mine, read, edit, delete); the audit trail
of benchmarks, datasets and models comes from the approvals service.
"""

# No ``from __future__ import annotations``: FastAPI reads the body and filter models from the
# endpoint signatures, and these models are built per entity inside a loop, so the annotations
# must be evaluated where the closure can see them.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from services.ingress.gateway import (
    ERRORS,
    INT32_MAX,
    Context,
    authorized,
    body_of,
    created,
    fields_of,
    paged,
    query_of,
)
from services.ingress.permissions import ENTITY_PATHS
from shared.commands import (
    AuditTrail,
    Command,
    DeleteEntity,
    EditEntity,
    GetEntity,
    ListEntities,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    SubmitBenchmark,
)

router = APIRouter(responses=ERRORS)

EntityId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the entity's id")]
CREATE: dict[str, type[Command]] = {
    "container": RegisterContainer,
    "model": RegisterModel,
    "benchmark": SubmitBenchmark,
    "dataset": RegisterDataset,
}
EntityFilters = query_of(ListEntities, exclude=("entity",), name="EntityFilters")
MyEntityFilters = query_of(ListEntities, exclude=("entity", "mine"), name="MyEntityFilters")
EntityChanges = body_of(EditEntity, exclude=("entity", "id"), name="EntityChanges")
DeleteReason = query_of(DeleteEntity, exclude=("entity", "id"), name="DeleteReason")


def _add_routes(entity: str, plural: str) -> None:
    tag = plural
    body_model = body_of(CREATE[entity], name=f"{CREATE[entity].__name__}Body")

    async def create(body: body_model, ctx: Context = Depends(authorized)) -> dict[str, Any]:  # type: ignore[valid-type]
        return created(await ctx.ask(CREATE[entity], **fields_of(body)))

    async def list_all(
        filters: Annotated[EntityFilters, Query()],  # type: ignore[valid-type]
        request: Request,
        response: Response,
        ctx: Context = Depends(authorized),
    ) -> Any:
        return paged(await ctx.ask(ListEntities, entity=entity, **fields_of(filters)), request, response)

    async def list_mine(
        filters: Annotated[MyEntityFilters, Query()],  # type: ignore[valid-type]
        request: Request,
        response: Response,
        ctx: Context = Depends(authorized),
    ) -> Any:
        outcome = await ctx.ask(ListEntities, entity=entity, **{**fields_of(filters), "mine": True})
        return paged(outcome, request, response)

    async def read(entity_id: EntityId, ctx: Context = Depends(authorized)) -> Any:
        return (await ctx.ask(GetEntity, entity=entity, id=entity_id)).data

    async def edit(
        entity_id: EntityId,
        body: EntityChanges,  # type: ignore[valid-type]
        ctx: Context = Depends(authorized),
    ) -> Any:
        outcome = await ctx.ask(EditEntity, entity=entity, id=entity_id, **fields_of(body))
        return outcome.data if outcome.data is not None else {"id": entity_id}

    async def delete(
        entity_id: EntityId,
        reason: Annotated[DeleteReason, Query()],  # type: ignore[valid-type]
        ctx: Context = Depends(authorized),
    ) -> Any:
        outcome = await ctx.ask(DeleteEntity, entity=entity, id=entity_id, **fields_of(reason))
        return outcome.data if outcome.data is not None else {"id": entity_id, "deleted": True}

    for path, endpoint, method, status, summary in (
        (f"/{plural}", create, "POST", 201, f"register a {entity}; the caller owns it"),
        (f"/{plural}", list_all, "GET", 200, f"list {plural} (filters, paged)"),
        (f"/me/{plural}", list_mine, "GET", 200, f"list the caller's own {plural}"),
        (f"/{plural}/{{entity_id}}", read, "GET", 200, f"one {entity}"),
        (f"/{plural}/{{entity_id}}", edit, "PATCH", 200, f"change fields of a {entity} (owner or admin)"),
        (f"/{plural}/{{entity_id}}", delete, "DELETE", 200, f"delete a {entity} (admins only)"),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            status_code=status,
            summary=summary,
            name=f"{endpoint.__name__}_{entity}",
            tags=[tag],
        )


def _add_audit_route(entity: str, plural: str) -> None:
    async def audit(entity_id: EntityId, ctx: Context = Depends(authorized)) -> Any:
        return (await ctx.ask(AuditTrail, entity=entity, id=entity_id)).data

    router.add_api_route(
        f"/{plural}/{{entity_id}}/audit",
        audit,
        methods=["GET"],
        summary=f"every decision about a {entity}: who, when, what, why; oldest first",
        name=f"audit_{entity}",
        tags=[plural],
    )


for _entity, _plural in ENTITY_PATHS.items():
    _add_routes(_entity, _plural)
for _entity in ("benchmark", "dataset", "model"):
    _add_audit_route(_entity, ENTITY_PATHS[_entity])
