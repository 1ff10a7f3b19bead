"""Routes for decisions and associations (the approvals service) and the leaderboard (the aggregator)."""

# No ``from __future__ import annotations``: FastAPI reads the derived body models from the
# signatures at import time.

import csv
import io
from typing import Annotated, Any, Literal

import pydantic_core
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse, Response

from services.ingress.gateway import (
    ERRORS,
    INT32_MAX,
    Context,
    Refused,
    authorized,
    body_of,
    created,
    fields_of,
    query_of,
)
from shared.commands import (
    DEFAULT_LEADERBOARD_ROWS,
    DEFAULT_PREVIEW_ROWS,
    MAX_ID,
    MAX_LEADERBOARD_ROWS,
    MAX_PREVIEW_ROWS,
    DecideAssociation,
    DecideBenchmark,
    GetEntity,
    GetLeaderboard,
    ListAssociations,
    PreviewSharingPolicy,
    RequestAssociation,
    SetAutoApproval,
    SetPriority,
    SetSharingPolicy,
)
from shared.events import AssociationKind, SharingPolicy

router = APIRouter(responses=ERRORS, tags=["associations"])

BenchmarkId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the benchmark's id")]
ComponentId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the dataset's or model's id")]
ModelId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the model's id")]
Kind = Annotated[AssociationKind, Path(description="dataset or model")]

BenchmarkDecision = body_of(DecideBenchmark, exclude=("benchmark_id",), name="BenchmarkDecision")
AssociationRequest = body_of(RequestAssociation, exclude=("benchmark_id",), name="AssociationRequest")
AssociationDecision = body_of(
    DecideAssociation, exclude=("benchmark_id", "kind", "component_id"), name="AssociationDecision"
)
AutoApproval = body_of(SetAutoApproval, exclude=("benchmark_id", "kind"), name="AutoApproval")
Priority = body_of(SetPriority, exclude=("benchmark_id", "model_id"), name="Priority")
BenchmarkAssociationFilters = query_of(
    ListAssociations, exclude=("benchmark_id", "involving_me"), name="BenchmarkAssociationFilters"
)
MyAssociationFilters = query_of(ListAssociations, exclude=("involving_me",), name="MyAssociationFilters")


@router.post("/benchmarks/{benchmark_id}/decision", summary="approve or reject a benchmark (admins only)")
async def decide_benchmark(
    benchmark_id: BenchmarkId,
    body: BenchmarkDecision,  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    try:
        outcome = await ctx.ask(DecideBenchmark, benchmark_id=benchmark_id, **fields_of(body))
    except Refused as refused:
        if refused.status != 404:
            raise
        # Just submitted: the registry has it, the approvals service has not heard yet.
        await ctx.ask(GetEntity, entity="benchmark", id=benchmark_id)  # 404 if it truly does not exist
        raise Refused(
            503, f"benchmark {benchmark_id} was just submitted and is still on its way; retry shortly"
        ) from refused
    return {"benchmark_id": benchmark_id, **(outcome.data or {})}


@router.post(
    "/benchmarks/{benchmark_id}/associations",
    status_code=201,
    summary="ask for a dataset or model to join a benchmark",
)
async def request_association(
    benchmark_id: BenchmarkId,
    body: AssociationRequest,  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    fields = fields_of(body)
    try:
        return created(await ctx.ask(RequestAssociation, benchmark_id=benchmark_id, **fields))
    except Refused as refused:
        if refused.status != 503:
            raise
        # The approvals service learns of benchmarks and components from events, so it cannot tell
        # "not yet" from "never"; the registry, which owns them, can. "Retry shortly" is only
        # true when both exist there.
        await ctx.ask(GetEntity, entity="benchmark", id=benchmark_id)
        await ctx.ask(GetEntity, entity=fields["kind"], id=fields["component_id"])
        raise


@router.post(
    "/benchmarks/{benchmark_id}/associations/{kind}/{component_id}/decision",
    summary="approve or reject a pending association request (the other party, or an admin)",
)
async def decide_association(
    benchmark_id: BenchmarkId,
    kind: Kind,
    component_id: ComponentId,
    body: AssociationDecision,  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    outcome = await ctx.ask(
        DecideAssociation, benchmark_id=benchmark_id, kind=kind, component_id=component_id, **fields_of(body)
    )
    return {"association_id": outcome.id, **(outcome.data or {})}


@router.get("/benchmarks/{benchmark_id}/associations", summary="a benchmark's associations, latest entry each")
async def list_associations(
    benchmark_id: BenchmarkId,
    filters: Annotated[BenchmarkAssociationFilters, Query()],  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    return (await ctx.ask(ListAssociations, benchmark_id=benchmark_id, **fields_of(filters))).data


@router.get("/me/associations", summary="associations where the caller owns the benchmark or the component")
async def my_associations(
    filters: Annotated[MyAssociationFilters, Query()],  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    return (await ctx.ask(ListAssociations, involving_me=True, **fields_of(filters))).data


@router.put(
    "/benchmarks/{benchmark_id}/auto-approval/{kind}",
    summary="how requests of this kind are approved without a person deciding (benchmark owner or admin)",
)
async def set_auto_approval(
    benchmark_id: BenchmarkId,
    kind: Kind,
    body: AutoApproval,  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    outcome = await ctx.ask(SetAutoApproval, benchmark_id=benchmark_id, kind=kind, **fields_of(body))
    return outcome.data if outcome.data is not None else {"benchmark_id": benchmark_id, "kind": kind}


@router.put(
    "/benchmarks/{benchmark_id}/models/{model_id}/priority",
    summary="executors run higher priority models first (benchmark owner or admin)",
)
async def set_priority(
    benchmark_id: BenchmarkId,
    model_id: ModelId,
    body: Priority,  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    outcome = await ctx.ask(SetPriority, benchmark_id=benchmark_id, model_id=model_id, **fields_of(body))
    return outcome.data if outcome.data is not None else {"benchmark_id": benchmark_id, "model_id": model_id}


@router.get(
    "/benchmarks/{benchmark_id}/leaderboard",
    response_model=None,
    tags=["results"],
    summary="models ranked by the benchmark's primary metric, as its sharing policy lets the caller see them",
)
async def leaderboard(
    benchmark_id: BenchmarkId,
    format: Annotated[Literal["json", "csv"], Query(description="csv: every row, not one page")] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_LEADERBOARD_ROWS, description="rows per page")] = DEFAULT_LEADERBOARD_ROWS,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip, in rank order")] = 0,
    ctx: Context = Depends(authorized),
) -> Any:
    board = (await ctx.ask(GetLeaderboard, benchmark_id=benchmark_id, limit=limit, offset=offset)).data
    if format == "csv":
        # A download is the whole table: ask for the following pages of the same board.
        rows = board.get("rows")
        while rows is not None and offset + len(rows) < board["total_rows"]:
            more = (await ctx.ask(GetLeaderboard, benchmark_id=benchmark_id, offset=offset + len(rows))).data
            if not more.get("rows"):
                break
            rows += more["rows"]
        return PlainTextResponse(leaderboard_csv(board), media_type="text/csv")
    # Encoded here at once: FastAPI's generic path (jsonable_encoder) takes ~10x longer on a page of
    # a thousand models by two hundred sites.
    return Response(pydantic_core.to_json(board), media_type="application/json")


@router.put(
    "/benchmarks/{benchmark_id}/sharing-policy",
    tags=["results"],
    summary="set who sees the benchmark's results and how much (its committee or an admin)",
)
async def sharing_policy(
    benchmark_id: BenchmarkId,
    body: SharingPolicy,
    ctx: Context = Depends(authorized),
) -> Any:
    return (await ctx.ask(SetSharingPolicy, benchmark_id=benchmark_id, policy=body)).data


PREVIEW = """What each audience would see of the benchmark's board if the committee set this policy, side
by side; nothing is saved (``PUT /benchmarks/{benchmark_id}/sharing-policy`` sets it). The committee and
admins only; a benchmark the caller may not see is a 404.

The answer: ``benchmark_id``, ``benchmark`` (its name), ``policy`` (the one previewed, defaults filled in),
``current_policy`` (the one in force), and one view per audience, each shaped as
``GET /benchmarks/{benchmark_id}/leaderboard`` would answer that audience (``scope``, ``rows``, ``datasets``,
``yours``, ``held`` ...; a page of ``limit`` rows from ``offset``), or ``{"refused": "<why>"}`` where the
policy does not share with it:

- ``public``: a signed-in user related to nothing on the board;
- ``participant``: an owner of an approved model or dataset whose own results are not on the board;
- ``model_owner``: the owner of one model on the board (the first other than the reference model and the
  committee's own), named in ``model_owner_is`` (``{"user", "model_id", "model"}``, null when there is none);
- ``committee``: the whole board."""


@router.post(
    "/benchmarks/{benchmark_id}/sharing-policy/preview",
    tags=["results"],
    summary="what each audience would see under a sharing policy, side by side (committee or admin; not saved)",
    description=PREVIEW,
)
async def preview_sharing_policy(
    benchmark_id: BenchmarkId,
    body: SharingPolicy,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PREVIEW_ROWS, description="rows per audience's board")
    ] = DEFAULT_PREVIEW_ROWS,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip, in rank order")] = 0,
    ctx: Context = Depends(authorized),
) -> Any:
    outcome = await ctx.ask(PreviewSharingPolicy, benchmark_id=benchmark_id, policy=body, limit=limit, offset=offset)
    return Response(pydantic_core.to_json(outcome.data), media_type="application/json")


def leaderboard_csv(board: dict) -> str:
    """The rows the caller may see: the shared board, or else their own results."""
    out = io.StringIO()
    writer = csv.writer(out)
    board = board if "rows" in board else board.get("yours") or {}
    if not board:
        return ""
    primary = board["primary_metric"]
    aggregate = board.get("aggregate", "mean")
    header = [
        "rank",
        "model",
        "baseline",
        f"{aggregate}_{primary}",
        *board["datasets"],
        "complete",
        "partial",
        "stale",
        "sites_failed",
    ]
    writer.writerow(header)
    for row in board["rows"]:
        # A failed cell says whose fault; never the log tail (it may hold patient data).
        failed = {d: f"failed ({f['fault']})" for d, f in (row.get("failed") or {}).items()}
        writer.writerow(
            [
                row["rank"],
                row["model"],
                row["baseline"],
                row["metrics"][primary]["value"],
                *(failed.get(d, row["per_dataset"].get(d)) for d in board["datasets"]),
                row["complete"],
                row["partial"],
                row.get("stale", False),
                row.get("sites_failed", 0),
            ]
        )
    return out.getvalue()
