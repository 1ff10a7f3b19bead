"""Routes for people: who am I, users, and the API tokens an admin issues (the registry keeps them)."""

# No ``from __future__ import annotations``: FastAPI reads the derived body models from the
# signatures at import time.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from services.ingress.gateway import ERRORS, INT32_MAX, Context, authorized, body_of, created, fields_of
from shared.commands import CreateUser, IssueToken, RevokeToken

router = APIRouter(responses=ERRORS, tags=["users"])

NewUser = body_of(CreateUser, name="NewUser")
NewToken = body_of(IssueToken, exclude=("user",), name="NewToken")
UserName = Annotated[str, Path(min_length=1, max_length=128, description="the user's name")]
TokenId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the token's id (not the token)")]


@router.get("/me", summary="who the token belongs to")
async def whoami(ctx: Context = Depends(authorized)) -> dict[str, Any]:
    return {"user": ctx.who.name, "is_admin": ctx.who.is_admin}


@router.post("/users", status_code=201, summary="create a user (admins only)")
async def create_user(body: NewUser, ctx: Context = Depends(authorized)) -> Any:  # type: ignore[valid-type]
    return created(await ctx.ask(CreateUser, **fields_of(body)))


@router.post(
    "/users/{name}/tokens",
    status_code=201,
    summary="issue an API token to a user (admins only); the token is in this answer and nowhere else",
)
async def issue_token(
    name: UserName,
    body: NewToken,  # type: ignore[valid-type]
    response: Response,
    ctx: Context = Depends(authorized),
) -> Any:
    # The registry stores only the token's hash, so this answer is the one copy: keep it out of caches.
    response.headers["Cache-Control"] = "no-store"
    return created(await ctx.ask(IssueToken, user=name, **fields_of(body)))


@router.delete("/tokens/{token_id}", summary="revoke a token (its user or an admin); it stops working within 2 s")
async def revoke_token(token_id: TokenId, ctx: Context = Depends(authorized)) -> Any:
    outcome = await ctx.ask(RevokeToken, token_id=token_id)
    return outcome.data if outcome.data is not None else {"id": token_id, "revoked": True}
