"""The HTTP ingress: the one URL people and tools talk to.

It authenticates the caller, applies the coarse part of the permission table
(``services/ingress/permissions.py``), turns each request into a command or query, asks the owning
service over NATS request/reply, and answers synchronously with the outcome. It keeps no state of
its own beyond a two-second cache of token lookups.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from faststream.nats import NatsBroker

from services.ingress import (
    routes_app,
    routes_approvals,
    routes_consent,
    routes_console,
    routes_entities,
    routes_provenance,
    routes_users,
)
from services.ingress.auth import Authenticator
from services.ingress.edge import LimitedBodies, bounded_http
from services.ingress.gateway import Gateway, Refused, explain, fields_in
from services.ingress.idempotency import Idempotency, IdempotentPosts
from services.ingress.permissions import RULES
from shared.broker import create_broker
from shared.commands import Command, Outcome
from shared.limits import fit_to_broker
from shared.service import ask as ask_service
from shared.settings import Settings


def build_app(broker: NatsBroker, settings: Settings, auth: Authenticator) -> FastAPI:
    app = FastAPI(
        title="MedPerf federation",
        version="0.1.0",
        description="Submit containers, models, benchmarks and decisions; read leaderboards. "
        "Every endpoint but /health needs 'Authorization: Bearer <token>'. What a registered container "
        "must do (mounts, statistics.json, results.json, limits) is docs/containers.md in the project.",
        # No OpenTelemetry provider is configured here, yet FastAPI looks one up on every request
        # while these are on. Turn them on with a provider.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.gateway = Gateway(broker, settings, auth)
    app.state.idempotency = None  # the store needs the broker: Ingress.start opens it
    # Starlette runs the middleware added last first: the limits, then Idempotency-Key.
    app.add_middleware(IdempotentPosts, holder=app.state)
    app.add_middleware(LimitedBodies, limits=settings.limits)

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse({"error": explain(errors), "fields": fields_in(errors)}, status_code=422)

    @app.get("/health", tags=["health"], summary="liveness; needs no token")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    routers = (
        routes_users.router,
        routes_entities.router,
        routes_approvals.router,
        routes_provenance.router,
        routes_consent.router,
        routes_console.router,
        routes_app.router,
    )
    for router in routers:
        # The routes themselves, not include_router: FastAPI 0.165 resolves an included router's
        # context again on every request. Nothing is lost: the routers have no prefix (``authorized``
        # looks rules up by the route's own path template) and no dependencies of their own.
        # app.dependency_overrides does not reach these routes; nothing here uses it.
        app.router.routes.extend(router.routes)
    _check_permission_table(app.routes)
    return app


def _check_permission_table(routes_found: list[object]) -> None:
    """Every route has exactly one rule and every rule a route, or the table would lie."""
    routes = {(method, route.path) for route in routes_found if isinstance(route, APIRoute) for method in route.methods}
    if missing := routes - set(RULES):
        raise RuntimeError(f"routes without a permission rule: {sorted(missing)}")
    if stale := set(RULES) - routes:
        raise RuntimeError(f"permission rules without a route: {sorted(stale)}")


class Ingress:
    """Runs the HTTP app under uvicorn inside the current event loop."""

    def __init__(self, settings: Settings) -> None:
        assert settings.nats_url
        self.settings = settings
        self.broker = create_broker(
            settings.nats_url, "ingress", user=settings.nats_user, password=settings.nats_password
        )

        async def ask(command: Command) -> Outcome:
            return await ask_service(self.broker, command, settings.request_timeout)

        self.app = build_app(self.broker, settings, Authenticator.from_settings(settings, ask))
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> None:
        await self.broker.connect()
        fit_to_broker(self.broker.connection.max_payload)  # a request larger is refused, not sent
        s = self.settings
        self.app.state.idempotency = await Idempotency.open(
            self.broker.connection, s.idempotency_seconds, lease=2 * s.request_timeout + 5, replicas=s.nats_replicas
        )
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
        # without it every response waits ~40 ms for the client's delayed ACK (23 vs 2,000 req/s).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.http_host, self.settings.http_port))
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", http=bounded_http(self.settings.limits))
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
