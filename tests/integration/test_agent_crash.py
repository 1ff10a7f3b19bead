"""Crash safety, for real: the site agent runs as its own process (``medperf agent``), is killed
with SIGKILL while a model runs, and is started again. The job must run again and exactly one
result must reach the federation; the container the dead agent left behind must be removed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from sites import SITE, USERS, Federation, site_settings
from waiting import eventually

from cli.client import Client
from cli.stack import Stack
from services.executor.runner import JOB_LABEL, SITE_LABEL
from services.executor.store import TABLES, Base
from services.ingress.auth import token_digest
from shared.db import Database, UnitOfWork
from shared.settings import Settings

pytestmark = pytest.mark.engine


def start_agent(nats_url: str, env_site: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEDPERF_NATS_URL": nats_url, **env_site}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "agent"], env=env, stdout=out, stderr=out)


async def test_a_killed_agent_runs_the_job_again_and_reports_once(tmp_path: Path, busybox_image: str) -> None:
    site = site_settings(tmp_path)
    env_site = {
        "MEDPERF_STATE_DIR": str(tmp_path / "agent-state"),
        "MEDPERF_SITE_NAME": site.name,
        "MEDPERF_SITE_OWNER": site.owner,
        "MEDPERF_SITE_WORK_DIR": str(site.work_dir),
        "MEDPERF_SITE_DATASETS": json.dumps([d.model_dump(mode="json") for d in site.datasets]),
    }
    settings = Settings(
        state_dir=tmp_path / "state",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    log = tmp_path / "agent.log"
    async with Stack(settings) as stack:
        assert stack.ingress and stack.settings.nats_url
        agent = start_agent(stack.settings.nats_url, env_site, log)
        db = Database(site.database())  # the agent's own database, read from this process
        clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        engine = docker.from_env()
        try:
            fed = Federation(stack.settings.nats_url, clients, busybox_image, site, lambda: UnitOfWork(db, TABLES))
            await eventually(lambda: asyncio.to_thread(site.work_dir.joinpath("agent.db").exists), "the agent to start")
            await db.create_all(Base.metadata)
            await fed.join()
            model_id = await fed.add_model("slow", "sleep 6; echo 1 > /out/p1")
            job = await fed.job_reaches(model_id, "running")

            def containers() -> list:
                # This site's job only (job ids repeat across sites); sparse: a listed container that
                # another test's agent removes meanwhile must not fail the listing.
                labels = [f"{JOB_LABEL}={job.id}", f"{SITE_LABEL}={SITE}"]
                return engine.containers.list(all=True, sparse=True, filters={"label": labels})

            await eventually(lambda: asyncio.to_thread(containers), "the model's container to start")
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=10)
            assert await asyncio.to_thread(containers), "the orphaned container outlives its agent"

            agent = start_agent(stack.settings.nats_url, env_site, log)
            done = await fed.job_reaches(model_id, "succeeded")
            assert done.attempts == 2
            queued = [e for e in await fed.events(".job.queued") if e["job_id"] == job.id]
            assert [e["reason"] for e in queued][-1] == "agent restarted"

            async def results() -> list[dict]:
                return [e for e in await fed.events(".result.reported") if e["model_id"] == model_id]

            await eventually(results, "the result of the re-run job")
            await asyncio.sleep(2.0)  # two relay sweeps: a duplicate would be on the stream by now
            assert len(await results()) == 1
            leftovers = await asyncio.to_thread(
                engine.containers.list, all=True, filters={"label": f"{SITE_LABEL}={SITE}"}
            )
            assert leftovers == []
        finally:
            agent.terminate()
            agent.wait(timeout=30)
            engine.close()
            for client in clients.values():
                client.close()
            await db.dispose()
