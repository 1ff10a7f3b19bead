"""Before each job the site checks its prepared data against the registration, reading only what
changed: N models on one dataset cost one full hash (at preparation), not N; a changed, added or
removed file stops the job as the data's fault, naming the files. Real services, nats-server and
Docker (busybox tasks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sites import federation
from sqlalchemy import select
from waiting import eventually

from services.executor import hashing, manifest, operations
from services.executor.store import PreparedDataset
from shared.db import UnitOfWork

pytestmark = pytest.mark.engine


class Reads:
    """Every file the site's hashing reads, by path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        original = hashing.file_digest

        def counted(path: str, buffer: bytearray) -> bytes:
            self.paths.append(path)
            return original(path, buffer)

        monkeypatch.setattr(hashing, "file_digest", counted)

    def of(self, prepared: Path) -> list[str]:
        return [p for p in self.paths if p.startswith(str(prepared))]


async def prepared_path(uow: UnitOfWork) -> Path:
    async with uow:
        (row,) = (await uow.session.scalars(select(PreparedDataset))).all()
        return Path(row.prepared_path)


async def test_n_models_cost_one_full_hash_and_a_changed_file_is_named(
    tmp_path: Path, busybox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)
    # Files written within 2 s of a scan are read again on the next check (coarse time stamps); this
    # test's jobs follow the preparation within 2 s, which a real dataset's do not.
    monkeypatch.setattr(manifest, "RACY_NS", 0)
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        prepared = await prepared_path(fed.uow())
        assert (prepared / manifest.MANIFEST_FILE).is_file()
        files = len(list((prepared / "data").rglob("*"))) + len(list((prepared / "labels").rglob("*")))
        models = [await fed.add_model(f"m{n}", "echo 1 > /out/p1") for n in range(3)]
        for model_id in models:
            assert (await fed.job_reaches(model_id, "succeeded")).status == "succeeded"
        # Preparation hashed each prepared file once; the reference model's and three models' jobs read none.
        assert len(reads.of(prepared)) == files

        # A changed byte, an added and a removed file: the re-run names them and fails as the data's.
        (prepared / "labels" / "case1.txt").write_text("1\n")
        (prepared / "data" / "extra.txt").write_text("x\n")
        job = await fed.job_of_model(models[0])
        assert job is not None
        again = await operations.rerun(fed.uow(), fed.site, job.id)

        async def failed() -> object:
            jobs = await fed.jobs()
            return next((j for j in jobs if j.id == again.id and j.status == "failed"), None)

        await eventually(failed, "the re-run to fail on changed data")
        done = await failed()
        assert done.failure == "data", done  # type: ignore[attr-defined]
        # Counts leave the site; the file names (they can identify patients) stay with `medperf dataset check`.
        assert "(1 changed, 1 added, 0 removed files)" in done.detail, done  # type: ignore[attr-defined]
        assert "case1.txt" not in done.detail and "extra.txt" not in done.detail  # type: ignore[attr-defined]
        (failed_event,) = [e for e in await fed.events(".job.failed") if e["job_id"] == again.id]
        assert "case1.txt" not in json.dumps(failed_event)
        # Only the changed and added files were read again, not the whole dataset.
        assert sorted(Path(p).name for p in reads.of(prepared)[files:]) == ["case1.txt", "extra.txt"]
