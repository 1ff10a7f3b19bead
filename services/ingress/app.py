"""The HTTP ingress: the one URL people and tools talk to.

It authenticates the caller, turns each request into a command or query, asks the owning service
over NATS request/reply, and answers synchronously with the outcome. It keeps no state of its own.
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.nats import NatsBroker
from pydantic import BaseModel, ValidationError

from services.ingress.auth import Caller, TokenAuthenticator
from shared.broker import create_broker
from shared.commands import (
    Command,
    DecideAssociation,
    DecideBenchmark,
    GetEntity,
    GetLeaderboard,
    ListAssociations,
    ListEntities,
    Outcome,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    RequestAssociation,
    SubmitBenchmark,
)
from shared.service import ask as ask_service
from shared.settings import Settings

STATUS = {
    "invalid": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
}


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def build_app(broker: NatsBroker, settings: Settings, auth: TokenAuthenticator) -> FastAPI:
    app = FastAPI(
        title="MedPerf federation",
        version="0.1.0",
        description="Submit containers, models, benchmarks and decisions; read leaderboards.",
    )

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _explain(exc.errors())}, status_code=422)

    def caller(authorization: str | None = Header(default=None)) -> Caller:
        found = auth.authenticate(authorization)
        if found is None:
            raise Refused(
                401, "missing or unknown API token: send 'Authorization: Bearer <token>' (see `medperf auth login`)"
            )
        return found

    async def ask(command_type: type[Command], who: Caller, **fields: Any) -> Outcome:
        try:
            command = command_type.model_validate({**fields, "actor": who.name, "is_admin": who.is_admin})
        except ValidationError as exc:
            raise Refused(422, _explain(exc.errors())) from exc
        try:
            outcome = await ask_service(broker, command, settings.request_timeout)
        except Exception as exc:  # no responder or timeout: the owning service is down
            raise Refused(503, f"the {command.SERVICE} service did not answer; try again shortly") from exc
        if not outcome.ok:
            raise Refused(STATUS.get(outcome.code or "invalid", 400), outcome.reason or "refused")
        return outcome

    def created(outcome: Outcome) -> JSONResponse:
        return JSONResponse({"id": outcome.id, **(outcome.data or {})}, status_code=201)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/containers", status_code=201)
    async def register_container(body: dict[str, Any], who: Caller = Depends(caller)) -> JSONResponse:
        return created(await ask(RegisterContainer, who, **body))

    @app.post("/models", status_code=201)
    async def register_model(body: dict[str, Any], who: Caller = Depends(caller)) -> JSONResponse:
        return created(await ask(RegisterModel, who, **body))

    @app.post("/benchmarks", status_code=201)
    async def submit_benchmark(body: dict[str, Any], who: Caller = Depends(caller)) -> JSONResponse:
        return created(await ask(SubmitBenchmark, who, **body))

    @app.post("/datasets", status_code=201)
    async def register_dataset(body: dict[str, Any], who: Caller = Depends(caller)) -> JSONResponse:
        return created(await ask(RegisterDataset, who, **body))

    @app.get("/{entity}s")
    async def list_entities(entity: str, limit: int = 50, offset: int = 0, who: Caller = Depends(caller)) -> Any:
        return (await ask(ListEntities, who, entity=entity, limit=limit, offset=offset)).data

    @app.get("/{entity}s/{entity_id}")
    async def get_entity(entity: str, entity_id: int, who: Caller = Depends(caller)) -> Any:
        return (await ask(GetEntity, who, entity=entity, id=entity_id)).data

    @app.post("/benchmarks/{benchmark_id}/decision")
    async def decide_benchmark(benchmark_id: int, body: Decision, who: Caller = Depends(caller)) -> Any:
        outcome = await ask(DecideBenchmark, who, benchmark_id=benchmark_id, approve=body.approve, reason=body.reason)
        return {"benchmark_id": benchmark_id, **outcome.data}

    @app.post("/benchmarks/{benchmark_id}/associations", status_code=201)
    async def request_association(
        benchmark_id: int, body: dict[str, Any], who: Caller = Depends(caller)
    ) -> JSONResponse:
        return created(await ask(RequestAssociation, who, benchmark_id=benchmark_id, **body))

    @app.post("/benchmarks/{benchmark_id}/associations/{kind}/{component_id}/decision")
    async def decide_association(
        benchmark_id: int, kind: str, component_id: int, body: Decision, who: Caller = Depends(caller)
    ) -> Any:
        outcome = await ask(
            DecideAssociation,
            who,
            benchmark_id=benchmark_id,
            kind=kind,
            component_id=component_id,
            approve=body.approve,
            reason=body.reason,
        )
        return {"association_id": outcome.id, **outcome.data}

    @app.get("/benchmarks/{benchmark_id}/associations")
    async def list_associations(
        benchmark_id: int, kind: str | None = None, status: str | None = None, who: Caller = Depends(caller)
    ) -> Any:
        return (await ask(ListAssociations, who, benchmark_id=benchmark_id, kind=kind, status=status)).data

    @app.get("/benchmarks/{benchmark_id}/leaderboard", response_model=None)
    async def leaderboard(benchmark_id: int, format: str = "json", who: Caller = Depends(caller)) -> Any:
        board = (await ask(GetLeaderboard, who, benchmark_id=benchmark_id)).data
        if format == "csv":
            return PlainTextResponse(leaderboard_csv(board), media_type="text/csv")
        if format != "json":
            raise Refused(422, "format must be 'json' or 'csv'")
        return board

    return app


class Decision(BaseModel):
    approve: bool
    reason: str = ""


def leaderboard_csv(board: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    primary = board["primary_metric"]
    writer.writerow(["rank", "model", "baseline", f"mean_{primary}", *board["datasets"], "complete"])
    for row in board["rows"]:
        writer.writerow(
            [
                row["rank"],
                row["model"],
                row["baseline"],
                row["metrics"][primary]["mean"],
                *(row["per_dataset"][d] for d in board["datasets"]),
                row["complete"],
            ]
        )
    return out.getvalue()


def _explain(errors: Any) -> str:
    parts = []
    for error in list(errors)[:10]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",)) or "body"
        parts.append(f"{location}: {error.get('msg')}")
    return "; ".join(parts)


class Ingress:
    """Runs the HTTP app under uvicorn inside the current event loop."""

    def __init__(self, settings: Settings) -> None:
        assert settings.nats_url
        self.settings = settings
        self.broker = create_broker(settings.nats_url, "ingress")
        self.app = build_app(self.broker, settings, TokenAuthenticator.from_settings(settings))
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> None:
        await self.broker.connect()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.http_host, self.settings.http_port))
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="ingress-http")
        while not self._server.started:
            if self._task.done():
                await self._task  # surfaces the start-up error
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        await self.broker.stop()
