"""The site's bounds on hosted files, against real archives on disk and real HTTP servers on
127.0.0.1: extraction (bytes written, members, ratio, tar headers), downloads (size cap, overall
deadline, declared size). Limits are lowered so each hostile input costs the test little."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from zeros import Zeros

from services.executor.assets import (
    ArchiveTooLarge,
    AssetCache,
    DirectSource,
    DownloadFailed,
    DownloadTimedOut,
    DownloadTooLarge,
    DownloadTooShort,
    InvalidArchive,
    RefusedAsset,
    safe_extract,
)
from services.executor.limits import DownloadLimits, ExtractionLimits, MiB
from shared.containers import HostedFile


def regular(name: str, size: int, data: io.RawIOBase | io.BytesIO | None = None) -> tuple[tarfile.TarInfo, object]:
    info = tarfile.TarInfo(name)
    info.size = size
    return info, data if data is not None else Zeros(size)


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, object]], **options: object) -> Path:
    with tarfile.open(path, "w:gz", **options) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, data)
    return path


def disk_bytes(root: Path) -> int:
    """Bytes under ``root``, each file counted once however many names (hard links) it has."""
    sizes: dict[int, int] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            sizes[info.st_ino] = info.st_size
    return sum(sizes.values())


def entries(root: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(root))


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [1, 64], ids=["one-member", "64-members"])
def test_a_gzip_bomb_is_stopped_at_the_byte_limit(tmp_path: Path, members: int) -> None:
    """256 MiB of zeros in about 250 KiB, as one file or many: at most the limit is written."""
    bomb = make_tar(tmp_path / "bomb.tar.gz", [regular(f"w{i}", 256 * MiB // members) for i in range(members)])
    limits = ExtractionLimits(max_bytes=16 * MiB, max_ratio=10_000)
    started = time.monotonic()

    with pytest.raises(ArchiveTooLarge) as caught:
        safe_extract(bomb, tmp_path / "dest", limits)

    assert isinstance(caught.value, InvalidArchive) and isinstance(caught.value, RefusedAsset)
    assert caught.value.setting == "MEDPERF_SITE_EXTRACT_MAX_BYTES" in str(caught.value)
    written = disk_bytes(tmp_path / "dest")
    assert written <= 16 * MiB and caught.value.written == written
    print(
        f"\n[figures] gzip bomb of {members} member(s): {bomb.stat().st_size} B compressed, 256 MiB inside; "
        f"stopped after writing {written} B (limit {16 * MiB}) in {time.monotonic() - started:.2f} s"
    )


def test_a_header_that_claims_more_than_is_left_is_refused_before_writing(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [regular("small", 1000), regular("huge", 64 * MiB)])
    with pytest.raises(ArchiveTooLarge, match="huge"):
        safe_extract(archive, tmp_path / "dest", ExtractionLimits(max_bytes=8 * MiB, max_ratio=10_000))
    assert disk_bytes(tmp_path / "dest") == 1000


def test_an_archive_of_many_empty_files_is_refused_at_the_member_limit(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "many.tar.gz", [regular(f"f{i:05}", 0) for i in range(5000)])
    with pytest.raises(ArchiveTooLarge) as caught:
        safe_extract(archive, tmp_path / "dest", ExtractionLimits(max_members=1000))
    assert caught.value.setting == "MEDPERF_SITE_EXTRACT_MAX_MEMBERS" in str(caught.value)
    assert entries(tmp_path / "dest") <= 1000


def test_the_ratio_limit_applies_above_its_floor(tmp_path: Path) -> None:
    dense = make_tar(tmp_path / "dense.tar.gz", [regular("zeros", 32 * MiB)])
    limits = ExtractionLimits(max_ratio=100, ratio_floor=1 * MiB)
    with pytest.raises(ArchiveTooLarge) as caught:
        safe_extract(dense, tmp_path / "dense", limits)
    assert caught.value.setting == "MEDPERF_SITE_EXTRACT_MAX_RATIO" in str(caught.value)
    assert disk_bytes(tmp_path / "dense") <= max(100 * dense.stat().st_size, 1 * MiB)
    # A small archive of very compressible files (label masks, say) stays under the floor: accepted.
    masks = make_tar(tmp_path / "masks.tar.gz", [regular("mask.raw", 512 * 1024)])
    safe_extract(masks, tmp_path / "masks", limits)
    assert (tmp_path / "masks" / "mask.raw").stat().st_size == 512 * 1024


def test_hard_links_cannot_write_data_their_headers_do_not_declare(tmp_path: Path) -> None:
    """tarfile copies a hard link's target when the link's path does not resolve on disk: fifty
    headers of size 0 then write fifty copies. Only the declared data may be written."""
    data = os.urandom(1 * MiB)
    links = []
    for i in range(50):
        link = tarfile.TarInfo(f"copy{i}")
        link.type, link.linkname = tarfile.LNKTYPE, "missing/../weights"
        links.append((link, None))
    archive = make_tar(tmp_path / "links.tar.gz", [regular("weights", len(data), io.BytesIO(data)), *links])

    safe_extract(archive, tmp_path / "dest")

    assert disk_bytes(tmp_path / "dest") <= 1 * MiB
    assert (tmp_path / "dest" / "copy49").read_bytes() == data


def test_a_huge_tar_header_is_refused_without_holding_it_in_memory(tmp_path: Path) -> None:
    info, content = regular("weights.bin", 3, io.BytesIO(b"abc"))
    info.pax_headers = {"comment": "x" * (32 * MiB)}
    archive = make_tar(tmp_path / "pax.tar.gz", [(info, content)], format=tarfile.PAX_FORMAT)

    tracemalloc.start()
    try:
        with pytest.raises(InvalidArchive, match="header"):
            safe_extract(archive, tmp_path / "dest")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak
    print(f"\n[figures] a 32 MiB pax header: refused, peak Python memory {peak} B")


# --- downloads --------------------------------------------------------------------------------


class HostileHost(ThreadingHTTPServer):
    """``/endless/N``: zeros without a Content-Length, up to N bytes (a test's safety stop);
    ``/claims/N``: a Content-Length of N, then zeros; ``/slow/N``: N bytes, one every 0.2 s;
    ``/body/N`` and ``/unsized/N``: N bytes, with and without a Content-Length."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.sent: dict[str, int] = {}
        self.requests: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


class _HostileHandler(BaseHTTPRequestHandler):
    server: HostileHost

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        # Before the headers: a client refusing them may hang up before the first byte goes out.
        self.server.sent[self.path] = 0
        kind, size = self.path.strip("/").split("/")
        total = int(size)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if kind in ("claims", "slow", "body"):
            self.send_header("Content-Length", str(total))
        self.end_headers()
        chunk, pause = (1, 0.2) if kind == "slow" else (64 * 1024, 0.0)
        sent = 0
        try:
            while sent < total:
                piece = min(chunk, total - sent)
                self.wfile.write(b"\0" * piece)
                self.wfile.flush()
                sent += piece
                self.server.sent[self.path] = sent
                time.sleep(pause)
        except OSError:
            pass  # the client hung up: what the caps are for

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[HostileHost]:
    server = HostileHost()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def capped(tmp_path: Path, **limits: float) -> AssetCache:
    return AssetCache(tmp_path / "cache", [DirectSource(backoff_seconds=0.01)], downloads=DownloadLimits(**limits))


def zeros(size: int, declared: int | None = None, *, source: str) -> HostedFile:
    return HostedFile(source=source, sha256=hashlib.sha256(bytes(size)).hexdigest(), size=declared)


def leftovers(cache: AssetCache) -> list[str]:
    return sorted(os.listdir(cache.root / "tmp"))


async def test_an_endless_download_stops_at_the_size_cap(hostile: HostileHost, tmp_path: Path) -> None:
    cache = capped(tmp_path, max_bytes=4 * MiB)
    url = hostile.url(f"/endless/{256 * MiB}")

    with pytest.raises(DownloadTooLarge) as caught:
        await cache.fetch(zeros(1, source=url))

    assert isinstance(caught.value, RefusedAsset)  # the container's owner must fix it: not retried
    assert caught.value.setting == "MEDPERF_SITE_DOWNLOAD_MAX_BYTES" in str(caught.value)
    assert hostile.requests == [f"/endless/{256 * MiB}"]
    # What the host managed to send: the cap, plus what the sockets' buffers took in.
    assert hostile.sent[hostile.requests[0]] < 32 * MiB
    assert leftovers(cache) == []
    sent = hostile.sent[hostile.requests[0]]
    print(f"\n[figures] endless body, cap 4 MiB: the host got {sent} B out before the hang-up")


async def test_a_content_length_over_the_cap_is_refused_before_reading(hostile: HostileHost, tmp_path: Path) -> None:
    cache = capped(tmp_path, max_bytes=4 * MiB)
    progress: list[int] = []
    with pytest.raises(DownloadTooLarge, match="MEDPERF_SITE_DOWNLOAD_MAX_BYTES"):
        await cache.fetch(
            zeros(1, source=hostile.url(f"/claims/{1024 * MiB}")), on_progress=lambda done, _: progress.append(done)
        )
    assert not any(progress)
    assert leftovers(cache) == []


async def test_a_slow_host_meets_the_overall_deadline(hostile: HostileHost, tmp_path: Path) -> None:
    """A byte every 0.2 s never trips the per-read timeout; the deadline covers the whole transfer."""
    cache = capped(tmp_path, deadline_seconds=1.0)
    started = time.monotonic()

    with pytest.raises(DownloadTimedOut) as caught:
        await cache.fetch(zeros(50, source=hostile.url("/slow/50")))

    assert time.monotonic() - started < 3
    assert isinstance(caught.value, DownloadFailed) and not isinstance(caught.value, RefusedAsset)
    assert "MEDPERF_SITE_DOWNLOAD_DEADLINE" in str(caught.value)
    assert leftovers(cache) == []


@pytest.mark.parametrize("kind", ["body", "unsized"])
async def test_a_body_longer_than_its_declared_size_is_refused(hostile: HostileHost, tmp_path: Path, kind: str) -> None:
    cache = capped(tmp_path)
    path = f"/{kind}/{256 * MiB}"
    with pytest.raises(DownloadTooLarge, match="declares 1048576 bytes"):
        await cache.fetch(zeros(1, declared=1 * MiB, source=hostile.url(path)))
    # With a Content-Length nothing is read; without one, reading stops at the declared size (the
    # host got rid of more: what the sockets' buffers took in).
    assert hostile.sent[path] < 32 * MiB
    assert leftovers(cache) == []


@pytest.mark.parametrize("kind", ["body", "unsized"])
async def test_a_body_shorter_than_its_declared_size_fails(hostile: HostileHost, tmp_path: Path, kind: str) -> None:
    cache = capped(tmp_path)
    with pytest.raises(DownloadTooShort, match="declares 2000 bytes"):
        await cache.fetch(zeros(1000, declared=2000, source=hostile.url(f"/{kind}/1000")))
    assert leftovers(cache) == []


async def test_a_body_of_its_declared_size_is_stored(hostile: HostileHost, tmp_path: Path) -> None:
    cache = capped(tmp_path, max_bytes=1 * MiB)
    path = await cache.fetch(zeros(1000, declared=1000, source=hostile.url("/unsized/1000")))
    assert path.read_bytes() == bytes(1000)


def test_the_declared_size_is_optional_and_left_out_when_absent() -> None:
    plain = {"source": "https://example.org/w.tgz", "sha256": "ab" * 32}
    assert HostedFile.model_validate(plain).model_dump(mode="json") == plain
    sized = HostedFile.model_validate({**plain, "size": 10})
    assert sized.size == 10 and sized.model_dump(mode="json") == {**plain, "size": 10}
    with pytest.raises(ValueError):
        HostedFile.model_validate({**plain, "size": -1})
