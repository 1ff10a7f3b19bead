"""What every route shares: who is calling (checked against the permission table), how a request
becomes a command for the owning service, and how a refusal becomes an HTTP status.

Request bodies and query strings are pydantic models derived from the command models, so the
OpenAPI document describes exactly what the services accept, and a field added to a command shows
up in the API without anyone copying it here.
"""

from __future__ import annotations

import re
from copy import copy
from dataclasses import dataclass
from typing import Any

import annotated_types
from fastapi import Request, Response
from fastapi.security import HTTPBearer
from faststream.nats import NatsBroker
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from services.ingress.auth import Authenticator, AuthUnavailable, Caller, TokenRefused
from services.ingress.permissions import rule_for
from shared.commands import MAX_ID, Command, Outcome
from shared.limits import LimitExceeded
from shared.service import ask as ask_service
from shared.settings import Settings

STATUS = {
    "invalid": 422,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "unavailable": 503,
    "internal": 500,
}
# Ids and counters are 32-bit on every database: a larger number is refused here with a 422.
INT32_MAX = MAX_ID


class Refused(Exception):
    def __init__(self, status: int, message: str, fields: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **({"fields": self.fields} if self.fields else {})}


class FieldError(BaseModel):
    field: str = Field(description="where in the request: a dotted path, e.g. spec.tasks.infer")
    message: str


class ErrorBody(BaseModel):
    error: str
    fields: list[FieldError] | None = Field(
        default=None, description="for a 422: each invalid field and what is wrong with it (forms show it there)"
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown one"},
    403: {"model": ErrorBody, "description": "the caller may not do this"},
    404: {"model": ErrorBody, "description": "no such object, or not visible to the caller"},
    409: {"model": ErrorBody, "description": "the object's state does not allow this now"},
    413: {"model": ErrorBody, "description": "the request (or what it would record) is past a limit, named"},
    422: {"model": ErrorBody, "description": "the request is malformed; the message names the field"},
    503: {"model": ErrorBody, "description": "the owning service did not answer; retry shortly"},
}


@dataclass(frozen=True)
class Gateway:
    broker: NatsBroker
    settings: Settings
    auth: Authenticator

    async def send(self, command: Command) -> Outcome:
        return await ask_service(self.broker, command, self.settings.request_timeout)


@dataclass(frozen=True)
class Context:
    """One authenticated request: the caller, and a way to ask services on their behalf."""

    gateway: Gateway
    who: Caller

    async def ask(self, command_type: type[Command], **fields: Any) -> Outcome:
        return await self.send(self.command(command_type, **fields))

    def command(self, command_type: type[Command], **fields: Any) -> Command:
        """``command_type`` on the caller's behalf; 422 naming the field when the request is malformed."""
        try:
            return command_type.model_validate({**fields, "actor": self.who.name, "is_admin": self.who.is_admin})
        except ValidationError as exc:
            raise Refused(422, explain(exc.errors()), fields_in(exc.errors())) from exc

    async def send(self, command: Command) -> Outcome:
        try:
            outcome = await self.gateway.send(command)
        except LimitExceeded as exc:
            raise Refused(413, f"the request is refused: {exc}") from exc
        except Exception as exc:  # no responder or timeout: the owning service (or site agent) is down
            raise Refused(503, command.not_answering()) from exc
        if not outcome.ok:
            raise Refused(STATUS.get(outcome.code or "invalid", 400), outcome.reason or "refused")
        return outcome


class Authorized(HTTPBearer):
    """The one dependency of every route: authenticate, then apply the coarse part of the
    permission table: anonymous callers get 401 and non-admins get 403 on admin-only endpoints,
    before any service is asked. It is the bearer scheme itself (one dependency, not two, for
    FastAPI to solve on each request), so OpenAPI still documents the scheme."""

    async def __call__(self, request: Request) -> Context:  # type: ignore[override]
        credentials = await super().__call__(request)
        gateway: Gateway = request.app.state.gateway
        rule = rule_for(request.method, request.scope["route"].path)
        try:
            who = await gateway.auth.authenticate(credentials.credentials if credentials else None)
        except AuthUnavailable as exc:
            raise Refused(503, f"cannot check the token now ({exc}); retry shortly") from exc
        except TokenRefused as exc:
            raise Refused(401, f"{exc}; {gateway.auth.how_to()}") from exc
        if who is None:
            if rule.public:
                return Context(gateway, Caller("anonymous", False))
            raise Refused(401, f"missing or unknown token: {gateway.auth.how_to()}")
        if rule.admin_only and not who.is_admin:
            raise Refused(403, f"{rule.method} {rule.path} is for admins only")
        return Context(gateway, who)


authorized = Authorized(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="an API token issued by an admin, a bootstrap token, or a JWT from the configured OIDC issuer",
)


def _derive(command: type[Command], exclude: tuple[str, ...], name: str, config: ConfigDict) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for field_name, info in command.model_fields.items():
        if field_name in ("actor", "is_admin", *exclude):
            continue
        info = copy(info)  # the command's own field stays untouched
        if info.annotation in (int, int | None):
            bounds = [m for m in info.metadata if isinstance(m, annotated_types.Le | annotated_types.Lt)]
            lower = [m for m in info.metadata if isinstance(m, annotated_types.Ge | annotated_types.Gt)]
            info.metadata = [
                *info.metadata,
                *([] if bounds else [annotated_types.Le(INT32_MAX)]),
                *([] if lower else [annotated_types.Ge(-INT32_MAX - 1)]),
            ]
        fields[field_name] = (info.annotation, info)
    return create_model(name, __config__=config, __doc__=command.__doc__, **fields)


def body_of(command: type[Command], exclude: tuple[str, ...] = (), name: str | None = None) -> type[BaseModel]:
    """The request body for ``command``: its fields without the caller (from the token) and without
    ``exclude`` (those come from the path). Unknown fields are refused, so typos are reported."""
    return _derive(command, exclude, name or f"{command.__name__}Body", ConfigDict(extra="forbid"))


def query_of(command: type[Command], exclude: tuple[str, ...] = (), name: str | None = None) -> type[BaseModel]:
    """The query-string filters for a query command (unknown parameters are ignored, as HTTP
    clients and caches add their own)."""
    return _derive(command, exclude, name or f"{command.__name__}Filters", ConfigDict(extra="ignore"))


def fields_of(model: BaseModel) -> dict[str, Any]:
    """A validated body or filter set, ready to become command fields. Nested models are passed
    as they are: the command accepts instances of its own field types without validating them
    again (a container spec's checks ran once already, on the body)."""
    return dict(model)


def paged(outcome: Outcome, request: Request, response: Response) -> Any:
    """A page of a list, with a ``Link: <…?offset=N>; rel="next"`` header (RFC 8288) when more
    rows follow: a page stops early when its rows would not fit in one answer."""
    if outcome.next_offset is not None:
        following = request.url.include_query_params(offset=outcome.next_offset)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return outcome.data


def created(outcome: Outcome) -> dict[str, Any]:
    return {"id": outcome.id, **(outcome.data if isinstance(outcome.data, dict) else {})}


def explain(errors: Any) -> str:
    return "; ".join(f"{item['field'] or 'body'}: {item['message']}" for item in _located(errors))


def fields_in(errors: Any) -> list[dict[str, str]]:
    """Each invalid field and its message, for a form to show beside the field. A rule over several
    fields names none; its message often starts with the field it is about ("medperf: ..."), so
    that field is given."""
    found = []
    for item in _located(errors):
        if not item["field"] and (named := re.match(r"(?:Value error, )?([a-z_]+): ", item["message"])):
            item["field"] = named.group(1)
        found.append(item)
    return found


def _located(errors: Any) -> list[dict[str, str]]:
    located = []
    for error in list(errors)[:10]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body",))
        located.append({"field": location, "message": str(error.get("msg"))})
    return located
