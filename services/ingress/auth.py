"""Who is calling. A bearer token is, in this order:

1. a bootstrap token from ``settings.api_token_digests`` (compared by sha256, so settings never
   hold a token in clear), so an installation has its first admin before any user exists;
2. a token an admin issued: the registry keeps only its sha256 and answers ``Authenticate``;
   positive answers are cached briefly so a busy client does not cost a round trip per request,
   and briefly enough that a revoked token stops working within two seconds;
3. when ``settings.oidc_issuer`` is set, a JWT from that OpenID Connect issuer, checked against the
   issuer's published keys (MedPerf itself authenticates with Auth0 RS256 JWTs).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from shared.commands import Authenticate, Command, Outcome
from shared.settings import Settings

log = logging.getLogger("medperf.ingress.auth")

HOW_TO_AUTHENTICATE = (
    "send 'Authorization: Bearer <token>'; an admin issues tokens (`medperf admin issue-token USER`), "
    "store yours with `medperf auth login --url URL`"
)
# Issued tokens are URL-safe base64 (no dots), so a three-part dotted token can only be a JWT.
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
SIGNING_ALGORITHMS = ["RS256", "ES256"]  # asymmetric only: the ingress holds no shared secret


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool


class AuthUnavailable(Exception):
    """The token cannot be checked right now (registry or identity provider unreachable)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


Ask = Callable[[Command], Awaitable[Outcome]]


class OidcVerifier:
    """Checks JWTs from one issuer: signature against its JWKS, ``iss``, ``aud`` when configured,
    ``exp`` and ``nbf``. Blocking (the JWKS is fetched with urllib), so callers use a thread."""

    def __init__(
        self,
        issuer: str,
        audience: str | None,
        jwks_url: str | None,
        user_claim: str,
        admins: set[str],
        leeway: float = 30.0,
    ) -> None:
        self.issuer, self.audience, self.user_claim = issuer, audience, user_claim
        self._admins = admins
        self._leeway = leeway
        url = jwks_url or f"{issuer.rstrip('/')}/.well-known/jwks.json"
        # The key set is cached for 5 minutes; an unknown kid refreshes it at most every 30 s,
        # so garbage tokens cannot make the ingress hammer the identity provider.
        self._keys = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> Caller | None:
        try:
            key = self._keys.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthUnavailable(f"cannot reach the identity provider's keys: {exc}") from exc
        except jwt.PyJWTError as exc:
            log.info("JWT refused: %s", exc)
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=SIGNING_ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            log.info("JWT refused: %s", exc)
            return None
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            log.info("JWT refused: no %r claim", self.user_claim)
            return None
        return Caller(user, user in self._admins)


class Authenticator:
    def __init__(
        self,
        static_digests: dict[str, str],
        admins: set[str],
        ask: Ask | None = None,
        oidc: OidcVerifier | None = None,
        cache_seconds: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``static_digests`` maps the sha256 hex of a bootstrap token to a user name; ``ask`` sends
        a command to its service (None: issued tokens are not accepted)."""
        if cache_seconds > 2.0:
            raise ValueError("a revoked token must stop working within 2 s: cache for at most 2 s")
        self._static = static_digests
        self._admins = admins
        self._ask = ask
        self._oidc = oidc
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Caller, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, ask: Ask | None = None) -> Authenticator:
        admins = set(settings.admins)
        oidc = None
        if settings.oidc_issuer:
            oidc = OidcVerifier(
                settings.oidc_issuer,
                settings.oidc_audience,
                settings.oidc_jwks_url,
                settings.oidc_user_claim,
                admins,
            )
        return cls(dict(settings.api_token_digests), admins, ask, oidc)

    def how_to(self) -> str:
        """What a refused caller should do, for the 401 answer."""
        if self._oidc is None:
            return HOW_TO_AUTHENTICATE
        return f"{HOW_TO_AUTHENTICATE}; or send a JWT issued by {self._oidc.issuer}"

    async def authenticate(self, token: str | None) -> Caller | None:
        """The caller holding ``token``, or None; raises AuthUnavailable when it cannot tell."""
        if not token:
            return None
        digest = token_digest(token)
        for known, user in self._static.items():
            if hmac.compare_digest(known, digest):
                return Caller(user, user in self._admins)
        if self._oidc is not None and JWT_SHAPE.match(token):
            return await asyncio.to_thread(self._oidc.verify, token)
        if self._ask is not None:
            return await self._issued(digest)
        return None

    async def _issued(self, digest: str) -> Caller | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            outcome = await self._ask(Authenticate(actor="ingress", token_sha256=digest))  # type: ignore[misc]
        except Exception as exc:  # no responder or timeout
            raise AuthUnavailable("the registry did not answer, so the token cannot be checked") from exc
        if not outcome.ok:
            self._cache.pop(digest, None)
            if outcome.code in (None, "unauthenticated", "not_found", "invalid", "forbidden"):
                return None
            raise AuthUnavailable(outcome.reason or "the registry cannot check tokens right now")
        data = outcome.data or {}
        name = data.get("user")
        if not isinstance(name, str) or not name:
            return None
        caller = Caller(name, bool(data.get("is_admin")) or name in self._admins)
        if len(self._cache) > 10_000:  # many distinct tokens: drop the expired entries
            self._cache = {d: entry for d, entry in self._cache.items() if entry[1] > now}
        self._cache[digest] = (caller, now + self._cache_seconds)
        return caller
