"""OpenID Connect JWTs through the real ingress (uvicorn, real NATS), with the issuer's JWKS served
over HTTP on 127.0.0.1 by tests/oidc_issuer.py: an email counts only when the issuer verified it,
and a sick issuer (never answering, or a byte at a time) neither slows down requests while its
keys are cached nor holds one up for longer than the deadline when they are not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from figures import record
from oidc_issuer import AUDIENCE, Issuer

from cli.stack import Stack
from shared.settings import Settings

ADMIN = "admin@hospital.example"
DEADLINE = 1.5  # MEDPERF_OIDC_JWKS_DEADLINE in these tests
MARGIN = 0.75  # what a loaded two-core machine may add to it


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    provider = Issuer()
    yield provider
    provider.close()


@asynccontextmanager
async def ingress(tmp_path: Path, nats_url: str, issuer: Issuer, **settings: float) -> AsyncIterator[str]:
    """The ingress alone (a JWT needs no other service to say who is calling: GET /me)."""
    config = Settings(
        nats_url=nats_url,
        state_dir=tmp_path,
        http_port=0,
        admins=[ADMIN],
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
        oidc_jwks_deadline=DEADLINE,
        **settings,
    )
    async with Stack(config, services=("ingress",)) as stack:
        assert stack.ingress is not None
        yield stack.ingress.url


async def me(url: str, token: str) -> tuple[httpx.Response, float]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
        started = time.monotonic()
        response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        return response, time.monotonic() - started


async def test_an_email_names_the_caller_only_when_the_issuer_verified_it(
    tmp_path: Path, nats_url: str, issuer: Issuer
) -> None:
    async with ingress(tmp_path, nats_url, issuer) as url:
        verified, _ = await me(url, issuer.token(email=ADMIN, email_verified=True))
        assert verified.status_code == 200 and verified.json() == {"user": ADMIN, "is_admin": True}
        for case in (False, None, "true"):
            refused, _ = await me(url, issuer.token(email=ADMIN, email_verified=case))
            assert refused.status_code == 401, f"email_verified={case!r}: {refused.text}"
            error = refused.json()["error"]
            assert f"'email_verified' is {case!r}, not true" in error and "Traceback" not in error, error
            assert refused.headers["www-authenticate"] == "Bearer"
        expired, _ = await me(url, issuer.token(exp=int(time.time()) - 3600))
        assert expired.status_code == 401 and "expired" in expired.json()["error"]


async def test_while_the_keys_are_cached_a_hanging_issuer_slows_no_request(
    tmp_path: Path, nats_url: str, issuer: Issuer
) -> None:
    async with ingress(tmp_path, nats_url, issuer, oidc_jwks_max_age=0.5) as url:
        first, _ = await me(url, issuer.token())
        assert first.status_code == 200, first.text
        issuer.mode = "silent"
        await asyncio.sleep(0.6)  # the cached keys are due for a refresh, which will hang
        took, ends = [], time.monotonic() + DEADLINE + 1.0
        while time.monotonic() < ends:  # before, during and after the refresh gives up
            response, seconds = await me(url, issuer.token())
            assert response.status_code == 200, response.text
            took.append(seconds)
        assert issuer.requests >= 2  # the refresh was tried, in the background
        assert max(took) < 0.5, f"a request with a valid JWT took {max(took):.2f} s while the issuer hung"
        record("hanging OIDC issuer", **{"warm cache: requests": len(took), "slowest (ms)": round(max(took) * 1000, 1)})


@pytest.mark.parametrize("sickness", ["silent", "trickle"])
async def test_with_nothing_cached_a_hanging_issuer_is_a_503_within_the_deadline(
    tmp_path: Path, nats_url: str, issuer: Issuer, sickness: str
) -> None:
    issuer.mode = sickness  # type: ignore[assignment]
    async with ingress(tmp_path, nats_url, issuer) as url:
        response, took = await me(url, issuer.token())
        assert response.status_code == 503, response.text
        assert "retry" in response.json()["error"]
        assert took < DEADLINE + MARGIN, f"the request waited {took:.2f} s for the issuer's keys"
        again, at_once = await me(url, issuer.token())  # just failed: answered at once
        assert again.status_code == 503 and at_once < 0.5
        record(
            "hanging OIDC issuer",
            **{f"cold cache, {sickness}: 503 after (s, deadline {DEADLINE})": round(took, 2)},
            **{f"cold cache, {sickness}: next 503 after (ms)": round(at_once * 1000, 1)},
        )
        issuer.mode = "serve"
        for _ in range(40):  # retrying succeeds once the issuer answers again
            response, _ = await me(url, issuer.token())
            if response.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert response.status_code == 200, response.text
