"""Routes of the admin event console: the web page, the live event feed (server-sent events),
what waits for a decision, the sites and their jobs, and the dead letters. The terminal's
``medperf console`` uses the same endpoints, so one permission table covers both."""

# No ``from __future__ import annotations``: FastAPI reads the derived query models at import time.

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, StreamingResponse
from nats.errors import Error as NatsError
from nats.js.errors import BadRequestError

from services.console import domain
from services.console.visibility import Relations
from services.ingress.feed import Reader, Start, open_tail
from services.ingress.gateway import ERRORS, INT32_MAX, Context, Refused, authorized, fields_of, query_of
from shared.commands import (
    DiscardDeadLetter,
    GetRelations,
    ListAssociations,
    ListDeadLetters,
    ListEntities,
    ListHeldResults,
    ListJobs,
    ListSites,
    RetryDeadLetter,
)
from shared.timestamps import Timestamp

router = APIRouter(responses=ERRORS, tags=["console"])
PAGE = Path(__file__).with_name("console.html")

JobFilters = query_of(ListJobs, name="JobFilters")
Sequence = Annotated[int, PathParam(ge=1, le=INT32_MAX, description="the dead letter's sequence in DEADLETTER")]


@router.get("/console", response_class=HTMLResponse, summary="the web console (log in with an API token)")
async def page(ctx: Context = Depends(authorized)) -> HTMLResponse:
    # One self-contained page (no CDN: sites and CI have no internet); it calls the API with the token.
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})


@router.get(
    "/console/events",
    response_class=StreamingResponse,
    summary="the live event stream as server-sent events, filtered, from a point in history",
    description="Server-sent events (``text/event-stream``). Each event's ``data`` is "
    '``{"seq": N, "subject": "...", "stored_at": "...", "event": {...}}``, its ``id`` the feed sequence '
    "(an EventSource reconnecting with ``Last-Event-ID`` resumes after it); after the history comes an "
    '``event: live`` with ``{"seq": N}``, then new events as they happen (``follow=false``: the end). '
    "Admins receive every event. Everyone else receives only the events about what they own: a "
    "benchmark, model, dataset or site of theirs, or their own actions; registrations and edits of "
    "their own entities only; never another's user or token events, dead letters or heartbeats. A "
    '``log_tail`` is sent only to the owners of the site it came from: for others it is ``""`` and '
    "``log_tail_withheld`` is true. What a reader owns is re-read while the feed is open.",
)
async def events(
    request: Request,
    ctx: Context = Depends(authorized),
    benchmark: Annotated[int | None, Query(ge=1, le=INT32_MAX, description="events about this benchmark")] = None,
    site: Annotated[str | None, Query(max_length=63, description="events from or about this site")] = None,
    entity: Annotated[str | None, Query(max_length=140, description="KIND:ID, e.g. model:7, job:3, user:alice")] = None,
    type: Annotated[str | None, Query(max_length=400, description="types or patterns, comma-separated: job.*")] = None,
    since_seq: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="start at this feed sequence")] = None,
    since_time: Annotated[Timestamp | None, Query(description="start at this time (ISO 8601, with a zone)")] = None,
    last: Annotated[int | None, Query(ge=1, le=100_000, description="start this many events back")] = None,
    follow: Annotated[bool, Query(description="false: send the history and end")] = True,
    last_event_id: Annotated[int | None, Header(ge=0, include_in_schema=False)] = None,
) -> StreamingResponse:
    try:
        keep = domain.EventFilter.parse(benchmark, site, entity, type)
    except domain.InvalidFilter as exc:
        raise Refused(422, str(exc)) from exc
    if sum(x is not None for x in (since_seq, since_time, last)) > 1:
        raise Refused(422, "give at most one of since_seq, since_time and last")
    if since_seq is None and since_time is None and last is None and last_event_id is not None:
        since_seq = last_event_id + 1  # a reconnecting EventSource resumes after what it saw
    reader = Reader(Relations(ctx.who.name, is_admin=True))
    if not ctx.who.is_admin:

        async def fetch() -> Relations:
            return Relations.of(ctx.who.name, (await ctx.ask(GetRelations)).data)

        reader = Reader(await fetch(), fetch)
    try:
        start = Start(since_seq, since_time, last)
        stream = await open_tail(ctx.gateway.broker.connection, start, keep, follow, reader)
    except BadRequestError as exc:  # JetStream refused the starting point
        raise Refused(422, f"cannot start the feed there: {exc.description}") from exc
    except NatsError as exc:
        raise Refused(503, "the event stream is not available right now; retry shortly") from exc
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.get("/console/pending", summary="what waits for a decision the caller can see, and the command for each")
async def pending(ctx: Context = Depends(authorized)) -> dict[str, Any]:
    benchmarks = (await ctx.ask(ListEntities, entity="benchmark", approval_status="PENDING", limit=500)).data
    associations = (
        await ctx.ask(ListAssociations, status="PENDING", involving_me=not ctx.who.is_admin, limit=500)
    ).data
    held = (await ctx.ask(ListHeldResults)).data
    return {
        "benchmarks": [domain.benchmark_decision(b) for b in benchmarks],
        "associations": [domain.association_decision(a) for a in associations],
        "held_results": [domain.held_result(h) for h in held],
    }


@router.get("/console/sites", summary="every site agent: last heartbeat, jobs, failures, silence (admins only)")
async def sites(ctx: Context = Depends(authorized)) -> Any:
    return (await ctx.ask(ListSites)).data


@router.get("/console/jobs", summary="jobs of what the caller owns (all for admins), with why each failed")
async def jobs(
    filters: Annotated[JobFilters, Query()],  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    return (await ctx.ask(ListJobs, **fields_of(filters))).data


@router.get("/console/dead-letters", summary="messages consumers gave up on, with the reason (admins only)")
async def dead_letters(
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ctx: Context = Depends(authorized),
) -> Any:
    return (await ctx.ask(ListDeadLetters, limit=limit)).data


@router.post(
    "/console/dead-letters/{sequence}/retry",
    summary="publish a dead letter's message to its original subject again (admins only)",
)
async def retry_dead_letter(sequence: Sequence, ctx: Context = Depends(authorized)) -> Any:
    outcome = await ctx.ask(RetryDeadLetter, sequence=sequence)
    return {"sequence": sequence, "retried": True, **(outcome.data or {})}


@router.delete("/console/dead-letters/{sequence}", summary="discard a dead letter for good (admins only)")
async def discard_dead_letter(sequence: Sequence, ctx: Context = Depends(authorized)) -> Any:
    await ctx.ask(DiscardDeadLetter, sequence=sequence)
    return {"sequence": sequence, "discarded": True}
