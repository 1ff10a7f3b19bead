"""Who is calling: bootstrap tokens, tokens the registry issued (cached at most 2 s, so revocation
bites quickly), and JWTs from an OpenID Connect issuer checked against keys served by a real local
HTTP server (tests/oidc_issuer.py), whose user claim counts only when the issuer asserts it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from oidc_issuer import AUDIENCE, Issuer

from services.ingress.auth import (
    Authenticator,
    AuthUnavailable,
    Caller,
    OidcVerifier,
    TokenRefused,
    token_digest,
)
from services.ingress.jwks import KeySet
from shared.commands import Authenticate, Command, Outcome
from shared.settings import Settings

# --- bootstrap and issued tokens ------------------------------------------------------------------


class FakeRegistry:
    """Answers Authenticate like the registry: a token is known until it is revoked."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[str, bool]] = {}
        self.asked = 0
        self.down = False

    async def __call__(self, command: Command) -> Outcome:
        assert isinstance(command, Authenticate) and command.actor == "ingress"
        self.asked += 1
        if self.down:
            raise TimeoutError("no responders")
        if command.token_sha256 not in self.tokens:
            return Outcome.refused("unauthenticated", "unknown or revoked token")
        user, is_admin = self.tokens[command.token_sha256]
        return Outcome.accepted(data={"user": user, "is_admin": is_admin})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_bootstrap_tokens_are_compared_by_hash_and_admins_come_from_settings() -> None:
    auth = Authenticator.from_settings(
        Settings(api_token_digests={token_digest("t-root"): "root", token_digest("t-bob"): "bob"}, admins=["root"])
    )
    assert await auth.authenticate("t-root") == Caller("root", True)
    assert await auth.authenticate("t-bob") == Caller("bob", False)
    assert await auth.authenticate("t-eve") is None
    assert await auth.authenticate("") is None
    assert await auth.authenticate(None) is None


async def test_issued_tokens_are_asked_of_the_registry_and_stop_working_within_two_seconds() -> None:
    registry, clock = FakeRegistry(), Clock()
    auth = Authenticator({}, {"carol"}, registry, cache_seconds=1.5, clock=clock)
    registry.tokens[token_digest("mpf_alice")] = ("alice", False)
    registry.tokens[token_digest("mpf_carol")] = ("carol", False)

    assert await auth.authenticate("mpf_alice") == Caller("alice", False)
    assert await auth.authenticate("mpf_alice") == Caller("alice", False)
    assert registry.asked == 1  # the second request was answered from the cache
    assert await auth.authenticate("mpf_carol") == Caller("carol", True)  # settings.admins counts too

    del registry.tokens[token_digest("mpf_alice")]  # revoked
    clock.now += 1.0
    assert await auth.authenticate("mpf_alice") == Caller("alice", False)  # still cached, for < 2 s
    clock.now += 0.6
    assert await auth.authenticate("mpf_alice") is None
    assert await auth.authenticate("mpf_unknown") is None


async def test_an_unreachable_registry_is_reported_not_mistaken_for_a_bad_token() -> None:
    registry = FakeRegistry()
    registry.down = True
    with pytest.raises(AuthUnavailable):
        await Authenticator({}, set(), registry).authenticate("mpf_x")


def test_a_cache_longer_than_two_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="2 s"):
        Authenticator({}, set(), FakeRegistry(), cache_seconds=5)


# --- OpenID Connect -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    provider = Issuer()
    yield provider
    provider.close()


def _auth(issuer: Issuer, audience: str | None = AUDIENCE, **settings: Any) -> Authenticator:
    return Authenticator.from_settings(
        Settings(oidc_issuer=issuer.url, oidc_audience=audience, admins=["admin@hospital.example"], **settings)
    )


async def test_a_valid_jwt_names_the_user_from_the_configured_claim(issuer: Issuer) -> None:
    auth = _auth(issuer)
    assert await auth.authenticate(issuer.token()) == Caller("dana@hospital.example", False)
    assert await auth.authenticate(issuer.token(key="ec")) == Caller("dana@hospital.example", False)
    assert await auth.authenticate(issuer.token(email="admin@hospital.example")) == Caller(
        "admin@hospital.example", True
    )
    # A subject is the issuer's own identifier: nothing to verify, so no condition by default.
    by_subject = _auth(issuer, oidc_user_claim="sub")
    assert await by_subject.authenticate(issuer.token(sub="auth0|42", email_verified=None)) == Caller("auth0|42", False)


@pytest.mark.parametrize(
    ("case", "verified"),
    [("false", False), ("missing", None), ("a string", "true"), ("a number", 1)],
)
async def test_an_email_counts_only_when_the_issuer_asserts_it_was_verified(
    issuer: Issuer, case: str, verified: Any
) -> None:
    """Anyone can sign up at an issuer with an admin's address; only email_verified=true ties it to them."""
    token = issuer.token(email="admin@hospital.example", email_verified=verified)
    with pytest.raises(TokenRefused, match=r"'email_verified' is .*, not true") as refused:
        await _auth(issuer).authenticate(token)
    assert "'email'" in str(refused.value), case


async def test_the_condition_on_the_user_claim_is_configurable(issuer: Issuer) -> None:
    unverified = issuer.token(email_verified=False, staff=True)
    # Another claim the issuer sets, e.g. for an issuer that never sends email_verified.
    custom = _auth(issuer, oidc_verified_claim="staff")
    assert await custom.authenticate(unverified) == Caller("dana@hospital.example", False)
    with pytest.raises(TokenRefused, match="'staff' is None"):
        await custom.authenticate(issuer.token(email_verified=True))
    # Empty: no condition (the operator vouches that the issuer verifies every email).
    assert await _auth(issuer, oidc_verified_claim="").authenticate(unverified) is not None
    assert Settings(oidc_user_claim="phone_number").oidc_required_claim() == "phone_number_verified"
    assert Settings(oidc_user_claim="preferred_username").oidc_required_claim() is None


def test_a_refused_caller_is_told_how_to_get_a_token(issuer: Issuer) -> None:
    assert "medperf admin issue-token" in Authenticator({}, set()).how_to()
    assert f"a JWT issued by {issuer.url}" in _auth(issuer).how_to()


async def test_without_a_configured_audience_any_audience_is_accepted(issuer: Issuer) -> None:
    assert await _auth(issuer, audience=None).authenticate(issuer.token(aud="elsewhere")) is not None


@pytest.mark.parametrize(
    ("case", "token_args", "why"),
    [
        ("wrong issuer", {"iss": "https://evil.example"}, "Invalid issuer"),
        ("wrong audience", {"aud": "another-api"}, "Audience"),
        ("no audience", {"aud": None}, "aud"),
        ("expired", {"exp": int(time.time()) - 3600}, "expired"),
        ("not yet valid", {"nbf": int(time.time()) + 3600}, "not yet valid"),
        ("no expiry", {"exp": None}, "exp"),
        ("bad signature", {"key": "other"}, "Signature verification failed"),
        ("unknown kid", {"kid": "rotated-away"}, "does not publish"),
        ("no user claim", {"email": None}, "no 'email' claim"),
    ],
)
async def test_a_jwt_that_fails_any_check_is_refused_saying_why(
    issuer: Issuer, case: str, token_args: dict, why: str
) -> None:
    with pytest.raises(TokenRefused, match=why):
        await _auth(issuer).authenticate(issuer.token(**token_args))


async def test_symmetric_and_unsigned_jwts_are_refused_without_fetching_keys(issuer: Issuer) -> None:
    # Only RS256 and ES256 are accepted: an HMAC token would be verifiable with anything an
    # attacker can guess, and "none" is not a signature at all.
    claims = {"iss": issuer.url, "aud": AUDIENCE, "email": "mallory@example", "exp": int(time.time()) + 300}
    hmac_signed = jwt.encode(claims, "a-guessable-secret-of-32-bytes!!", algorithm="HS256", headers={"kid": "rsa-1"})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})
    asked = issuer.requests
    for token in (hmac_signed, unsigned):
        with pytest.raises(TokenRefused, match=r"only .*RS256.* accepted"):
            await _auth(issuer).authenticate(token)
    assert issuer.requests == asked


async def test_a_jwt_that_does_not_name_its_key_is_refused(issuer: Issuer) -> None:
    claims = {"iss": issuer.url, "aud": AUDIENCE, "email": "dana@hospital.example", "exp": int(time.time()) + 300}
    with pytest.raises(TokenRefused, match="no 'kid'"):
        await _auth(issuer).authenticate(jwt.encode(claims, issuer.rsa, algorithm="RS256"))


async def test_an_unreachable_identity_provider_is_reported_not_mistaken_for_a_bad_token(issuer: Issuer) -> None:
    keys = KeySet("http://127.0.0.1:9/.well-known/jwks.json")  # the discard port: refused at once
    auth = Authenticator({}, set(), oidc=OidcVerifier("http://127.0.0.1:9", None, keys, "email", None, set()))
    started = time.monotonic()
    with pytest.raises(AuthUnavailable, match="cannot fetch the identity provider's keys"):
        await auth.authenticate(issuer.token())
    assert time.monotonic() - started < 1.0


async def test_jwts_are_not_accepted_when_no_issuer_is_configured(issuer: Issuer) -> None:
    registry = FakeRegistry()
    assert await Authenticator({}, set(), registry).authenticate(issuer.token()) is None
    assert registry.asked == 1  # it was only looked up as an issued token, and is unknown there
