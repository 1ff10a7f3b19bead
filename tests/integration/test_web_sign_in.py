"""Signing in to the web app at the federation's identity provider, in Chromium: the page shows a
code, the person confirms it at the issuer (tests/oidc_issuer.py, playing Auth0), and the page is
signed in as the issuer's user; a code the issuer refuses says so. Without an identity provider the
page offers only the API token, and the device routes answer 404 naming the alternative."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from oidc_issuer import AUDIENCE, Issuer

from cli.stack import Stack
from shared.settings import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("MEDPERF_REQUIRE_ENGINE"):
            pytest.fail("Debian's chromium is missing: scripts/setup installs it")
        pytest.skip("Debian's chromium is missing: scripts/setup installs it")
    return CHROMIUM


async def test_the_page_signs_in_at_the_identity_provider(tmp_path: Path, nats_url: str) -> None:
    from playwright.async_api import async_playwright, expect

    issuer = Issuer()
    settings = Settings(
        nats_url=nats_url, state_dir=tmp_path, http_port=0, oidc_issuer=issuer.url, oidc_audience=AUDIENCE
    )
    try:
        async with Stack(settings) as stack, async_playwright() as pw:
            assert stack.ingress is not None
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = await pw.chromium.launch(executable_path=_chromium(), args=args, headless=True)
            page = await browser.new_page()
            await page.goto(f"{stack.ingress.url}/app")
            await page.get_by_role("button", name="Sign in at 127.0.0.1").click()
            shown = page.get_by_test_id("device-code")
            await expect(shown).to_contain_text("confirm the code")
            [device] = issuer.devices.values()
            assert device["user_code"] in await shown.inner_text()
            assert device["client_id"] == "medperf-web"
            issuer.approve(device["user_code"], email="dana@hospital.example")
            await expect(page.get_by_test_id("who")).to_have_text("dana@hospital.example")

            # A code the issuer no longer knows: the page says why, and stays signed out.
            await page.get_by_role("button", name="Sign out").click()
            await page.get_by_role("button", name="Sign in at 127.0.0.1").click()
            await expect(page.get_by_test_id("device-code")).to_be_visible()
            issuer.devices.clear()
            await expect(page.get_by_role("alert")).to_contain_text("sign-in failed: invalid_grant")
            await browser.close()
    finally:
        issuer.close()


async def test_without_an_identity_provider_the_device_routes_say_what_to_use(tmp_path: Path, nats_url: str) -> None:
    settings = Settings(nats_url=nats_url, state_dir=tmp_path, http_port=0)
    async with Stack(settings) as stack, httpx.AsyncClient(base_url=stack.ingress.url) as http:  # type: ignore[union-attr]
        assert (await http.get("/app/sign-in")).json() == {"oidc_issuer": None}
        refused = await http.post("/app/sign-in/device")
        assert refused.status_code == 404 and "API token" in refused.json()["error"]
        too_long = await http.post("/app/sign-in/token", json={"device_code": "x" * 5000})
        assert too_long.status_code == 422 and too_long.json()["fields"][0]["field"] == "device_code"


async def test_a_slow_or_oversized_identity_provider_costs_the_sign_in_its_deadline(
    tmp_path: Path, nats_url: str
) -> None:
    """A trickling issuer is cut at the deadline for the whole exchange (not per read, which a byte
    every half second would never reach), and an answer past 64 KiB is not read: 503, saying why."""
    issuer = Issuer()
    options = {"oidc_issuer": issuer.url, "oidc_audience": AUDIENCE, "oidc_jwks_deadline": 1.0}
    settings = Settings(nats_url=nats_url, state_dir=tmp_path, http_port=0, **options)
    try:
        async with Stack(settings) as stack, httpx.AsyncClient(base_url=stack.ingress.url, timeout=30) as http:  # type: ignore[union-attr]
            issuer.device_mode = "trickle"
            slow = await http.post("/app/sign-in/device")
            assert slow.status_code == 503 and "no complete answer within 1 s" in slow.json()["error"]
            issuer.device_mode = "huge"
            huge = await http.post("/app/sign-in/device")
            assert huge.status_code == 503 and "larger than 65536 bytes" in huge.json()["error"]
            issuer.device_mode = "serve"
            assert "user_code" in (await http.post("/app/sign-in/device")).json()
    finally:
        issuer.close()
