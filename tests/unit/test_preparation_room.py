"""A preparation that cannot fit on the site's disk is refused before it starts, with the numbers.
The raw data here is a sparse file whose size passes the disk's real free space (it takes no room)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from services.executor.assets import AssetCache
from services.executor.workflow import TaskFailed, Workflow, check_room
from shared.containers import ContainerSpec


def raw_tree(root: Path, size: int) -> tuple[Path, Path]:
    data, labels = root / "data", root / "labels"
    data.mkdir(parents=True)
    labels.mkdir()
    with (data / "scan.nii").open("wb") as sparse:
        sparse.truncate(size)
    (labels / "labels.csv").write_text("case,label\n")
    return data, labels


async def test_a_preparation_larger_than_the_free_disk_is_refused_with_the_numbers(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    data, labels = raw_tree(tmp_path / "raw", free + 2**30)
    assert os.stat(data / "scan.nii").st_blocks == 0  # sparse: the test itself uses no room
    spec = ContainerSpec(image="p:1", image_digest="sha256:" + "0" * 64, tasks={"prepare": {"command": ["p"]}})
    workflow = Workflow(None, AssetCache(tmp_path / "cache", []), tmp_path, 60)  # no engine: it must not get that far
    with pytest.raises(TaskFailed) as refused:
        await workflow.prepare(spec, data, labels, tmp_path / "site" / "prepared")
    message = str(refused.value)
    assert refused.value.fault == "infrastructure"
    assert "needs about" in message and "free" in message and "MEDPERF_SITE_WORK_DIR" in message


def test_a_preparation_that_fits_is_not_refused(tmp_path: Path) -> None:
    data, labels = raw_tree(tmp_path / "raw", 4096)
    check_room(data, labels, tmp_path / "site")
