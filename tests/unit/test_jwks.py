"""The issuer's key set (services/ingress/jwks.py) against a real JWKS served on 127.0.0.1
(tests/oidc_issuer.py), including an issuer that accepts and never answers and one that answers a
byte at a time: a cached set keeps serving at once, a cold one gives up within its deadline, and
concurrent or garbage requests cost the issuer one fetch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from oidc_issuer import JWKS_PATH, Issuer

from services.ingress.jwks import KeySet, KeysUnavailable, UnknownKey

DEADLINE = 1.0
MARGIN = 0.5  # what the event loop and a loaded CI machine may add to a deadline


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    provider = Issuer()
    yield provider
    provider.close()


def key_set(issuer: Issuer, **options: float) -> KeySet:
    return KeySet(issuer.url + JWKS_PATH, **{"deadline": DEADLINE, **options})


async def timed(call: asyncio.Future | object) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result: object = await call  # type: ignore[misc]
    except Exception as exc:
        result = exc
    return result, time.monotonic() - started


async def test_keys_are_fetched_once_and_served_from_the_cache(issuer: Issuer) -> None:
    keys = key_set(issuer)
    assert (await keys.key("rsa-1")).key_id == "rsa-1"
    assert (await keys.key("ec-1")).key_id == "ec-1"
    assert issuer.requests == 1


@pytest.mark.parametrize("sickness", ["silent", "trickle", "error"])
async def test_a_due_refresh_runs_in_the_background_while_the_cache_keeps_serving(
    issuer: Issuer, sickness: str
) -> None:
    keys = key_set(issuer, max_age=0.2)
    await keys.key("rsa-1")
    issuer.mode = sickness  # type: ignore[assignment]
    await asyncio.sleep(0.3)  # the cached set is due for a refresh now
    slowest = 0.0
    for _ in range(12):  # for longer than a refresh may take: before, during and after it fails
        key, took = await timed(keys.key("rsa-1"))
        assert not isinstance(key, Exception), key
        slowest = max(slowest, took)
        await asyncio.sleep(0.15)
    assert slowest < 0.05, f"a request waited {slowest:.3f} s for a sick issuer"
    assert 2 <= issuer.requests <= 3  # it did try to refresh, and then rested after the failure


@pytest.mark.parametrize("sickness", ["silent", "trickle"])
async def test_with_nothing_cached_a_hanging_issuer_costs_at_most_the_deadline(issuer: Issuer, sickness: str) -> None:
    """A trickle defeats a per-read timeout (a byte comes every 0.5 s); the deadline is overall."""
    issuer.mode = sickness  # type: ignore[assignment]
    keys = key_set(issuer)
    refused, took = await timed(keys.key("rsa-1"))
    assert isinstance(refused, KeysUnavailable) and f"within {DEADLINE:g} s" in str(refused)
    assert DEADLINE - 0.1 < took < DEADLINE + MARGIN
    # Right after a failed fetch the next caller is told at once, without another fetch.
    again, took = await timed(keys.key("rsa-1"))
    assert isinstance(again, KeysUnavailable) and took < 0.05 and issuer.requests == 1


async def test_an_issuer_that_recovers_is_used_again_after_the_pause(issuer: Issuer) -> None:
    issuer.mode = "error"
    keys = key_set(issuer, retry_after_failure=0.2)
    refused, _ = await timed(keys.key("rsa-1"))
    assert isinstance(refused, KeysUnavailable) and "HTTP 500" in str(refused)
    issuer.mode = "serve"
    await asyncio.sleep(0.25)
    assert (await keys.key("rsa-1")).key_id == "rsa-1"


async def test_concurrent_requests_share_one_fetch(issuer: Issuer) -> None:
    issuer.mode = "slow"  # every request arrives while the one fetch is on its way
    keys = key_set(issuer)
    waiting = [asyncio.create_task(keys.key("rsa-1")) for _ in range(25)]
    await asyncio.sleep(0.1)
    waiting += [asyncio.create_task(keys.key("ec-1")) for _ in range(25)]
    results = await asyncio.gather(*waiting)
    assert {k.key_id for k in results} == {"rsa-1", "ec-1"} and issuer.requests == 1


async def test_an_unknown_kid_fetches_again_at_most_once_per_interval(issuer: Issuer) -> None:
    keys = key_set(issuer, unknown_kid_every=0.3)
    await keys.key("rsa-1")
    await asyncio.sleep(0.35)
    for _ in range(20):  # garbage tokens: one fetch, then refused from the cache
        with pytest.raises(UnknownKey):
            await keys.key("no-such-key")
    assert issuer.requests == 2
    issuer.rotate("rsa-2")  # the issuer rotated: a token with the new kid is accepted after the interval
    with pytest.raises(UnknownKey):
        await keys.key("rsa-2")
    await asyncio.sleep(0.35)
    assert (await keys.key("rsa-2")).key_id == "rsa-2" and issuer.requests == 3


async def test_an_unknown_kid_waits_at_most_the_deadline_for_a_hanging_issuer(issuer: Issuer) -> None:
    keys = key_set(issuer, unknown_kid_every=0.0)
    await keys.key("rsa-1")
    issuer.mode = "silent"
    refused, took = await timed(keys.key("rotated-in"))
    # It cannot tell a new key from a forged one: "retry" (503), not "bad token" (401).
    assert isinstance(refused, KeysUnavailable) and took < DEADLINE + MARGIN
    key, took = await timed(keys.key("rsa-1"))  # the known keys still serve at once
    assert not isinstance(key, Exception) and took < 0.05


async def test_a_document_that_is_not_a_key_set_is_refused(issuer: Issuer) -> None:
    issuer.published.clear()  # {"keys": []}
    refused, _ = await timed(key_set(issuer).key("rsa-1"))
    assert isinstance(refused, KeysUnavailable) and "did not contain any keys" in str(refused)
