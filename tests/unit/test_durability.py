"""What a SQLite COMMIT waits for: the disk by default, so an acknowledged write survives a power
cut or an OS crash (before: synchronous=NORMAL, which survives only a crash of the process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db import Database
from shared.settings import Settings


async def pragma_in_a_service_database(state_dir: Path) -> int:
    settings = Settings(state_dir=state_dir)
    db = Database(settings.database_url_for("registry"), settings.sqlite_synchronous)
    try:
        async with db.sessions() as session:
            return (await session.execute(text("PRAGMA synchronous"))).scalar_one()
    finally:
        await db.dispose()


async def test_commits_wait_for_the_disk_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDPERF_SQLITE_SYNCHRONOUS", raising=False)
    assert await pragma_in_a_service_database(tmp_path) == 2  # FULL


async def test_an_operator_may_trade_safety_for_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPERF_SQLITE_SYNCHRONOUS", "NORMAL")
    assert await pragma_in_a_service_database(tmp_path) == 1  # NORMAL
