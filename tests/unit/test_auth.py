"""Who is calling: bootstrap tokens, tokens the registry issued (cached at most 2 s, so revocation
bites quickly), and JWTs from an OpenID Connect issuer checked against keys served by a real local
HTTP server."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.ingress.auth import Authenticator, AuthUnavailable, Caller, OidcVerifier, token_digest
from shared.commands import Authenticate, Command, Outcome
from shared.settings import Settings

AUDIENCE = "medperf-api"


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


class Issuer:
    """An identity provider: signing keys, and a JWKS served over HTTP on 127.0.0.1."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not published
        keys = [
            {**RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "kid": "rsa-1", "alg": "RS256", "use": "sig"},
            {**ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "kid": "ec-1", "alg": "ES256", "use": "sig"},
        ]
        body = json.dumps({"keys": keys}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, key: str = "rsa", kid: str | None = None, headers: dict | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.url, "aud": AUDIENCE, "email": "dana@hospital.example", "iat": now, "exp": now + 300}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        signer, algorithm, default_kid = {
            "rsa": (self.rsa, "RS256", "rsa-1"),
            "ec": (self.ec, "ES256", "ec-1"),
            "other": (self.other, "RS256", "rsa-1"),  # claims a published kid, signed by another key
        }[key]
        return jwt.encode(payload, signer, algorithm=algorithm, headers={"kid": kid or default_kid, **(headers or {})})


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    provider = Issuer()
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


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
    by_subject = _auth(issuer, oidc_user_claim="sub")
    assert await by_subject.authenticate(issuer.token(sub="auth0|42")) == Caller("auth0|42", False)


def test_a_refused_caller_is_told_how_to_get_a_token(issuer: Issuer) -> None:
    assert "medperf admin issue-token" in Authenticator({}, set()).how_to()
    assert f"a JWT issued by {issuer.url}" in _auth(issuer).how_to()


async def test_without_a_configured_audience_any_audience_is_accepted(issuer: Issuer) -> None:
    assert await _auth(issuer, audience=None).authenticate(issuer.token(aud="elsewhere")) is not None


@pytest.mark.parametrize(
    ("case", "token_args"),
    [
        ("wrong issuer", {"iss": "https://evil.example"}),
        ("wrong audience", {"aud": "another-api"}),
        ("no audience", {"aud": None}),
        ("expired", {"exp": int(time.time()) - 3600}),
        ("not yet valid", {"nbf": int(time.time()) + 3600}),
        ("no expiry", {"exp": None}),
        ("bad signature", {"key": "other"}),
        ("unknown kid", {"kid": "rotated-away"}),
        ("no user claim", {"email": None}),
    ],
)
async def test_a_jwt_that_fails_any_check_is_refused(issuer: Issuer, case: str, token_args: dict) -> None:
    assert await _auth(issuer).authenticate(issuer.token(**token_args)) is None, case


async def test_symmetric_and_unsigned_jwts_are_refused(issuer: Issuer) -> None:
    # Only RS256 and ES256 are accepted: an HMAC token would be verifiable with anything an
    # attacker can guess, and "none" is not a signature at all.
    claims = {"iss": issuer.url, "aud": AUDIENCE, "email": "mallory@example", "exp": int(time.time()) + 300}
    hmac_signed = jwt.encode(claims, "a-guessable-secret-of-32-bytes!!", algorithm="HS256", headers={"kid": "rsa-1"})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})
    assert await _auth(issuer).authenticate(hmac_signed) is None
    assert await _auth(issuer).authenticate(unsigned) is None


async def test_an_unreachable_identity_provider_is_reported_not_mistaken_for_a_bad_token(issuer: Issuer) -> None:
    verifier = OidcVerifier("http://127.0.0.1:9", None, None, "email", set())  # discard port: refused
    auth = Authenticator({}, set(), oidc=verifier)
    with pytest.raises(AuthUnavailable):
        await auth.authenticate(issuer.token())


async def test_jwts_are_not_accepted_when_no_issuer_is_configured(issuer: Issuer) -> None:
    registry = FakeRegistry()
    assert await Authenticator({}, set(), registry).authenticate(issuer.token()) is None
    assert registry.asked == 1  # it was only looked up as an issued token, and is unknown there
