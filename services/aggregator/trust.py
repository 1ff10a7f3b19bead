"""Which results the aggregator trusts: sites' signing keys (learnt from the registry's events) and
the check every result passes before it may reach a board.

The rule (``verdict``, pure): a result must be signed by a registered key of the site it names,
over exactly the fields it carries, at a time (its signed ``occurred_at``) before the key's
revocation took effect. Results a key signed before its revocation stay on the boards (their
provenance shows the revocation); a key that leaked earlier is revoked with ``compromised_since``,
which moves the cut-off back. The decision depends on event data only, so a rebuild from the
streams reaches the same boards as the live service.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete, select

from services.aggregator.store import Result, SiteKeyInfo
from shared.db import UnitOfWork
from shared.events import ResultReported, SiteKeyRegistered, SiteKeyRevoked
from shared.messaging import NotYet, PermanentFailure
from shared.signing import load_public_key, verify_result


@dataclass(frozen=True)
class KnownKey:
    key_id: str
    site: str
    public_key: Ed25519PublicKey
    effective_from: datetime | None = None  # revoked from then on; None: trusted
    reason: str = ""


@functools.lru_cache(maxsize=4096)
def _parsed(public_key: str) -> Ed25519PublicKey:
    # Parsing is most of a key's cost; a key signs many results, so parse it once per process.
    return load_public_key(public_key)


def verdict(event: ResultReported, key: KnownKey | None) -> Exception | None:
    """Why ``event`` must not be counted (None: it may). ``NotYet`` for a key not heard of: the
    registry's event travels on another stream and may come later; after the retries the result
    is dead-lettered with this reason."""
    if event.key_id is None or event.signature is None:
        return PermanentFailure(
            f"result {event.event_id} from site {event.site!r} is unsigned; every result must be signed by "
            "its site's agent (upgrade the agent, which registers its key and signs at start)"
        )
    if key is None:
        return NotYet(
            f"signing key {event.key_id} of site {event.site!r} is not registered; the site's owner registers "
            "it with `medperf site key register` (the agent does so at start)"
        )
    if key.site != event.site:
        return PermanentFailure(f"key {key.key_id} belongs to site {key.site!r}, not {event.site!r}: forged result")
    if key.effective_from is not None and event.occurred_at >= key.effective_from:
        why = f" ({key.reason})" if key.reason else ""
        return PermanentFailure(
            f"result signed at {event.occurred_at.isoformat()} with key {key.key_id} of site {event.site!r}, "
            f"revoked from {key.effective_from.isoformat()}{why}; the site must sign with a new key"
        )
    if not verify_result(key.public_key, event):
        return PermanentFailure(
            f"bad signature on result {event.event_id} from site {event.site!r} (key {key.key_id}): a field was "
            "changed after signing, or another key signed it"
        )
    return None


async def known_keys(uow: UnitOfWork, key_ids: Iterable[str | None]) -> dict[str, KnownKey]:
    """The batch's keys in one query."""
    wanted = {k for k in key_ids if k}
    if not wanted:
        return {}
    rows = await uow.session.scalars(select(SiteKeyInfo).where(SiteKeyInfo.key_id.in_(wanted)))
    return {
        r.key_id: KnownKey(r.key_id, r.site, _parsed(r.public_key), r.effective_from, r.revoked_reason) for r in rows
    }


async def register(event: SiteKeyRegistered, uow: UnitOfWork) -> None:
    if await uow.session.get(SiteKeyInfo, event.key_id) is None:
        uow.session.add(
            SiteKeyInfo(
                key_id=event.key_id, site=event.site, public_key=event.public_key, registered_at=event.occurred_at
            )
        )


async def revoke(event: SiteKeyRevoked, uow: UnitOfWork) -> int:
    """Record the revocation; returns how many results it took off the boards. Only results signed
    after the cut-off are affected: a result signed after it that arrived before this event
    (results travel on another stream) is removed, since a rebuild, which learns the revocation
    first, would have refused it."""
    row = await uow.session.get(SiteKeyInfo, event.key_id)
    if row is None:
        raise NotYet(f"key {event.key_id} revoked before its registration arrived")
    row.revoked_at, row.effective_from, row.revoked_reason = event.occurred_at, event.effective_from, event.reason
    signed_after = await uow.session.execute(
        delete(Result).where(Result.key_id == event.key_id, Result.reported_at >= event.effective_from)
    )
    return signed_after.rowcount or 0
