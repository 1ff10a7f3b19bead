"""The web app in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package), one scenario per role, each acting through the pages and checking the effect through the
API: the committee approves a request on its signed report, downloads the board and changes what
it shares; a data owner releases a held result and a log tail and never sees another hospital's;
a model owner follows their models and registers a container and a model through the forms, with
the server's refusal shown beside the field; an admin approves a benchmark. Each role's main page
passes axe-core (no serious or critical violation) and is saved as a screenshot under
tests/artifacts/web/ (the README shows one)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from waiting import eventually
from webworld import TOKENS, World, add_model, settle, slow, world

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="module")]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "web"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def chromium() -> str:
    missing = [
        what
        for what, there in (("Debian's chromium", CHROMIUM), ("axe-core (npm ci in web/)", AXE.exists()))
        if not there
    ]
    if missing:
        reason = f"{' and '.join(missing)} missing: scripts/setup installs them"
        if os.environ.get("MEDPERF_REQUIRE_ENGINE"):
            pytest.fail(reason)  # scripts/test set everything up, so a skip would hide a failure
        pytest.skip(reason)
    assert CHROMIUM
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def web(tmp_path_factory: pytest.TempPathFactory, busybox_image: str) -> AsyncIterator[World]:
    async with world(tmp_path_factory.mktemp("web"), busybox_image) as w:
        await settle(w)
        yield w


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
        launched = await pw.chromium.launch(executable_path=chromium, args=args, headless=True)
        yield launched
        await launched.close()


async def new_page(browser: Any) -> Any:
    """A page that remembers the script errors it raised (``accessible`` asserts there are none)."""
    page = await browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return page


async def signed_in(browser: Any, w: World, user: str) -> Any:
    page = await new_page(browser)
    await page.goto(f"{w.url}/app")
    await page.get_by_label("API token").fill(TOKENS[user])
    await page.get_by_role("button", name="Sign in").click()
    await _expect(page.get_by_test_id("who")).to_contain_text(user)
    return page


def _expect(target: Any) -> Any:
    from playwright.async_api import expect

    return expect(target)


async def accessible(page: Any, name: str) -> None:
    """axe-core in the page: no serious or critical violation; and a full-page screenshot."""
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})")
    bad = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, json.dumps(bad, indent=1)
    assert not page.errors, page.errors


async def test_the_sign_in_says_what_is_wrong(web: World, browser: Any) -> None:
    page = await new_page(browser)
    await page.goto(f"{web.url}/app")
    await page.get_by_label("API token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await _expect(page.get_by_role("alert")).to_contain_text("unknown token")
    await accessible(page, "sign-in")
    await page.close()


async def test_the_committee_decides_on_the_signed_report_and_chooses_what_to_share(web: World, browser: Any) -> None:
    page = await signed_in(browser, web, "committee")
    await _expect(page.get_by_test_id("roles")).to_contain_text("committee")
    await page.get_by_test_id("home-benchmarks").get_by_role("link", name="tumour-screening").click()

    # The board: every model by name, the crashing one with its failed cells and whose fault.
    rows = page.get_by_test_id("board").get_by_test_id("board-row")
    await _expect(rows.filter(has_text="good-model")).to_contain_text("0.8490")
    crashed = rows.filter(has_text="crashing-model")
    await _expect(crashed.get_by_test_id("failed-cell")).to_have_count(3)
    await _expect(crashed).to_contain_text("failed (model)")
    await _expect(page.get_by_test_id("heatmap")).to_contain_text("0.849")
    await _expect(page.get_by_test_id("chart").locator("canvas")).to_have_count(1)

    # The request behind the decision: the owner's signed, passing test.
    request = page.get_by_test_id("request").filter(has_text="waiting-model")
    await _expect(request.get_by_test_id("report")).to_contain_text("test passed")
    await _expect(request.get_by_test_id("report")).to_contain_text("signed by")
    await accessible(page, "committee")
    await request.get_by_label("Reason (shown to the requester)").fill("fits the benchmark")
    await request.get_by_role("button", name="Approve").click()
    await _expect(request).to_have_count(0)
    model_id = web.models["waiting-model"]
    approved = await web.call("committee", "associations", web.benchmark_id, kind="model", status="APPROVED")
    assert model_id in {a["component_id"] for a in approved}

    # The CSV is the board the committee sees.
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Download CSV").click()
    csv = Path(await (await download.value).path()).read_text()
    assert csv.splitlines()[0].startswith("rank,model,baseline,mean_auc")
    assert "good-model" in csv and "failed (model)" in csv

    # What each audience would see, then the policy saved: the board for the committee only.
    policy = page.get_by_test_id("policy")
    await policy.get_by_label("Who sees the board").select_option("committee")
    await policy.get_by_role("button", name="Preview").click()
    await _expect(page.get_by_test_id("preview-public")).to_contain_text("Sees nothing")
    await _expect(page.get_by_test_id("preview-committee")).to_contain_text("good-model")
    await page.screenshot(path=ARTIFACTS / "committee-policy-preview.png", full_page=True)
    await policy.get_by_role("button", name="Save policy").click()
    await _expect(policy.get_by_role("status")).to_contain_text("Saved")
    board = await web.call("hospital-c", "get", f"/benchmarks/{web.benchmark_id}/leaderboard")
    assert board["scope"] == "own" and "rows" not in board  # their own site's results only, now
    await web.call(
        "committee",
        "request",
        "PUT",
        f"/benchmarks/{web.benchmark_id}/sharing-policy",
        json={"visibility": "participants"},
    )
    await page.close()


async def test_a_data_owner_releases_what_their_site_holds_and_sees_no_other_site(web: World, browser: Any) -> None:
    page = await signed_in(browser, web, "hospital-b")
    await page.get_by_role("link", name="Data", exact=True).click()
    await _expect(page.get_by_test_id("dataset-row")).to_have_count(1)
    await _expect(page.get_by_test_id("dataset-row")).to_contain_text("site-b-scans")
    await _expect(page.get_by_test_id("datasets")).not_to_contain_text("site-a")

    # Failed jobs: their site's only, whose fault, and the log tail kept at the site.
    failed = page.get_by_test_id("failed-job")
    await _expect(failed.filter(has_text="crashing-model")).to_have_count(1)
    await _expect(page.get_by_test_id("failed")).not_to_contain_text("site-a")
    await _expect(page.get_by_test_id("failed")).not_to_contain_text("site-c")
    await accessible(page, "data-owner")

    # A held result released with a click reaches the board.
    held = page.get_by_test_id("held-result").filter(has_text="good-model")
    await _expect(held).to_have_count(1)
    await held.get_by_role("button", name="Release").click()
    await _expect(held).to_have_count(0)

    async def on_the_board() -> bool:
        board = await web.call("committee", "get", f"/benchmarks/{web.benchmark_id}/leaderboard")
        row = next(r for r in board["rows"] if r["model"] == "good-model")
        return row["per_dataset"].get("site-b") is not None

    await eventually(on_the_board, "the released result on the board", timeout=30)

    # The log tail leaves the site only on the data owner's word; then the model owner reads it.
    page.on("dialog", lambda dialog: dialog.accept())
    await failed.filter(has_text="crashing-model").get_by_role("button", name="Release log tail").click()

    async def released() -> bool:
        jobs = await web.call("modeler", "get", "/console/jobs", status="failed", site="site-b")
        return any("weights file is truncated" in (j.get("log_tail") or "") for j in jobs)

    await eventually(released, "the released log tail to reach the model owner", timeout=30)

    # Live: a model the committee approves now runs at their site, followed as it runs; its result
    # then waits for their release.
    await page.get_by_role("link", name="Data", exact=True).click()
    model_id = await add_model(web, "modeler", "slow-model", slow(web.fed.image, 6))
    await web.call("committee", "decide_association", web.benchmark_id, "model", model_id, approve=True)
    running = page.get_by_test_id("running-job").filter(has_text="slow-model")
    await _expect(running).to_contain_text("site-b", timeout=60_000)
    await _expect(page.get_by_test_id("running-job")).to_have_count(1)  # not the crashed job whose log left
    await page.screenshot(path=ARTIFACTS / "data-owner-running.png", full_page=True)
    await _expect(running).to_have_count(0, timeout=60_000)
    await _expect(page.get_by_test_id("held-result").filter(has_text="slow-model")).to_have_count(1, timeout=30_000)

    # Live: the activity of their own site only.
    await page.get_by_role("link", name="Activity").click()
    await _expect(page.get_by_test_id("feed-status")).to_contain_text("Live")
    events = page.get_by_test_id("event")
    await _expect(events.first).to_be_visible()
    await _expect(page.get_by_test_id("feed")).not_to_contain_text("site-a")
    await _expect(page.get_by_test_id("feed")).not_to_contain_text("site-c")
    await page.close()


async def test_a_model_owner_follows_their_models_and_registers_through_the_forms(web: World, browser: Any) -> None:
    page = await signed_in(browser, web, "modeler")
    await page.get_by_role("link", name="Models", exact=True).click()
    for name in ("good-model", "crashing-model", "slow-model"):  # slow-model: the data owner's scenario's
        await _expect(page.get_by_test_id("model-row").filter(has_text=name)).to_have_count(1)
    await _expect(page.get_by_test_id("models")).not_to_contain_text("waiting-model")  # another owner's
    rows = page.get_by_test_id("association-row")
    await _expect(rows.filter(has_text="good-model")).to_contain_text("APPROVED")
    await _expect(rows.filter(has_text="good-model")).to_contain_text("passed")
    results = page.get_by_test_id("your-results")
    await _expect(results.get_by_test_id("board-row").filter(has_text="good-model")).to_contain_text("0.8490")
    await _expect(results).not_to_contain_text("reference")  # the committee's model, not theirs
    await _expect(page.get_by_test_id("model-failures")).to_contain_text("model's fault")
    await accessible(page, "model-owner")

    # A MedPerf config this site's engines cannot run: the server's reason beside the document.
    await page.get_by_role("link", name="Register").click()
    await page.get_by_label("Name").fill("singularity-model")
    config = "container_type: SingularityFile\nimage: model.sif\ntasks:\n  infer: {}\n"
    await page.get_by_label("The YAML document").fill(config)
    await page.get_by_role("button", name="Register container").click()
    await _expect(page.get_by_test_id("error-medperf")).to_contain_text("SingularityFile")
    await page.screenshot(path=ARTIFACTS / "model-owner-form-error.png", full_page=True)

    # The JSON spec of a container that runs, then a model on it.
    image = (await web.call("modeler", "get", f"/containers/{(await _container_of(web, 'good-model'))}"))["spec"]
    await page.get_by_label("Format").select_option("spec")
    await page.get_by_label("Spec (JSON)").fill(json.dumps(image))
    await page.get_by_role("button", name="Register container").click()
    await _expect(page.get_by_test_id("created")).to_contain_text("Registered container")
    await page.get_by_role("link", name="Model", exact=True).click()
    await page.get_by_label("Name").fill("second-try")
    await page.get_by_label("Its container").select_option(label=f"singularity-model (container {await _newest(web)})")
    await page.get_by_role("button", name="Register model").click()
    await _expect(page.get_by_test_id("created")).to_contain_text("Registered model")
    assert "second-try" in {m["name"] for m in await web.call("modeler", "get", "/me/models")}
    await page.close()


async def _container_of(web: World, model: str) -> int:
    return (await web.call("modeler", "get", f"/models/{web.models[model]}"))["container_id"]


async def _newest(web: World) -> int:
    return max(c["id"] for c in await web.call("modeler", "get", "/me/containers"))


async def test_an_admin_approves_a_benchmark_and_reaches_the_console(web: World, browser: Any) -> None:
    page = await signed_in(browser, web, "admin")
    waiting = page.get_by_test_id("pending-benchmark").filter(has_text="lesion-segmentation")
    await _expect(waiting).to_have_count(1)
    await _expect(page.get_by_test_id("feed-state")).to_contain_text("live")
    await accessible(page, "admin")
    await waiting.get_by_role("button", name="Approve").click()
    await _expect(waiting).to_have_count(0)
    bench = await web.call("admin", "get", f"/benchmarks/{web.pending_benchmark_id}")
    assert bench["approval_status"] == "APPROVED"
    await page.get_by_role("link", name="Admin console").click()
    await _expect(page.get_by_test_id("who")).to_contain_text("admin")  # the console signs in with the same token?
    await page.close()
