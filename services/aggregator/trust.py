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

import asyncio
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from nacl.signing import VerifyKey
from sqlalchemy import delete, select

from services.aggregator.store import Result, SiteKeyInfo
from shared.db import UnitOfWork
from shared.events import ResultReported, SiteKeyRegistered, SiteKeyRevoked
from shared.messaging import NotYet, PermanentFailure
from shared.signing import load_public_key, verify_published, verify_result


@dataclass(frozen=True)
class KnownKey:
    key_id: str
    site: str
    public_key: VerifyKey
    effective_from: datetime | None = None  # revoked from then on; None: trusted
    reason: str = ""


def verdict(event: ResultReported, key: KnownKey | None, signature_ok: bool | None = None) -> Exception | None:
    """Why ``event`` must not be counted (None: it may). ``NotYet`` for a key not heard of: the
    registry's event travels on another stream and may come later; after the retries the result
    is dead-lettered with this reason. ``signature_ok``: the signature was checked against this
    key already (``Signatures``); None checks it here."""
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
    if signature_ok is None:
        signature_ok = verify_result(key.public_key, event)
    if not signature_ok:
        return PermanentFailure(
            f"bad signature on result {event.event_id} from site {event.site!r} (key {key.key_id}): a field was "
            "changed after signing, or another key signed it"
        )
    return None


class Signatures:
    """Checks a batch's signatures in a worker process, before the transaction that applies it.

    Verifying is most of a result's cost (~105 us of Ed25519 per result on this VM). In a worker
    process it runs on another core, beside the event loop's work on the next batch (the database,
    acks); a thread would not do: each verification hands the GIL back and forth with the busy
    loop, which cost more CPU than it saved (measured). Only the signature is checked here; who
    the key belongs to and whether it was revoked are decided in the applying transaction
    (``verdict``), from what the database says then. A key id names one public key for good (its
    hash), so the keys learnt here are kept."""

    def __init__(self) -> None:
        self._keys: dict[str, str] = {}
        self._pool: ProcessPoolExecutor | None = None

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, cancel_futures=True)

    def _open(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Spawned, not forked: a fork of a process running an event loop and threads is unsafe.
            # Started at the first signed result: a service that never sees one needs no worker.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def check(self, events: list[ResultReported], payloads: list[bytes], uow: UnitOfWork) -> dict[int, bool]:
        """Position in ``events`` -> whether that result's signature verifies with its named key
        (by position: two messages may claim one event id); results whose key is not known yet are
        left out, for the applying transaction to decide on. ``payloads``: the events as they
        arrived, which is what the worker is sent."""
        unknown = {e.key_id for e in events if e.key_id and e.key_id not in self._keys}
        if unknown:
            async with uow:
                rows = await uow.session.execute(
                    select(SiteKeyInfo.key_id, SiteKeyInfo.public_key).where(SiteKeyInfo.key_id.in_(unknown))
                )
                self._keys.update(dict(rows.all()))
        signed = [i for i, e in enumerate(events) if e.key_id in self._keys and e.signature]
        if not signed:
            return {}
        work = [(self._keys[events[i].key_id], payloads[i]) for i in signed]  # type: ignore[index]
        try:
            valid = await asyncio.get_running_loop().run_in_executor(self._open(), verify_published, work)
        except BrokenProcessPool:  # the worker died (e.g. out of memory): a new one for the retry
            self._pool = None
            raise
        return dict(zip(signed, valid, strict=True))


async def known_keys(uow: UnitOfWork, key_ids: Iterable[str | None]) -> dict[str, KnownKey]:
    """The batch's keys in one query (plain columns: a batch names hundreds of keys)."""
    wanted = {k for k in key_ids if k}
    if not wanted:
        return {}
    k = SiteKeyInfo
    rows = await uow.session.execute(
        select(k.key_id, k.site, k.public_key, k.effective_from, k.revoked_reason).where(k.key_id.in_(wanted))
    )
    return {
        key_id: KnownKey(key_id, site, load_public_key(public_key), effective_from, reason)
        for key_id, site, public_key, effective_from, reason in rows
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
