"""A failed job's log tail (it may quote patient data) leaves its site only with the data owner's
consent: not with the failure, unless the site shares tails; `medperf job release-log ID` sends it,
and the model's owner then reads it with the failure. Real services, nats-server and Docker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sites import federation
from waiting import eventually

from cli.main import main

pytestmark = pytest.mark.engine


async def test_a_log_tail_leaves_the_site_only_when_its_data_owner_releases_it(
    tmp_path: Path, busybox_image: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        model = await fed.add_model("leaky", "echo 'case 17: age 54' >&2; exit 3")
        job = await fed.job_reaches(model, "failed")
        (failed,) = [e for e in await fed.events(".job.failed") if e["job_id"] == job.id]
        assert failed["failure"] == "model" and failed["log_tail"] == ""
        (row,) = [j for j in await fed.call("modeler", "console_jobs") if j["job_id"] == job.id]
        assert row["log_tail"] == "" and row["log_tail_kept_at_site"] is True

        # At the site, its data owner reads the tail and lets it go (the CLI acts on the site's database).
        for name, value in {"NAME": fed.site.name, "OWNER": fed.site.owner, "WORK_DIR": str(fed.site.work_dir)}.items():
            monkeypatch.setenv(f"MEDPERF_SITE_{name}", value)
        assert await asyncio.to_thread(main, ["job", "log", str(job.id)]) == 0
        assert "case 17: age 54" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["job", "release-log", str(job.id)]) == 0

        async def released() -> list[dict]:
            rows = await fed.call("modeler", "console_jobs")
            return [j for j in rows if j["job_id"] == job.id and "case 17" in j["log_tail"]]

        await eventually(released, "the released tail to reach the model's owner")
        (event,) = [e for e in await fed.events(".job.log_released") if e["job_id"] == job.id]
        assert "case 17: age 54" in event["log_tail"]
        # A job that did not fail has no tail to release.
        assert await asyncio.to_thread(main, ["job", "release-log", str(job.id + 100)]) == 1
