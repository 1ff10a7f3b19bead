"""What a SQLite COMMIT waits for: the disk by default, so an acknowledged write survives a power
cut or an OS crash (before: synchronous=NORMAL, which survives only a crash of the process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db import Database
from shared.settings import Settings


async def pragma(db: Database) -> int:
    async with db.sessions() as session:
        return (await session.execute(text("PRAGMA synchronous"))).scalar_one()


async def test_commits_wait_for_the_disk_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDPERF_SQLITE_SYNCHRONOUS", raising=False)
    settings = Settings(state_dir=tmp_path)
    db = Database(settings.database_url_for("registry"), settings.sqlite_synchronous)
    try:
        assert await pragma(db) == 2  # FULL
    finally:
        await db.dispose()


async def test_an_operator_may_trade_power_cut_safety_for_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDPERF_SQLITE_SYNCHRONOUS", "NORMAL")
    settings = Settings(state_dir=tmp_path)
    db = Database(settings.database_url_for("registry"), settings.sqlite_synchronous)
    try:
        assert await pragma(db) == 1  # NORMAL
    finally:
        await db.dispose()
