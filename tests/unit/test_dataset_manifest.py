"""The prepared dataset's manifest: a metadata check before each job, re-hashing only what changed."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.executor import manifest as manifests
from services.executor.manifest import DatasetChanged, Manifest, build, check_prepared, verify
from services.executor.workflow import tree_hash

OPENED: list[str] = []
WATCHED: list[str] = []  # directories whose file opens OPENED records


def _audit(event: str, args: tuple) -> None:
    if event == "open" and WATCHED and isinstance(args[0], str) and args[0].startswith(WATCHED[0]):
        OPENED.append(args[0])


sys.addaudithook(_audit)  # sees every open() and os.open() of the process; cannot be removed


@pytest.fixture
def opens(tmp_path: Path) -> Iterator[list[str]]:
    """The files under ``tmp_path`` this process opens while the test runs."""
    WATCHED[:] = [str(tmp_path)]
    OPENED.clear()
    yield OPENED
    WATCHED.clear()


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written before a scan count as settled at once (not only after ``RACY_NS``), as a
    dataset prepared hours before its first job is."""
    monkeypatch.setattr(manifests, "RACY_NS", 0)


def make_tree(base: Path, files: int = 6) -> tuple[Path, Path]:
    data, labels = base / "data", base / "labels"
    for n in range(files):
        path = data / f"case-{n % 3}" / f"slice-{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"slice {n}".encode() * 10)
    labels.mkdir(parents=True)
    (labels / "labels.csv").write_text("id,label\n")
    return data, labels


def test_a_changed_byte_is_found(tmp_path: Path) -> None:
    data, labels = make_tree(tmp_path)
    before = build(data, labels)
    target = data / "case-1" / "slice-4.dcm"
    content = bytearray(target.read_bytes())
    content[3] ^= 1
    target.write_bytes(bytes(content))

    result = verify(before, data, labels)
    assert result.changed == ["data/case-1/slice-4.dcm"]
    assert (result.added, result.removed) == ([], [])
    assert result.digest == tree_hash(data, labels) != before.digest


def test_removed_and_added_files_are_found(tmp_path: Path) -> None:
    data, labels = make_tree(tmp_path)
    before = build(data, labels)
    (data / "case-0" / "slice-3.dcm").unlink()
    (labels / "extra.csv").write_text("1,1\n")

    result = verify(before, data, labels)
    assert (result.changed, result.added, result.removed) == ([], ["labels/extra.csv"], ["data/case-0/slice-3.dcm"])
    assert result.digest == tree_hash(data, labels)


def test_the_manifest_survives_reloading(tmp_path: Path, settled: None, opens: list[str]) -> None:
    data, labels = make_tree(tmp_path)
    built = build(data, labels)
    built.save(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path / "manifest.json")
    assert loaded == built
    opens.clear()

    result = verify(loaded, data, labels)
    assert result.unchanged and result.rehashed == 0 and opens == []
    assert result.digest == tree_hash(data, labels)


def test_an_unchanged_tree_of_10000_files_is_verified_without_reading_a_file(
    tmp_path: Path, settled: None, opens: list[str]
) -> None:
    data, labels = make_tree(tmp_path, files=10_000)
    opens.clear()
    built = build(data, labels)
    assert len(opens) == 10_001  # the audit hook sees the hashing's reads
    opens.clear()

    result = verify(built, data, labels)
    assert result.unchanged and result.rehashed == 0
    assert opens == []
    assert result.digest == built.digest == tree_hash(data, labels)


def test_a_same_size_rewrite_that_restores_mtime_is_found_by_its_ctime(tmp_path: Path, settled: None) -> None:
    data, labels = make_tree(tmp_path)
    target = data / "case-2" / "slice-5.dcm"
    before = build(data, labels)
    recorded = before.files[(0, "case-2/slice-5.dcm")]
    # Until the kernel's (coarse) clock has moved past the recorded ctime: a write in the same
    # tick keeps it, which RACY_NS covers outside this test.
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    while probe.stat().st_ctime_ns <= recorded.ctime_ns:
        probe.write_bytes(b"")

    stat = target.stat()
    target.write_bytes(target.read_bytes().upper())  # same size, same inode
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns, target.stat().st_ino) == (
        recorded.size,
        recorded.mtime_ns,
        recorded.inode,
    )
    assert verify(before, data, labels).changed == ["data/case-2/slice-5.dcm"]


def test_a_full_check_finds_what_the_metadata_check_cannot(tmp_path: Path, settled: None) -> None:
    data, labels = make_tree(tmp_path)
    before = build(data, labels)
    target = data / "case-0" / "slice-0.dcm"
    target.write_bytes(target.read_bytes().upper())
    # As if the bytes had changed behind the file system's back (a disk edited offline): the
    # metadata the manifest holds is the file's current metadata, recorded after the change.
    stat = target.stat()
    key = (0, "case-0/slice-0.dcm")
    records = dict(before.files)
    records[key] = dataclasses.replace(
        records[key], mtime_ns=stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns, inode=stat.st_ino
    )
    blind = dataclasses.replace(before, files=records, scanned_ns=time.time_ns())

    assert verify(blind, data, labels).unchanged
    full = verify(blind, data, labels, full=True)
    assert full.changed == ["data/case-0/slice-0.dcm"] and full.rehashed == 7


def test_before_a_job_a_changed_dataset_is_named(tmp_path: Path, settled: None, opens: list[str]) -> None:
    data, labels = make_tree(tmp_path)
    registered = tree_hash(data, labels)
    saved = tmp_path / "manifest.json"

    first = check_prepared(saved, (data, labels), registered)  # no manifest yet: hashes all, saves one
    assert first.rehashed == 7 and Manifest.load(saved).digest == registered
    opens.clear()
    assert check_prepared(saved, (data, labels), registered).rehashed == 0
    assert opens == [str(saved)]  # the manifest, and not one file of the dataset

    (data / "case-1" / "slice-1.dcm").write_bytes(b"tampered")
    for _ in range(2):  # the manifest still describes the registered data: named again
        with pytest.raises(DatasetChanged, match=r"changed data/case-1/slice-1\.dcm"):
            check_prepared(saved, (data, labels), registered)
    assert Manifest.load(saved).digest == registered


def test_without_a_manifest_a_changed_dataset_is_still_refused(tmp_path: Path) -> None:
    data, labels = make_tree(tmp_path)
    registered = tree_hash(data, labels)
    (labels / "labels.csv").write_text("id,label\n1,1\n")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetChanged, match="its digest differs from the registered one"):
        check_prepared(tmp_path / "manifest.json", (data, labels), registered)


def test_a_full_check_reports_its_progress_in_bytes(tmp_path: Path) -> None:
    """`medperf dataset check` shows a bar: the full check tells how many bytes it read, of how many."""
    data, labels = make_tree(tmp_path / "prepared")
    registered = build(data, labels)
    registered.save(tmp_path / "prepared" / manifests.MANIFEST_FILE)
    total = sum(p.stat().st_size for p in (*data.rglob("*"), *labels.rglob("*")) if p.is_file())
    told: list[tuple[int, int]] = []
    manifests.check_before_job(
        tmp_path / "prepared", (data, labels), registered.digest, 0.0, lambda done, of: told.append((done, of))
    )
    assert told and told[-1] == (total, total)
