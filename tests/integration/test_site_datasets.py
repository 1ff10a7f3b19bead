"""The data owner's flow at the site: `medperf dataset submit` (a real process, in a real terminal
for the consent prompt) hands a dataset to the running agent, which prepares it, shows what would
leave, and registers it only on a yes; a dataset added after its benchmark's approval joins all the
same; `medperf dataset withdraw` stops new jobs; `medperf dataset check` re-hashes. Real
nats-server, real services, real Docker."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import nats
import pexpect
import pytest
from sites import SITE, USERS, Federation, federation, site_settings
from waiting import eventually

from cli.client import ApiError
from shared.events import BenchmarkApproved
from shared.messaging import durable_name, stream_name_of

pytestmark = pytest.mark.engine

DONE = r"✓(\x1b\[[0-9;]*m)* "  # a finished stage's mark (coloured at a terminal)
MEDPERF = shutil.which("medperf", path=str(Path(sys.executable).parent))


def site_env(fed: Federation) -> dict[str, str]:
    """The agent's own MEDPERF_SITE_* variables: the CLI acts on its database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDPERF_")}
    return {
        **clean,
        "MEDPERF_SITE_NAME": fed.site.name,
        "MEDPERF_SITE_OWNER": fed.site.owner,
        "MEDPERF_SITE_WORK_DIR": str(fed.site.work_dir),
        "MEDPERF_CONFIG_DIR": str(fed.site.work_dir.parent / "config"),
        # The data owner, logged in on the site's machine: withdrawing rejects with their own token.
        "MEDPERF_URL": fed.stack.ingress.url if fed.stack and fed.stack.ingress else "",
        "MEDPERF_TOKEN": USERS["hospital-a"],
    }


def raw(tmp_path: Path, name: str) -> tuple[Path, Path]:
    data, labels = tmp_path / name / "data", tmp_path / name / "labels"
    data.mkdir(parents=True)
    labels.mkdir()
    (data / "case1.txt").write_text("7\n")
    (labels / "case1.txt").write_text("1\n")
    return data, labels


async def medperf(fed: Federation, *args: str) -> tuple[int, str]:
    """`medperf ARGS` as its own process (no terminal), while this process runs the agent."""
    assert MEDPERF
    process = await asyncio.create_subprocess_exec(
        MEDPERF, *args, env=site_env(fed), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode()


async def my_datasets(fed: Federation) -> list[dict]:
    return await fed.call("hospital-a", "entities", "dataset", mine=True)


async def test_a_dataset_submitted_after_the_benchmarks_approval_joins_and_reaches_the_board(
    tmp_path: Path, busybox_image: str
) -> None:
    async with federation(tmp_path, busybox_image, datasets=[]) as fed:
        await fed.join(sites=0)  # the benchmark is approved before the site has any dataset
        data, labels = raw(tmp_path, "scans")
        code, out = await medperf(
            fed, "dataset", "submit", "--benchmark", "bench", "--data-path", str(data),
            "--labels-path", str(labels), "--name", "scans", "-y",
        )  # fmt: skip
        assert code == 0, out
        for stage in ("prepare", "sanity check", "statistics", "register", "compatibility test", "ask to join"):
            assert stage in out, out
        assert "prepared_hash:" in out and "cases: 3" in out  # what leaves, shown even with -y
        (dataset,) = await my_datasets(fed)
        assert dataset["name"] == "scans" and dataset["site"] == SITE
        assert f"dataset {dataset['id']} (scans) asked to join benchmark bench: PENDING" in out

        await fed.call("committee", "decide_association", fed.benchmark_id, "dataset", dataset["id"], approve=True)

        async def on_board() -> dict | None:
            try:
                board = await fed.call("committee", "get", f"/benchmarks/{fed.benchmark_id}/leaderboard")
            except ApiError as exc:
                if exc.status in (403, 404):  # the aggregator has not projected the approvals yet
                    return None
                raise
            return board if board.get("rows") else None

        await eventually(on_board, "the reference model's result on the board", timeout=60)

        # check: the prepared data still matches; then it changes, and check says so.
        code, out = await medperf(fed, "dataset", "check", "scans")
        assert code == 0 and "matches what was registered" in out, out
        prepared = next((fed.site.work_dir / "datasets").glob("*-scans"))
        (prepared / "data" / "case1.txt").write_text("8\n")
        code, out = await medperf(fed, "dataset", "check", str(dataset["id"]))
        assert code == 1 and "CHANGED since registration" in out, out

        # withdraw: the association is rejected (revoked), and a newly approved model runs nowhere here.
        code, out = await medperf(fed, "dataset", "withdraw", "scans")
        assert code == 0 and f"withdrew dataset {dataset['id']} here" in out, out
        assert "rejected its association" in out, out
        (latest,) = await fed.call("hospital-a", "associations", fed.benchmark_id, kind="dataset")
        assert latest["status"] == "REJECTED"
        model_id = await fed.add_model("late", "echo 1 > /out/p1")
        await asyncio.sleep(2.5)  # two runner rounds: a job queued for it would show by now
        assert await fed.job_of_model(model_id) is None


async def test_a_configured_dataset_added_after_the_approval_joins_at_the_agents_start(
    tmp_path: Path, busybox_image: str
) -> None:
    """The agent consumed BenchmarkApproved before the dataset was configured: at its next start it
    asks the registry whether the benchmark is approved."""
    async with federation(tmp_path, busybox_image, datasets=[]) as fed:
        await fed.join(sites=0)
        await eventually(lambda: approval_acknowledged(fed), "the agent to consume the approval, with no dataset")
        assert fed.stack is not None
        await fed.stack.hosts[f"site-{SITE}"].stop()
        await fed.stack.add_site(site_settings(tmp_path))  # now with dataset d1 for "bench"

        async def pending() -> list[dict]:
            return await fed.call("committee", "associations", fed.benchmark_id, kind="dataset", status="PENDING")

        await eventually(pending, "the newly configured dataset to ask to join", timeout=60)


async def approval_acknowledged(fed: Federation) -> bool:
    nc = await nats.connect(fed.nats_url)
    try:
        durable = durable_name(f"site-{SITE}", BenchmarkApproved)
        info = await nc.jetstream().consumer_info(stream_name_of(BenchmarkApproved.subscription()), durable)
        return info.delivered.stream_seq > 0 and info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await nc.close()


def _interact(fed: Federation, data: Path, labels: Path, answer: str) -> tuple[int, str]:
    """`medperf dataset submit` in a terminal: watch the stages, read what leaves, answer."""
    assert MEDPERF
    args = ["dataset", "submit", "-b", "bench", "-d", str(data), "-l", str(labels), "-n", "ward"]
    child = pexpect.spawn(MEDPERF, args, env=site_env(fed), encoding="utf-8", timeout=90)  # type: ignore[arg-type]
    for stage in ("prepare", "sanity check", "statistics"):
        child.expect(DONE + stage)
    child.expect("prepared_hash: [0-9a-f]{64}")
    child.expect(r"Register ward and ask to join benchmark bench\? \[y/N\] ")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus or 0, child.before


async def test_consent_at_the_terminal_no_registers_nothing_and_yes_registers(
    tmp_path: Path, busybox_image: str
) -> None:
    async with federation(tmp_path, busybox_image, datasets=[]) as fed:
        await fed.join(sites=0)
        data, labels = raw(tmp_path, "ward")
        code, out = await asyncio.to_thread(_interact, fed, data, labels, "n")
        assert code == 1 and "declined: nothing left the site" in out and "medperf dataset submit" in out, out
        await asyncio.sleep(1.5)  # an intake round: a registration would be made by now
        assert await my_datasets(fed) == []

        code, out = await asyncio.to_thread(_interact, fed, data, labels, "y")
        assert code == 0, out
        assert re.search(DONE + "register", out) and re.search(DONE + "compatibility test", out), out
        assert "asked to join benchmark bench" in out
        (dataset,) = await my_datasets(fed)
        assert dataset["name"] == "ward" and dataset["state"] == "OPERATION"
