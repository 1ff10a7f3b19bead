"""A running job's progress, end to end: a data preparator that writes MedPerf's report file in steps
makes the site publish job.progress events with the report's aggregate (and never a case id); the
hash and verification stages publish bytes done of a total; the data owner's `medperf dataset
submit`, in a real terminal, shows a bar of the bytes hashed and the report's last lines. Real
nats-server, real services, real Docker."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import nats
import pexpect
import pytest
from history import stream_messages
from sites import Federation, federation, task
from test_site_datasets import DONE, MEDPERF, raw, site_env
from waiting import eventually

from services.executor import hashing, workflow

pytestmark = pytest.mark.engine

CASE = "subject-000{n}-QZ"  # the report's case ids: per-case output, which must never leave the site
# Three cases reported in three steps (as MedPerf's preparators rewrite their report), a pause after each.
REPORT_STEPS = (
    "cp -r /in/data/. /out/data/ && cp -r /in/labels/. /out/labels/ || exit 1; "
    "for done in 1 2 3; do "
    "{ echo 'status:'; for n in 1 2 3; do if [ $n -le $done ]; then s=3; else s=0; fi; "
    f'echo "  {CASE.format(n="$n")}: $s"; done; '
    "echo 'comment:'; for n in 1 2 3; do "
    f'echo "  {CASE.format(n="$n")}: looked at by the preparator"; done; }} > /report/report.yaml; '
    "sleep 2; done"
)


def reporting_preparator(image: str) -> dict:
    prepare = task(
        REPORT_STEPS,
        {"data_path": "/in/data", "labels_path": "/in/labels"},
        {"output_path": "/out/data", "output_labels_path": "/out/labels"},
    )
    prepare["outputs"]["report_file"] = {"mount_path": "/report/report.yaml", "type": "file"}
    return {
        "image": "localhost/busybox",
        "image_digest": image,
        "tasks": {
            "prepare": prepare,
            "sanity_check": task("true"),
            "statistics": task("echo '{\"cases\": 3}' > /out/statistics.json", outputs={"output_path": "/out"}),
        },
    }


async def site_events(fed: Federation) -> list[tuple[str, bytes]]:
    nc = await nats.connect(fed.nats_url)
    try:
        return [(m.subject, m.data) for m in await stream_messages(nc.jetstream(), "SITES")]
    finally:
        await nc.close()


async def consumer(fed: Federation, stream: str, durable: str) -> Any:
    nc = await nats.connect(fed.nats_url)
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()


async def dead_letters(fed: Federation) -> int:
    nc = await nats.connect(fed.nats_url)
    try:
        return (await nc.jetstream().stream_info("DEADLETTER")).state.messages
    finally:
        await nc.close()


async def progress_events(fed: Federation) -> list[dict[str, Any]]:
    return [json.loads(data) for subject, data in await site_events(fed) if subject.endswith(".job.progress")]


async def test_a_preparators_report_leaves_the_site_in_aggregate_only(tmp_path: Path, busybox_image: str) -> None:
    # Every prepared byte read again before each job (a full check), so verification counts bytes too.
    async with federation(tmp_path, busybox_image, full_check_days=1e-9, progress_seconds=0.5) as fed:
        await fed.join(prep_spec=reporting_preparator(busybox_image))

        async def verified() -> bool:
            return any(e["stage"] == "evaluate" for e in await progress_events(fed))

        await eventually(verified, "the compatibility run's progress", timeout=60)
        events = await progress_events(fed)
        assert all(e["site"] == fed.site.name and e["type"] == "job.progress" for e in events)
        by_stage: dict[str, list[dict]] = {}
        for event in events:
            by_stage.setdefault(event["stage"], []).append(event)
        for stage in ("hash", "prepare", "sanity_check", "statistics", "hash_prepared", "verify", "run", "evaluate"):
            assert stage in by_stage, (stage, sorted(by_stage))
        assert {e["kind"] for e in by_stage["prepare"]} == {"prepare"}
        assert {e["kind"] for e in by_stage["verify"]} == {"compatibility"}

        raw_bytes = sum(
            f.stat().st_size for d in fed.site.datasets for f in (*d.data_path.iterdir(), *d.labels_path.iterdir())
        )
        assert {"done": raw_bytes, "total": raw_bytes} in [
            {"done": e["done"], "total": e["total"]} for e in by_stage["hash"]
        ]
        assert any(e["done"] is not None and e["done"] == e["total"] > 0 for e in by_stage["verify"]), by_stage[
            "verify"
        ]

        reports = [e["report"] for e in by_stage["prepare"] if e["report"] is not None]
        assert len({json.dumps(r, sort_keys=True) for r in reports}) >= 2, reports  # it moved, step by step
        assert reports[-1] == {"cases": 3, "statuses": {"3": 3}}
        assert all(r["cases"] == 3 and sum(r["statuses"].values()) == 3 for r in reports)

        # The console folds job events into job state: it takes job.progress and leaves it be.
        async def console_caught_up() -> bool:
            info = await consumer(fed, "SITES", "console-jobs")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(console_caught_up, "the console to take every job event, job.progress too")
        assert (await consumer(fed, "SITES", "console-jobs")).num_redelivered == 0
        assert await dead_letters(fed) == 0

        # No case id (nor the report's free text) in any event the site published, of any type.
        for subject, data in await site_events(fed):
            assert b"subject-000" not in data and b"looked at" not in data, subject


def _submit_in_a_terminal(fed: Federation, data: Path, labels: Path, hashing_gate: threading.Event) -> str:
    """`medperf dataset submit -y` in a terminal: the hash bar shows while the hash waits on the gate;
    then the report's lines show while the preparator runs."""
    assert MEDPERF
    args = ["dataset", "submit", "-b", "bench", "-d", str(data), "-l", str(labels), "-n", "ward", "-y"]
    child = pexpect.spawn(MEDPERF, args, env=site_env(fed), encoding="utf-8", timeout=90)  # type: ignore[arg-type]
    try:
        child.expect(r"hash the raw data \.\.\..*━.*1\.5 MB/3\.0 MB")
        hashing_gate.set()
        child.expect(CASE.format(n=3) + ": 0")  # the report, verbatim, on the site's own terminal
        child.expect(DONE + "prepare")
        child.expect("prepared_hash: [0-9a-f]{64}")
        child.expect(pexpect.EOF)
    finally:
        hashing_gate.set()
        child.close()
    return child.before


async def test_dataset_submit_shows_the_hash_bar_and_the_report(
    tmp_path: Path, busybox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_tree_hash = workflow.tree_hash

    def held_half_way(*roots: Path, progress: hashing.Progress | None = None, **options: Any) -> str:
        """The raw data's hash, held half-way (as a large dataset's would be) until the terminal showed it."""
        total = sum(found.stat.st_size for found in hashing.walk(*roots))
        if progress is not None:
            progress(total // 2, total)
        gate.wait(90)
        return real_tree_hash(*roots, progress=progress, **options)

    monkeypatch.setattr(workflow, "tree_hash", held_half_way)
    async with federation(tmp_path, busybox_image, datasets=[]) as fed:
        await fed.join(sites=0, prep_spec=reporting_preparator(busybox_image))
        data, labels = raw(tmp_path, "ward")
        (data / "case1.txt").write_bytes(b"\x07" * 2_999_998)  # with labels' 2 bytes: 3.0 MB
        out = await asyncio.to_thread(_submit_in_a_terminal, fed, data, labels, gate)
        assert "asked to join benchmark bench" in out, out
