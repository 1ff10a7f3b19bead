"""Registry handlers for users and their API tokens. A token leaves the registry once, in the answer
to ``IssueToken``; the table keeps its sha256 and no event carries either."""

from __future__ import annotations

from sqlalchemy import select

from services.registry import domain
from services.registry.store import Token, User, load
from shared.commands import Authenticate, CreateUser, IssueToken, Outcome, RevokeToken
from shared.db import UnitOfWork
from shared.events import TokenIssued, TokenRevoked, UserCreated, utcnow

UNAUTHENTICATED = "unknown or revoked token"


async def create_user(cmd: CreateUser, uow: UnitOfWork) -> Outcome:
    async with uow:
        try:
            domain.check_admin(cmd.is_admin, "create users")
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        if await uow.session.get(User, cmd.name) is not None:
            return Outcome.refused("conflict", f"user {cmd.name!r} already exists; issue them a token instead")
        uow.session.add(User(name=cmd.name, is_admin=cmd.admin))
        uow.emit(UserCreated(actor=cmd.actor, user=cmd.name, is_admin=cmd.admin))
        await uow.commit()
        return Outcome.accepted(data={"user": cmd.name, "is_admin": cmd.admin})


async def issue_token(cmd: IssueToken, uow: UnitOfWork) -> Outcome:
    async with uow:
        try:
            domain.check_admin(cmd.is_admin, "issue tokens")
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        if await uow.session.get(User, cmd.user) is None:
            return Outcome.refused("not_found", f"no user {cmd.user!r}; create the user first")
        token = domain.new_token()
        row = Token(user=cmd.user, token_sha256=domain.token_digest(token), label=cmd.label)
        uow.session.add(row)
        await uow.session.flush()
        uow.emit(TokenIssued(actor=cmd.actor, user=cmd.user, token_id=row.id, label=cmd.label))
        await uow.commit()
        return Outcome.accepted(row.id, {"token": token, "token_id": row.id, "user": cmd.user})


async def revoke_token(cmd: RevokeToken, uow: UnitOfWork) -> Outcome:
    async with uow:
        row = await load(uow.session, Token, cmd.token_id)
        if row is None:
            return Outcome.refused("not_found", f"no token {cmd.token_id}")
        try:
            domain.check_revoke(row.id, row.user, row.revoked_at, cmd.actor, cmd.is_admin)
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        row.revoked_at = utcnow()
        uow.emit(TokenRevoked(actor=cmd.actor, user=row.user, token_id=row.id))
        await uow.commit()
        return Outcome.accepted(row.id)


async def authenticate(query: Authenticate, uow: UnitOfWork) -> Outcome:
    async with uow:
        found = (
            await uow.session.execute(
                select(User.name, User.is_admin)
                .join(Token, Token.user == User.name)
                .where(Token.token_sha256 == query.token_sha256, Token.revoked_at.is_(None))
            )
        ).first()
        if found is None:
            return Outcome.refused("unauthenticated", UNAUTHENTICATED)
        return Outcome.accepted(data={"user": found.name, "is_admin": found.is_admin})
