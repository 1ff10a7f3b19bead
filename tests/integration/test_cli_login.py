"""`medperf auth login` through the OpenID Connect issuer's device code (RFC 8628), for real: the
issuer (tests/oidc_issuer.py) serves discovery, device codes and tokens over HTTP; the ingress
verifies the JWT the CLI stored; `auth status` names the user; `auth logout` forgets the token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oidc_issuer import AUDIENCE, Issuer

from cli.main import main
from cli.stack import Stack
from shared.settings import Settings


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.close()


def approve_when_asked(issuer: Issuer) -> None:
    """The user reads the code the CLI printed and confirms it in a browser."""
    deadline = time.monotonic() + 20
    while not issuer.devices:
        assert time.monotonic() < deadline, "the CLI never asked for a device code"
        time.sleep(0.02)
    [device] = issuer.devices.values()
    while issuer.polls == 0:  # the CLI waits for us before we approve
        time.sleep(0.02)
    issuer.approve(device["user_code"])


async def test_device_code_login_status_and_logout(
    issuer: Issuer, tmp_path: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDPERF_CONFIG_DIR", str(tmp_path / "config"))
    for name in ("MEDPERF_URL", "MEDPERF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        nats_url=nats_url, state_dir=tmp_path, http_port=0, oidc_issuer=issuer.url, oidc_audience=AUDIENCE
    )
    async with Stack(settings) as stack:
        assert stack.ingress is not None
        line = (
            f"profile create hospital --url {stack.ingress.url} --oidc-issuer {issuer.url} --client-id cli --activate"
        )
        assert main(line.split()) == 0

        login = asyncio.create_task(asyncio.to_thread(main, ["auth", "login"]))
        await asyncio.to_thread(approve_when_asked, issuer)
        assert await login == 0
        out = capsys.readouterr().out
        assert f"Open {issuer.url}/activate?user_code=" in out and "logged in" in out
        assert issuer.polls >= 2  # it polled while the approval was pending

        assert await asyncio.to_thread(main, ["auth", "status", "--format", "json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["user"] == "dana@hospital.example" and status["profile"] == "hospital"

        assert main(["auth", "logout"]) == 0
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["auth", "status"]) == 1
        assert capsys.readouterr().err.startswith("error: not logged in")
