"""Who is calling. A bearer token is, in this order:

1. a bootstrap token from ``settings.api_token_digests`` (compared by sha256, so settings never
   hold a token in clear), so an installation has its first admin before any user exists;
2. a token an admin issued: the registry keeps only its sha256 and answers ``Authenticate``;
   positive answers are cached briefly so a busy client does not cost a round trip per request,
   and briefly enough that a revoked token stops working within two seconds;
3. when ``settings.oidc_issuer`` is set, a JWT from that OpenID Connect issuer, checked against the
   issuer's published keys (MedPerf itself authenticates with Auth0 RS256 JWTs), whose user claim
   counts only when the issuer asserts it (``email_verified`` for an email).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from services.ingress.jwks import KeySet, KeysUnavailable, UnknownKey
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


class TokenRefused(Exception):
    """A token that was checked and failed a check; the message says which (the 401 repeats it)."""


class OidcVerifier:
    """Checks JWTs from one issuer: signature against its published keys (``KeySet``: cached, with a
    deadline), ``iss``, ``aud`` when configured, ``exp`` and ``nbf``; then the user claim, which
    counts only when the issuer asserts it (``verified_claim`` is true, e.g. ``email_verified``)."""

    def __init__(
        self,
        issuer: str,
        audience: str | None,
        keys: KeySet,
        user_claim: str,
        verified_claim: str | None,
        admins: set[str],
        leeway: float = 30.0,
    ) -> None:
        self.issuer, self.audience, self.keys = issuer, audience, keys
        self.user_claim, self.verified_claim = user_claim, verified_claim
        self._admins = admins
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings, admins: set[str]) -> OidcVerifier:
        assert settings.oidc_issuer
        url = settings.oidc_jwks_url or f"{settings.oidc_issuer.rstrip('/')}/.well-known/jwks.json"
        keys = KeySet(url, deadline=settings.oidc_jwks_deadline, max_age=settings.oidc_jwks_max_age)
        return cls(
            settings.oidc_issuer,
            settings.oidc_audience,
            keys,
            settings.oidc_user_claim,
            settings.oidc_required_claim(),
            admins,
        )

    async def verify(self, token: str) -> Caller:
        """The caller the JWT names; raises TokenRefused, or AuthUnavailable when the issuer's keys
        cannot be had now."""
        claims = await self._claims(token)
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            raise TokenRefused(f"the JWT has no {self.user_claim!r} claim to name its user")
        if self.verified_claim and claims.get(self.verified_claim) is not True:
            # An unverified email is a name anyone can type into the issuer's sign-up form.
            raise TokenRefused(
                f"the issuer does not assert the JWT's {self.user_claim!r} claim: "
                f"{self.verified_claim!r} is {claims.get(self.verified_claim)!r}, not true"
            )
        return Caller(user, user in self._admins)

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the JWT cannot be read: {exc}") from exc
        if header.get("alg") not in SIGNING_ALGORITHMS:  # before any fetch: "none" and HS256 never count
            raise TokenRefused(f"the JWT is signed with {header.get('alg')!r}; only {SIGNING_ALGORITHMS} are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRefused("the JWT does not name its signing key (no 'kid' in its header)")
        try:
            key = await self.keys.key(kid)
        except UnknownKey as exc:
            raise TokenRefused(f"the JWT is signed with a key ({kid!r}) that {self.issuer} does not publish") from exc
        except KeysUnavailable as exc:
            raise AuthUnavailable(str(exc)) from exc
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=SIGNING_ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the JWT was refused: {exc}") from exc


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
        oidc = OidcVerifier.from_settings(settings, admins) if settings.oidc_issuer else None
        return cls(dict(settings.api_token_digests), admins, ask, oidc)

    def how_to(self) -> str:
        """What a refused caller should do, for the 401 answer."""
        if self._oidc is None:
            return HOW_TO_AUTHENTICATE
        return f"{HOW_TO_AUTHENTICATE}; or send a JWT issued by {self._oidc.issuer}"

    async def authenticate(self, token: str | None) -> Caller | None:
        """The caller holding ``token``, or None; raises TokenRefused for a JWT that fails a check
        (saying which), and AuthUnavailable when it cannot tell."""
        if not token:
            return None
        digest = token_digest(token)
        for known, user in self._static.items():
            if hmac.compare_digest(known, digest):
                return Caller(user, user in self._admins)
        if self._oidc is not None and JWT_SHAPE.match(token):
            return await self._oidc.verify(token)
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
