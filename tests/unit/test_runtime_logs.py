"""The executor keeps a bounded copy of a task's log even when the engine hands it more (a log
driver without a size limit): the first ``limit`` bytes, a note, and the last bytes."""

from __future__ import annotations

from pathlib import Path

from services.executor.runtime import TAIL_BYTES, DockerRuntime, read_tail


class Chatty:
    """Stands in for a finished container whose engine kept 10 MB of output."""

    def logs(self, **_: object) -> list[bytes]:
        return [b"x" * 1023 + b"\n"] * 10_240 + [b"the end\n"]


def test_a_flooded_log_is_cut_at_the_limit_keeping_the_end(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    DockerRuntime._save_logs(Chatty(), log, limit=64 * 1024)  # type: ignore[arg-type]
    kept = log.read_bytes()
    assert len(kept) <= 64 * 1024 + TAIL_BYTES + 200
    assert b"log cut at 65536 bytes; 10420232 bytes dropped" in kept
    assert read_tail(log).splitlines()[-1] == "the end"


def test_a_log_under_the_limit_is_kept_whole(tmp_path: Path) -> None:
    log = tmp_path / "task.log"
    DockerRuntime._save_logs(Chatty(), log, limit=11 * 2**20)  # type: ignore[arg-type]
    assert log.stat().st_size == 10_240 * 1024 + 8 and b"log cut" not in log.read_bytes()
