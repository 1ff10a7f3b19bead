"""``medperf job|result|site``: the site's staff act on their agent's own database."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from cli.main import main
from cli.register import ProgressBar
from services.executor.store import TABLES, Base, Job, SiteState
from shared.db import Database


@pytest.fixture
def site_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setenv("MEDPERF_SITE_NAME", "site-a")
    monkeypatch.setenv("MEDPERF_SITE_OWNER", "hospital-a")
    monkeypatch.setenv("MEDPERF_SITE_WORK_DIR", str(tmp_path / "site"))
    db = Database(f"sqlite:///{tmp_path / 'site' / 'agent.db'}")
    (tmp_path / "site").mkdir()

    async def seed() -> None:
        await db.create_all(Base.metadata)
        async with db.transaction() as session:
            common = {"benchmark_id": 1, "dataset_id": 3, "container_digests": {"model": "sha256:" + "a" * 64}}
            session.add(
                Job(
                    key="k1",
                    kind="run",
                    model_id=2,
                    status="succeeded",
                    release="held",
                    metrics={"auc": 0.8},
                    dataset_hash="h",
                    **common,
                )
            )
            session.add(Job(key="k2", kind="run", model_id=5, status="queued", **common))

    asyncio.run(seed())
    return db


def read(db: Database, query: object) -> list:
    async def go() -> list:
        async with db.sessions() as session:
            return list((await session.execute(query)).all())  # type: ignore[arg-type]

    return asyncio.run(go())


def test_a_held_result_is_listed_and_released_once(site_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["result", "ls", "--pending"]) == 0
    listing = capsys.readouterr().out
    assert "held" in listing and "auc=0.8" in listing and "queued" not in listing

    assert main(["result", "release", "1"]) == 0
    assert "released the result of job 1" in capsys.readouterr().out
    ((subject, payload),) = read(site_db, select(TABLES.outbox.c.subject, TABLES.outbox.c.payload))
    assert subject == "medperf.site.site-a.result.reported"
    assert json.loads(payload)["metrics"] == {"auc": 0.8}  # queued for the agent's relay

    assert main(["result", "release", "1"]) == 1
    assert "no result waiting for release" in capsys.readouterr().err
    assert main(["result", "ls", "--pending"]) == 0
    assert "held" not in capsys.readouterr().out


def test_cancel_drain_and_rerun_say_what_they_did_or_why_not(
    site_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["job", "cancel", "1"]) == 1
    assert "only queued or running jobs can be cancelled" in capsys.readouterr().err
    assert main(["job", "cancel", "2"]) == 0
    assert read(site_db, select(Job.cancel_requested).where(Job.id == 2)) == [(True,)]

    assert main(["job", "rerun", "2"]) == 1  # still queued until the agent acts on the cancel
    assert main(["job", "rerun", "1"]) == 0
    assert read(site_db, select(Job.id, Job.key, Job.status).where(Job.id == 3)) == [(3, "k1", "queued")]

    assert main(["site", "drain"]) == 0
    assert read(site_db, select(SiteState.draining)) == [(True,)]
    assert main(["site", "resume"]) == 0
    assert read(site_db, select(SiteState.draining)) == [(False,)]
    assert main(["job", "cancel", "99"]) == 1
    assert "no job 99" in capsys.readouterr().err


def test_the_download_progress_bar_shows_percent_size_and_rate() -> None:
    out = io.StringIO()
    bar = ProgressBar("https://example.org/w.tar", out=out)
    bar(0, 200_000_000)
    bar(200_000_000, 200_000_000)  # the last update is always drawn
    bar.close()
    lines = out.getvalue().split("\r")
    assert lines[-1].startswith("https://example.org/w.tar  100% 200/200 MB") and lines[-1].endswith("MB/s \n")
    unknown = io.StringIO()
    ProgressBar("synapse:syn1", out=unknown)(5_000_000, None)
    assert "5 MB" in unknown.getvalue() and "%" not in unknown.getvalue()
