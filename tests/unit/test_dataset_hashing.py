"""Tree hashing: the registered digest definition, in bounded memory, on every core."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.executor import hashing
from services.executor.workflow import tree_hash


def registered_digest(*roots: Path) -> str:
    """The definition sites registered their datasets with (the first release's tree_hash)."""
    digest = hashlib.sha256()
    for index, root in enumerate(roots):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{index}:{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def make_tree(base: Path) -> tuple[Path, Path]:
    data, labels = base / "data", base / "labels"
    files = {
        data / "a" / "b": b"nested",  # sorts before "a-c" part by part, after it as a plain string
        data / "a-c": b"dash",
        data / "a" / "deeper" / "x" / "y.nii": os.urandom(3 * hashing.CHUNK + 17),  # spans chunks
        data / "empty": b"",
        data / "sub" / "empty-too": b"",
        data / ".hidden": b"dot",
        data / "patient-é" / "ü 日本.dcm": b"unicode",
        labels / "labels.csv": b"id,label\n1,0\n",
        labels / "Z": b"upper sorts first",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (data / "empty-dir").mkdir()
    (data / "link-to-file").symlink_to(data / "a-c")  # counted, as its target
    (data / "link-to-dir").symlink_to(data / "a", target_is_directory=True)  # not entered
    (data / "dangling").symlink_to(data / "nowhere")  # not a file
    return data, labels


def test_the_digest_is_the_registered_one(tmp_path: Path) -> None:
    data, labels = make_tree(tmp_path)
    expected = registered_digest(data, labels)
    assert tree_hash(data, labels) == expected
    assert hashing.tree_hash(data, labels, workers=1) == expected
    assert hashing.tree_hash(data, labels, workers=7) == expected
    # A root's position counts, and a missing root holds nothing, as before.
    assert tree_hash(labels, data) == registered_digest(labels, data)
    assert tree_hash(data, tmp_path / "missing") == registered_digest(data, tmp_path / "missing")


def test_progress_reaches_the_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, labels = make_tree(tmp_path)
    monkeypatch.setattr(hashing, "PROGRESS_EVERY", 1)
    calls: list[tuple[int, int]] = []
    hashing.tree_hash(data, labels, progress=lambda done, total: calls.append((done, total)))
    total = sum(found.stat.st_size for found in hashing.walk(data, labels))
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_a_file_that_cannot_be_read_fails_the_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, labels = make_tree(tmp_path)

    def unreadable(path: str, buffer: bytearray) -> bytes:
        raise PermissionError(f"cannot read {path}")

    monkeypatch.setattr(hashing, "file_digest", unreadable)
    with pytest.raises(PermissionError):
        hashing.tree_hash(data, labels)


# Hashes a sparse file (no disk space, reads as zeros) in a fresh process and prints how far the
# peak resident set rose above what the process held just before.
MEASURE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.executor.workflow import tree_hash

    def kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    before = kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak := now
    tree_hash(Path(sys.argv[1]))
    print(kib("VmHWM") - before)
    """
)


def test_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    with (root / "scan.raw").open("wb") as file:
        file.truncate(384 << 20)
    (root / "small").write_bytes(b"x")
    grown = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    growth_mib = int(grown.stdout) / 1024
    assert growth_mib < 64, f"hashing a 384 MiB file took {growth_mib:.0f} MiB more memory"
