"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright's
Python package through ``executable_path``): an admin logs in, watches a model's association
request arrive in the live feed, approves it with a click, watches three sites run it, sees the
leaderboard (table and chart) change, and finds out why another model's job failed.

Screenshots of each step are saved under tests/artifacts/console/ (the path is printed)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sites import USERS, Federation, model, site_settings
from waiting import eventually

from cli.client import Client
from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.settings import Settings

pytestmark = pytest.mark.engine
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "console"
SITES = ("site-a", "site-b", "site-c")


@asynccontextmanager
async def three_sites(tmp_path: Path, image: str) -> AsyncIterator[tuple[Federation, str]]:
    settings = Settings(
        state_dir=tmp_path / "state",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    sites = []
    for number, name in enumerate(SITES, start=2):
        # These sites share their log tails, so the console can show what a crashing model printed.
        site = site_settings(tmp_path / name, heartbeat_seconds=0.5, share_log_tails=True)
        # Each hospital's own data: the registry refuses two operational datasets with one content.
        (site.datasets[0].data_path / "case1.txt").write_text(f"{number}\n")
        sites.append(site.model_copy(update={"name": name, "owner": f"owner-{name}"}))
    async with Stack(settings, sites=sites) as stack:
        assert stack.ingress and stack.settings.nats_url
        clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        try:
            fed = Federation(stack.settings.nats_url, clients, image, sites[0], stack.hosts["site-site-a"].uow)
            yield fed, stack.ingress.url
        finally:
            for client in clients.values():
                client.close()


async def join_all(fed: Federation) -> None:
    """The benchmark approved and every site's dataset approved by the committee."""
    await fed.join()  # approves whatever dataset requests have arrived by then: on a quiet machine, all

    async def all_approved() -> bool:
        for item in await fed.call("committee", "associations", fed.benchmark_id, kind="dataset", status="PENDING"):
            await fed.call("committee", "decide_association", fed.benchmark_id, "dataset", item["component_id"], True)
        approved = await fed.call("committee", "associations", fed.benchmark_id, kind="dataset", status="APPROVED")
        return len(approved) == len(SITES)

    await eventually(all_approved, "every site's dataset approved", timeout=60, interval=0.2)


async def request_model(fed: Federation, name: str, script: str) -> int:
    """A model owner registers a model and asks to join; nobody approves it yet."""
    spec = {"name": name, "spec": model(fed.image, script), "state": "OPERATION"}
    container = (await fed.call("modeler", "post", "/containers", spec))["id"]
    body = {"name": name, "container_id": container, "state": "OPERATION"}
    model_id = (await fed.call("modeler", "post", "/models", body))["id"]
    report = await fed.signed_test("modeler", "model", model_id)
    request = {"kind": "model", "component_id": model_id, "compatibility": report}
    for _ in range(100):  # the approvals service learns of the model from an event
        try:
            await fed.call("modeler", "post", f"/benchmarks/{fed.benchmark_id}/associations", request)
            return model_id
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError("the association request was never accepted")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup installs it)")
async def test_an_admin_approves_a_model_from_the_browser_and_watches_the_leaderboard(
    tmp_path: Path, busybox_image: str
) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    async with three_sites(tmp_path, busybox_image) as (fed, url), async_playwright() as pw:
        await join_all(fed)
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        page = await browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            await page.goto(f"{url}/console")
            await page.get_by_label("API token").fill("wrong")
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("alert")).to_contain_text("unknown token")
            await page.get_by_label("API token").fill(USERS["admin"])
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_test_id("who")).to_have_text("admin (admin)")
            await expect(page.get_by_test_id("feed-status")).to_contain_text("live")
            await page.screenshot(path=ARTIFACTS / "1-logged-in.png", full_page=True)

            # An event arrives: a model asks to join.
            good = await request_model(fed, "good-model", "echo 1 > /out/p1; echo 2 > /out/p2")
            arrived = page.get_by_test_id("feed").locator(
                'div[data-type="association.requested"]', has_text="model good-model"
            )
            await expect(arrived).to_have_count(1, timeout=15_000)
            pending = page.get_by_test_id("pending-item").filter(has_text=f"model {good} asks to join")
            await expect(pending).to_have_count(1, timeout=15_000)
            await page.screenshot(path=ARTIFACTS / "2-association-arrived.png", full_page=True)

            # Approve it with a click; the three sites pick up the jobs and the board changes.
            approved_at = time.monotonic()
            await pending.get_by_role("button", name="Approve").click()
            await expect(pending).to_have_count(0, timeout=15_000)
            succeeded = page.get_by_test_id("job-row").filter(has_text="succeeded")
            board_row = page.get_by_test_id("board-row").filter(has_text="good-model")
            await expect(board_row).to_contain_text("0.9000", timeout=90_000)
            for site in SITES:  # every site ran it
                await expect(
                    page.get_by_test_id("feed")
                    .locator('div[data-type="result.reported"]', has_text=f"site {site}")
                    .filter(has_text="model good-model")
                ).to_have_count(1, timeout=30_000)
            print(f"leaderboard showed the approved model {time.monotonic() - approved_at:.1f} s after the click")
            await expect(page.get_by_test_id("chart").locator("rect")).to_have_count(2)  # reference + good-model
            assert await succeeded.count() >= 3
            await expect(page.get_by_test_id("site-row")).to_have_count(3)
            await page.screenshot(path=ARTIFACTS / "3-leaderboard-updated.png", full_page=True)

            # A model that crashes: the console says whose fault it was and shows the log.
            await fed.register_and_associate("crashing-model", await _container(fed, "echo dying >&2; exit 3"))
            failure = page.get_by_test_id("failure").first
            await expect(failure).to_contain_text("model fault", timeout=60_000)
            await failure.click()
            await expect(failure.locator("pre")).to_contain_text("dying")
            await page.screenshot(path=ARTIFACTS / "4-why-a-job-failed.png", full_page=True)
        finally:
            await page.screenshot(path=ARTIFACTS / "last.png", full_page=True)
            await browser.close()


async def _container(fed: Federation, script: str) -> int:
    spec = {"name": "crashing", "spec": model(fed.image, script), "state": "OPERATION"}
    return (await fed.call("modeler", "post", "/containers", spec))["id"]
