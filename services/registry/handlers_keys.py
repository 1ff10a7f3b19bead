"""Registry handlers for sites' signing keys: the registry owns sites' identity (their datasets and
their keys), so it is where a site's public key is registered and revoked. The aggregator learns
both from the events and verifies every result against them. What a user owns, sites included,
is answered here too (``get_relations``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.registry import domain
from services.registry.store import Benchmark, Container, Dataset, Model, SiteKey, site_owners, visible
from shared.commands import CheckSiteOwner, GetRelations, ListSiteKeys, Outcome, RegisterSiteKey, RevokeSiteKey
from shared.db import UnitOfWork
from shared.events import SiteKeyRegistered, SiteKeyRevoked, utcnow
from shared.signing import BadKey, key_id_of


async def register_site_key(cmd: RegisterSiteKey, uow: UnitOfWork) -> Outcome:
    try:
        key_id = key_id_of(cmd.public_key)
    except BadKey as bad:
        return Outcome.refused("invalid", f"public_key: {bad}; send the raw 32-byte Ed25519 key, base64")
    async with uow:
        row = await uow.session.get(SiteKey, key_id)
        try:
            domain.check_site_key_manager(cmd.site, await site_owners(uow.session, cmd.site), cmd.actor, cmd.is_admin)
            domain.check_key_registrable(
                cmd.site, key_id, row.site if row else None, row is not None and row.revoked_at is not None
            )
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        if row is None:  # else: the agent registering its key again at a restart
            row = SiteKey(key_id=key_id, site=cmd.site, public_key=cmd.public_key, owner=cmd.actor)
            uow.session.add(row)
            uow.emit(
                SiteKeyRegistered(
                    actor=cmd.actor, site=cmd.site, key_id=key_id, public_key=cmd.public_key, owner=cmd.actor
                )
            )
            await uow.commit()
        return Outcome.accepted(data=_view(row))


async def revoke_site_key(cmd: RevokeSiteKey, uow: UnitOfWork) -> Outcome:
    async with uow:
        row = await uow.session.get(SiteKey, cmd.key_id)
        if row is None or row.site != cmd.site:
            known = f"see GET /sites/{cmd.site}/keys"
            return Outcome.refused("not_found", f"site {cmd.site!r} has no key {cmd.key_id} ({known})")
        try:
            domain.check_site_key_manager(cmd.site, await site_owners(uow.session, cmd.site), cmd.actor, cmd.is_admin)
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        if row.revoked_at is not None:
            return Outcome.refused("conflict", f"key {cmd.key_id} was already revoked at {row.revoked_at.isoformat()}")
        now = utcnow()
        effective = min(cmd.compromised_since, now) if cmd.compromised_since else now
        row.revoked_at, row.revoked_by, row.effective_from, row.reason = now, cmd.actor, effective, cmd.reason
        uow.emit(
            SiteKeyRevoked(
                actor=cmd.actor, site=cmd.site, key_id=cmd.key_id, effective_from=effective, reason=cmd.reason
            )
        )
        await uow.commit()
        return Outcome.accepted(data=_view(row))


async def list_site_keys(query: ListSiteKeys, uow: UnitOfWork) -> Outcome:
    async with uow:
        rows = await uow.session.scalars(
            select(SiteKey).where(SiteKey.site == query.site).order_by(SiteKey.registered_at)
        )
        return Outcome.accepted(data=[_view(r) for r in rows])


async def check_site_owner(query: CheckSiteOwner, uow: UnitOfWork) -> Outcome:
    async with uow:
        owners = await site_owners(uow.session, query.site)
        # Keys are public; datasets as the registry shows them (another's invalidated one is hidden).
        key = await uow.session.scalar(select(SiteKey.key_id).where(SiteKey.site == query.site).limit(1))
        seen = select(Dataset.id).where(Dataset.site == query.site, visible(Dataset, query.actor, query.is_admin))
        dataset = await uow.session.scalar(seen.limit(1))
        try:
            domain.check_site_owner(query.site, owners, query.actor, key is not None or dataset is not None)
        except domain.Refusal as refusal:
            return Outcome.refused(refusal.code, refusal.reason)  # type: ignore[arg-type]
        return Outcome.accepted(data={"site": query.site, "owners": sorted(owners)})


def _view(row: SiteKey) -> dict:
    def iso(value: object) -> str | None:
        return value.isoformat() if value is not None else None  # type: ignore[attr-defined]

    return {
        "key_id": row.key_id,
        "site": row.site,
        "public_key": row.public_key,
        "owner": row.owner,
        "registered_at": iso(row.registered_at),
        "revoked_at": iso(row.revoked_at),
        "revoked_by": row.revoked_by,
        "effective_from": iso(row.effective_from),
        "reason": row.reason,
    }


async def get_relations(query: GetRelations, uow: UnitOfWork) -> Outcome:
    """What the caller owns, for the live feed to show them the events about it. A site is theirs
    as for its keys (``store.site_owners``): they own one of its datasets or keys."""
    owned: dict[str, Any] = {}
    async with uow:
        s = uow.session
        tables = (("benchmarks", Benchmark), ("models", Model), ("datasets", Dataset), ("containers", Container))
        for name, table in tables:
            owned[name] = list(await s.scalars(select(table.id).where(table.owner == query.actor).order_by(table.id)))
        sites = set(await s.scalars(select(Dataset.site).where(Dataset.owner == query.actor).distinct()))
        sites |= set(await s.scalars(select(SiteKey.site).where(SiteKey.owner == query.actor).distinct()))
    return Outcome.accepted(data={**owned, "sites": sorted(sites)})
