"""The OpenID Connect issuer's signing keys (its JWKS), cached so that a slow issuer does not make
requests slow.

- A fetch has one deadline for the whole exchange (connect, headers, every byte of the body), so
  an issuer that accepts and never answers, or answers a byte every few seconds, costs at most the
  deadline; a per-read timeout would wait forever on the trickle.
- Once a key set is cached it keeps serving: when it is due for a refresh, the refresh runs in the
  background and requests carry on with the cached keys, whatever the issuer does meanwhile.
- Only a token whose ``kid`` is not in the cached set waits for a fetch (the issuer may have rotated
  its keys), at most the deadline, and such fetches happen at most once per ``unknown_kid_every``
  seconds, so garbage tokens cannot make the ingress hammer the issuer.
- Concurrent requests share one fetch. After a failed fetch none is tried for ``retry_after_failure``
  seconds: with nothing cached, callers are told at once meanwhile (the ingress answers 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable

import httpx
import jwt

log = logging.getLogger("medperf.ingress.jwks")

MAX_BODY = 1 << 20  # a JWKS is a few kB; more is not a key set


class KeysUnavailable(Exception):
    """The key set cannot be had now: nothing usable is cached and the issuer did not deliver."""


class RefusedByIssuer(Exception):
    """The identity provider answered with an HTTP error status."""


class UnknownKey(Exception):
    """The issuer's current key set has no signing key with this ``kid``."""


def parse_key_set(body: bytes) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document by ``kid`` (keys for encryption, or without a kid, are
    of no use for checking a JWT's signature)."""
    keys = jwt.PyJWKSet.from_dict(json.loads(body)).keys
    signing = {k.key_id: k for k in keys if k.key_id and k.public_key_use in ("sig", None)}
    if not signing:
        raise ValueError("the JWKS has no signing key with a kid")
    return signing


class KeySet:
    """The keys at ``url``, fetched with httpx and cached (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        deadline: float = 3.0,
        max_age: float = 300.0,
        unknown_kid_every: float = 30.0,
        retry_after_failure: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.deadline, self.max_age = deadline, max_age
        self.unknown_kid_every, self.retry_after_failure = unknown_kid_every, retry_after_failure
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = -math.inf  # the last fetch that succeeded
        self._attempted_at = -math.inf  # the last fetch started
        self._failed_at = -math.inf  # the last fetch that failed
        self._failure: str | None = None  # why the last fetch failed, while it is the latest word
        self._fetching: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The signing key ``kid``; raises UnknownKey, or KeysUnavailable when it cannot tell."""
        now = self._clock()
        if self._keys is None:
            await self._cold(now)
        elif now - self._fetched_at >= self.max_age and self._resting(now) is None:
            self._start()  # due: refresh in the background, keep answering from the cache
        assert self._keys is not None
        if kid in self._keys:
            return self._keys[kid]
        if now - self._attempted_at < self.unknown_kid_every:
            raise UnknownKey(kid)
        if (failure := self._resting(now)) is not None:  # a new key or a forged kid: it cannot tell now
            raise KeysUnavailable(failure)
        await self._wait()  # the issuer may have rotated its keys: look once more
        if kid in self._keys:
            return self._keys[kid]
        if self._failure is not None:  # a new key or a forged kid: it cannot tell now
            raise KeysUnavailable(self._failure)
        raise UnknownKey(kid)

    async def _cold(self, now: float) -> None:
        """Nothing cached yet: fetch, unless a fetch just failed (then say so at once)."""
        if (failure := self._resting(now)) is not None:
            raise KeysUnavailable(failure)
        await self._wait()

    def _resting(self, now: float) -> str | None:
        """Why the last fetch failed, if it failed less than ``retry_after_failure`` seconds ago."""
        return self._failure if now - self._failed_at < self.retry_after_failure else None

    async def _wait(self) -> None:
        """Join the fetch in flight (or start one); at most the deadline, since the fetch has it."""
        task = self._start()
        # shield: a request that goes away must not cancel a fetch other requests are waiting for.
        await asyncio.shield(task)
        if self._keys is None:
            raise KeysUnavailable(self._failure or "the identity provider's keys could not be fetched")

    def _start(self) -> asyncio.Task[None]:
        if self._fetching is None or self._fetching.done():
            self._attempted_at = self._clock()
            self._fetching = asyncio.get_running_loop().create_task(self._fetch(), name="jwks-fetch")
        return self._fetching

    async def _fetch(self) -> None:
        """One fetch within the deadline; a failure is recorded, never raised (the cache stays)."""
        try:
            async with asyncio.timeout(self.deadline):
                keys = parse_key_set(await self._download())
        except Exception as exc:  # slow, unreachable, an HTTP error or not a key set: same outcome
            why = _describe(exc, self.deadline)
            self._failure = f"cannot fetch the identity provider's keys from {self.url}: {why}"
            self._failed_at = self._clock()
            log.warning("%s", self._failure)
            return
        self._keys, self._fetched_at, self._failure = keys, self._clock(), None

    async def _download(self) -> bytes:
        status, body = await fetch("GET", self.url, MAX_BODY, headers={"Accept": "application/json"})
        if status >= 400:
            raise RefusedByIssuer(f"HTTP {status}")
        return body


async def fetch(method: str, url: str, max_bytes: int, **kwargs: object) -> tuple[int, bytes]:
    """One call to the identity provider: its status and body, the body at most ``max_bytes``.
    Callers bound the whole exchange with ``asyncio.timeout`` (a per-read timeout would wait forever
    on an issuer that answers a byte at a time); this one's timeout only stops a silent connect."""
    async with (
        httpx.AsyncClient(timeout=30.0, follow_redirects=False) as client,
        client.stream(method, url, **kwargs) as response,  # type: ignore[arg-type]
    ):
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise ValueError(f"the answer is larger than {max_bytes} bytes")
        return response.status_code, bytes(body)


def _describe(exc: Exception, deadline: float) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"no complete answer within {deadline:g} s"
    if isinstance(exc, RefusedByIssuer):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
