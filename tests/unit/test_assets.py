"""The executor's hosted-file layer against real local HTTP servers (no network beyond 127.0.0.1)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.executor.assets import (
    AssetCache,
    DirectSource,
    DownloadFailed,
    DownloadTooLarge,
    DownloadTooShort,
    HashMismatch,
    InvalidArchive,
    NotADirectDownload,
    SynapseLoginRequired,
    SynapseSource,
    UnknownSource,
    UnsafeArchive,
    load_synapse_token,
    safe_extract,
    save_synapse_token,
)
from services.executor.limits import DownloadLimits
from shared.containers import HostedFile

PAYLOAD = bytes(range(256)) * 400  # 100 KiB: several chunks, so interruptions land mid-stream


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- a small file host ------------------------------------------------------------------------


@dataclass
class Served:
    body: bytes
    content_type: str = "application/octet-stream"
    #: Honour ``Range`` with 206; when False the whole file is resent with 200.
    ranges: bool = True
    #: Cut the connection after this many body bytes, for the next ``drops`` responses.
    drop_after: int = 0
    drops: int = 0
    #: Error statuses to answer, in order, before serving the file.
    failures: list[int] = field(default_factory=list)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class FileHost(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.files: dict[str, Served] = {}
        self.seen: list[Seen] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"

    def hits(self, path: str) -> list[Seen]:
        return [request for request in self.seen if request.path == path]


class _FileHandler(BaseHTTPRequestHandler):
    server: FileHost

    def do_GET(self) -> None:
        self.server.seen.append(Seen(self.path, dict(self.headers)))
        served = self.server.files.get(self.path)
        if served is None:
            self.send_error(404)
            return
        if served.failures:
            self.send_error(served.failures.pop(0))
            return
        body = served.body
        etag = f'"{sha(body)[:16]}"'
        start = 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if wanted and served.ranges and (if_range is None or if_range == etag):
            start = int(wanted.group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", served.content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", etag)
        if served.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        rest = body[start:]
        if served.drops:
            served.drops -= 1
            # HTTP/1.0: returning closes the socket, leaving the client short of Content-Length.
            self.wfile.write(rest[: served.drop_after])
            return
        self.wfile.write(rest)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def host() -> Iterator[FileHost]:
    server = FileHost()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path: Path) -> AssetCache:
    return AssetCache(tmp_path / "cache", [DirectSource(backoff_seconds=0.01)])


def leftovers(cache: AssetCache) -> list[str]:
    return sorted(os.listdir(cache.root / "tmp"))


# --- direct downloads -------------------------------------------------------------------------


async def test_download_is_verified_and_stored_by_hash(host: FileHost, cache: AssetCache) -> None:
    host.files["/weights.bin"] = Served(PAYLOAD)
    progress: list[tuple[int, int | None]] = []

    path = await cache.fetch(
        HostedFile(source=host.url("/weights.bin"), sha256=sha(PAYLOAD)),
        on_progress=lambda done, total: progress.append((done, total)),
    )

    assert path == cache.root / "sha256" / sha(PAYLOAD)
    assert path.read_bytes() == PAYLOAD
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(cache) == []
    # Compression would make the hashed bytes differ from the registered file.
    assert host.seen[0].headers["Accept-Encoding"] == "identity"


async def test_direct_prefix_is_accepted(host: FileHost, cache: AssetCache) -> None:
    host.files["/f"] = Served(b"abc")
    path = await cache.fetch(HostedFile(source="direct:" + host.url("/f"), sha256=sha(b"abc")))
    assert path.read_bytes() == b"abc"


async def test_hash_mismatch_names_source_expected_and_actual(host: FileHost, cache: AssetCache) -> None:
    host.files["/f"] = Served(b"tampered")
    url = host.url("/f")
    expected = sha(b"original")

    with pytest.raises(HashMismatch) as caught:
        await cache.fetch(HostedFile(source=url, sha256=expected))

    message = str(caught.value)
    assert url in message
    assert expected in message
    assert sha(b"tampered") in message
    assert os.listdir(cache.root / "sha256") == []
    assert leftovers(cache) == []


async def test_cache_hit_makes_no_request(host: FileHost, tmp_path: Path) -> None:
    host.files["/f"] = Served(PAYLOAD)
    hosted = HostedFile(source=host.url("/f"), sha256=sha(PAYLOAD))

    first = await AssetCache(tmp_path / "c", [DirectSource()]).fetch(hosted)
    again = await AssetCache(tmp_path / "c", [DirectSource()]).fetch(hosted)

    assert first == again
    assert len(host.seen) == 1


async def test_changed_registered_hash_downloads_again(host: FileHost, cache: AssetCache) -> None:
    url = host.url("/f")
    host.files["/f"] = Served(b"version 1")
    old = await cache.fetch(HostedFile(source=url, sha256=sha(b"version 1")))

    # Same URL, new registration: the file must not be reused just because the URL matches.
    host.files["/f"] = Served(b"version 2")
    new = await cache.fetch(HostedFile(source=url, sha256=sha(b"version 2")))

    assert len(host.seen) == 2
    assert new.read_bytes() == b"version 2"
    assert old.read_bytes() == b"version 1"


async def test_interrupted_download_resumes_with_range(host: FileHost, cache: AssetCache) -> None:
    host.files["/big"] = Served(PAYLOAD, drop_after=30_000, drops=1)

    path = await cache.fetch(HostedFile(source=host.url("/big"), sha256=sha(PAYLOAD)))

    assert path.read_bytes() == PAYLOAD
    first, resumed = host.hits("/big")
    assert "Range" not in first.headers
    assert resumed.headers["Range"] == "bytes=30000-"
    # The resume is conditional on the file being unchanged since the first response.
    assert resumed.headers["If-Range"] == f'"{sha(PAYLOAD)[:16]}"'


async def test_interrupted_download_restarts_when_server_ignores_range(host: FileHost, cache: AssetCache) -> None:
    host.files["/big"] = Served(PAYLOAD, ranges=False, drop_after=30_000, drops=1)
    progress: list[int] = []

    path = await cache.fetch(
        HostedFile(source=host.url("/big"), sha256=sha(PAYLOAD)), on_progress=lambda done, _: progress.append(done)
    )

    assert path.read_bytes() == PAYLOAD
    assert len(host.hits("/big")) == 2
    assert 0 in progress  # the restart was reported as starting over


async def test_server_errors_are_retried(host: FileHost, cache: AssetCache) -> None:
    host.files["/f"] = Served(b"abc", failures=[503, 502])
    path = await cache.fetch(HostedFile(source=host.url("/f"), sha256=sha(b"abc")))
    assert path.read_bytes() == b"abc"
    assert len(host.seen) == 3


async def test_gives_up_after_three_attempts(host: FileHost, cache: AssetCache) -> None:
    host.files["/f"] = Served(b"abc", failures=[500, 500, 500])
    with pytest.raises(DownloadFailed, match="3 attempts"):
        await cache.fetch(HostedFile(source=host.url("/f"), sha256=sha(b"abc")))
    assert len(host.seen) == 3
    assert leftovers(cache) == []


async def test_client_errors_are_not_retried(host: FileHost, cache: AssetCache) -> None:
    with pytest.raises(DownloadFailed, match="404"):
        await cache.fetch(HostedFile(source=host.url("/missing"), sha256=sha(b"")))
    assert len(host.seen) == 1


async def test_connection_refused_is_a_download_failure(host: FileHost, cache: AssetCache) -> None:
    url = host.url("/f")
    host.shutdown()
    host.server_close()
    with pytest.raises(DownloadFailed, match="ConnectError"):
        await cache.fetch(HostedFile(source=url, sha256=sha(b"")))


async def test_html_page_is_refused_with_a_hint(host: FileHost, cache: AssetCache) -> None:
    host.files["/view/weights"] = Served(b"<p>a file viewer</p>", content_type="text/html; charset=utf-8")
    url = host.url("/view/weights")

    with pytest.raises(NotADirectDownload) as caught:
        await cache.fetch(HostedFile(source=url, sha256=sha(b"x")))

    message = str(caught.value)
    assert "returns a web page, not the file" in message
    assert "raw" in message
    assert f"curl -I {url}" in message
    assert leftovers(cache) == []


@pytest.mark.parametrize(
    "body",
    [b"<!DOCTYPE html><html><body>Sign in</body></html>", b"\n  <html>" + b"x" * 2000],
    ids=["short-doctype", "long-html"],
)
async def test_html_body_is_refused_even_with_binary_content_type(
    host: FileHost, cache: AssetCache, body: bytes
) -> None:
    host.files["/f"] = Served(body, content_type="application/octet-stream")
    with pytest.raises(NotADirectDownload):
        await cache.fetch(HostedFile(source=host.url("/f"), sha256=sha(body)))


async def test_fetch_unverified_pins_what_it_downloaded(host: FileHost, cache: AssetCache) -> None:
    host.files["/f"] = Served(PAYLOAD)

    path, digest = await cache.fetch_unverified(host.url("/f"))
    assert digest == sha(PAYLOAD)
    assert path.read_bytes() == PAYLOAD

    await cache.fetch(HostedFile(source=host.url("/f"), sha256=digest))
    assert len(host.seen) == 1


async def test_concurrent_fetches_download_once(host: FileHost, cache: AssetCache) -> None:
    host.files["/f"] = Served(PAYLOAD)
    hosted = HostedFile(source=host.url("/f"), sha256=sha(PAYLOAD))
    first, second = await asyncio.gather(cache.fetch(hosted), cache.fetch(hosted))
    assert first == second
    assert len(host.seen) == 1


async def test_unregistered_scheme_is_reported(cache: AssetCache) -> None:
    with pytest.raises(UnknownSource, match="synapse:syn1"):
        await cache.fetch(HostedFile(source="synapse:syn1", sha256=sha(b"")))


# --- archives ---------------------------------------------------------------------------------


#: A tar entry as ``TarFile.addfile`` takes it: header plus contents for regular files.
Member = tuple[tarfile.TarInfo, io.BytesIO | None]


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", data: bytes = b"") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(path: Path, members: list[Member], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A directory holding only the extraction target, so escapes show up as extra entries."""
    box = tmp_path / "box"
    box.mkdir()
    return box


def char_device() -> Member:
    info, _ = member("dev/null", tarfile.CHRTYPE)
    info.devmajor, info.devminor = 1, 3
    return info, None


UNSAFE: dict[str, tuple[list[Member], str]] = {
    "absolute-path": ([member("/tmp/evil", data=b"x")], "/tmp/evil"),
    "dotdot": ([member("../x", data=b"x")], "../x"),
    "dotdot-nested": ([member("a/../../x", data=b"x")], "a/../../x"),
    "symlink-etc-passwd": ([member("passwd", tarfile.SYMTYPE, linkname="/etc/passwd")], "passwd"),
    "symlink-dotdot": ([member("up", tarfile.SYMTYPE, linkname="../../outside")], "up"),
    "hardlink-outside": ([member("hl", tarfile.LNKTYPE, linkname="../../etc/passwd")], "hl"),
    "hardlink-absolute": ([member("hl", tarfile.LNKTYPE, linkname="/etc/passwd")], "hl"),
    "char-device": ([char_device()], "dev/null"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "pipe"),
    # Each link looks harmless alone: "s" is the directory itself and "e" is "s/..", which reads
    # as "." but resolves to the parent once "s" exists on disk.
    "symlink-chain": (
        [
            member("s", tarfile.SYMTYPE, linkname="."),
            member("e", tarfile.SYMTYPE, linkname="s/.."),
            member("e/escaped", data=b"x"),
        ],
        "e",
    ),
    # A harmless link created first, then a later link turns it into an escape.
    "symlink-redirected-later": (
        [
            member("l", tarfile.SYMTYPE, linkname="m/.."),
            member("m", tarfile.SYMTYPE, linkname="."),
        ],
        "l",
    ),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_safe_extract_refuses(case: str, tmp_path: Path, sandbox: Path) -> None:
    members, culprit = UNSAFE[case]
    archive = make_tar(tmp_path / "evil.tar.gz", members)

    with pytest.raises(UnsafeArchive) as caught:
        safe_extract(archive, sandbox / "dest")

    assert caught.value.member == culprit
    assert repr(culprit) in str(caught.value)
    assert os.listdir(sandbox) == ["dest"]


@pytest.mark.parametrize("mode", ["w:gz", "w"], ids=["tar.gz", "tar"])
def test_safe_extract_accepts_a_normal_tarball(mode: str, tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "ok.tar",
        [
            member("models", tarfile.DIRTYPE),
            member("models/weights.bin", data=PAYLOAD),
            member("models/config.json", data=b"{}"),
            member("latest", tarfile.SYMTYPE, linkname="models/weights.bin"),
            member("models/sub/up", tarfile.SYMTYPE, linkname="../config.json"),
            member("copy.json", tarfile.LNKTYPE, linkname="models/config.json"),
        ],
        mode,
    )
    dest = tmp_path / "dest"

    safe_extract(archive, dest)

    assert (dest / "models" / "weights.bin").read_bytes() == PAYLOAD
    assert (dest / "latest").read_bytes() == PAYLOAD
    assert (dest / "models" / "sub" / "up").read_bytes() == b"{}"
    assert (dest / "copy.json").read_bytes() == b"{}"


def test_safe_extract_rejects_a_non_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not a tarball" * 50)
    with pytest.raises(InvalidArchive, match=r"junk\.tar\.gz"):
        safe_extract(junk, tmp_path / "dest")


async def test_extracted_unpacks_once(host: FileHost, cache: AssetCache, tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "extra.tar.gz", [member("params/a.txt", data=b"hello")]).read_bytes()
    host.files["/extra.tar.gz"] = Served(archive)
    hosted = HostedFile(source=host.url("/extra.tar.gz"), sha256=sha(archive))

    tree = await cache.extracted(hosted)
    again = await cache.extracted(hosted)

    assert tree == again == cache.root / "extracted" / sha(archive)
    assert (tree / "params" / "a.txt").read_text() == "hello"
    assert len(host.seen) == 1
    assert leftovers(cache) == []


async def test_extracted_refusal_leaves_no_directory(host: FileHost, cache: AssetCache, tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "evil.tar.gz", [member("ok", data=b"1"), member("../x", data=b"x")]).read_bytes()
    host.files["/evil.tar.gz"] = Served(archive)

    with pytest.raises(UnsafeArchive, match=r"\.\./x"):
        await cache.extracted(HostedFile(source=host.url("/evil.tar.gz"), sha256=sha(archive)))

    assert os.listdir(cache.root / "extracted") == []
    assert leftovers(cache) == []


# --- Synapse ----------------------------------------------------------------------------------

TOKEN = "pat-for-tests"


class FakeSynapse(ThreadingHTTPServer):
    """Just enough of the Synapse REST API for ``syn.login`` and ``syn.get`` of one file entity."""

    daemon_threads = True

    def __init__(self, content: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _SynapseHandler)
        self.content = content
        self.seen: list[tuple[str, str, str | None]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def source(self, config_dir: Path) -> SynapseSource:
        return SynapseSource(
            config_dir,
            repo_endpoint=self.base + "/repo/v1",
            auth_endpoint=self.base + "/auth/v1",
            file_handle_endpoint=self.base + "/file/v1",
            portal_endpoint=self.base + "/",
        )

    def file_handle(self) -> dict[str, object]:
        return {
            "id": "42",
            "concreteType": "org.sagebionetworks.repo.model.file.S3FileHandle",
            "contentMd5": hashlib.md5(self.content).hexdigest(),
            "contentSize": len(self.content),
            "fileName": "extra.tar.gz",
            "contentType": "application/octet-stream",
        }


class _SynapseHandler(BaseHTTPRequestHandler):
    server: FakeSynapse

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, method: str) -> bool:
        auth = self.headers.get("Authorization")
        self.server.seen.append((method, self.path, auth))
        return auth == f"Bearer {TOKEN}"

    def do_GET(self) -> None:
        authorized = self._record("GET")
        if self.path == "/download/extra.tar.gz":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(self.server.content)))
            self.end_headers()
            self.wfile.write(self.server.content)
        elif not authorized:
            self._json(401, {"reason": "Invalid access token"})
        elif self.path.startswith("/repo/v1/userProfile"):
            self._json(200, {"ownerId": "1", "userName": "site-operator"})
        else:
            self._json(404, {"reason": f"{self.path} not found"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._record("POST"):
            self._json(401, {"reason": "Invalid access token"})
        elif self.path == "/repo/v1/entity/syn123/bundle2":
            self._json(
                200,
                {
                    "entity": {
                        "id": "syn123",
                        "name": "extra.tar.gz",
                        "concreteType": "org.sagebionetworks.repo.model.FileEntity",
                        "dataFileHandleId": "42",
                        "versionNumber": 1,
                        "etag": "etag-1",
                        "parentId": "syn1",
                    },
                    "entityType": "file",
                    "fileHandles": [self.server.file_handle()],
                    "annotations": {"id": "syn123", "etag": "etag-1", "annotations": {}},
                    "restrictionInformation": {"hasUnmetAccessRequirement": False},
                },
            )
        elif self.path == "/file/v1/fileHandle/batch":
            self._json(
                200,
                {
                    "requestedFiles": [
                        {
                            "fileHandleId": "42",
                            "fileHandle": self.server.file_handle(),
                            "preSignedURL": self.server.base + "/download/extra.tar.gz",
                        }
                    ]
                },
            )
        else:
            self._json(404, {"reason": f"{self.path} not found"})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def synapse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSynapse]:
    # Keep the real user's ~/.synapseConfig and token variable out of the test.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SYNAPSE_AUTH_TOKEN", raising=False)
    server = FakeSynapse(PAYLOAD)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


async def test_synapse_file_is_downloaded_and_verified(synapse: FakeSynapse, tmp_path: Path) -> None:
    config = tmp_path / "config"
    save_synapse_token(TOKEN, config)
    cache = AssetCache(tmp_path / "cache", [DirectSource(), synapse.source(config)])

    path = await cache.fetch(HostedFile(source="synapse:syn123", sha256=sha(PAYLOAD)))

    assert path.read_bytes() == PAYLOAD
    assert ("POST", "/repo/v1/entity/syn123/bundle2", f"Bearer {TOKEN}") in synapse.seen
    assert any(request[1] == "/download/extra.tar.gz" for request in synapse.seen)
    # synapseclient's own copy lived in scratch space that is gone now.
    assert leftovers(cache) == []


async def test_synapse_hash_mismatch(synapse: FakeSynapse, tmp_path: Path) -> None:
    config = tmp_path / "config"
    save_synapse_token(TOKEN, config)
    cache = AssetCache(tmp_path / "cache", [synapse.source(config)])

    with pytest.raises(HashMismatch, match="synapse:syn123") as caught:
        await cache.fetch(HostedFile(source="synapse:syn123", sha256=sha(b"something else")))
    assert caught.value.actual == sha(PAYLOAD)


async def test_synapse_sizes_are_checked_before_downloading(synapse: FakeSynapse, tmp_path: Path) -> None:
    """Synapse records each file's size: a file over the site's cap, or not of its declared size,
    is refused before a byte of it is fetched."""
    config = tmp_path / "config"
    save_synapse_token(TOKEN, config)
    hosted = HostedFile(source="synapse:syn123", sha256=sha(PAYLOAD))
    capped = AssetCache(tmp_path / "capped", [synapse.source(config)], downloads=DownloadLimits(max_bytes=1000))
    with pytest.raises(DownloadTooLarge, match="MEDPERF_SITE_DOWNLOAD_MAX_BYTES"):
        await capped.fetch(hosted)
    cache = AssetCache(tmp_path / "cache", [synapse.source(config)])
    with pytest.raises(DownloadTooLarge, match="declares 1000 bytes"):
        await cache.fetch(hosted.model_copy(update={"size": 1000}))
    with pytest.raises(DownloadTooShort):
        await cache.fetch(hosted.model_copy(update={"size": len(PAYLOAD) + 1}))
    assert not any(path.startswith("/download/") for _, path, _ in synapse.seen)
    assert (await cache.fetch(hosted.model_copy(update={"size": len(PAYLOAD)}))).read_bytes() == PAYLOAD


async def test_synapse_without_credentials_says_how_to_log_in(synapse: FakeSynapse, tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "cache", [synapse.source(tmp_path / "no-config")])

    with pytest.raises(SynapseLoginRequired, match="medperf auth synapse_login"):
        await cache.fetch(HostedFile(source="synapse:syn123", sha256=sha(PAYLOAD)))
    assert synapse.seen == []


async def test_synapse_rejected_token_says_how_to_log_in(synapse: FakeSynapse, tmp_path: Path) -> None:
    config = tmp_path / "config"
    save_synapse_token("expired-token", config)
    cache = AssetCache(tmp_path / "cache", [synapse.source(config)])

    with pytest.raises(SynapseLoginRequired, match="medperf auth synapse_login"):
        await cache.fetch(HostedFile(source="synapse:syn123", sha256=sha(PAYLOAD)))


# --- credentials ------------------------------------------------------------------------------


def test_token_is_saved_owner_only(tmp_path: Path) -> None:
    config = tmp_path / "config"
    path = save_synapse_token("  secret-pat\n", config)

    assert path == config / "synapse.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_synapse_token(config) == "secret-pat"
    assert [p.name for p in config.iterdir()] == ["synapse.json"]


def test_missing_token_is_none_and_damaged_token_is_an_error(tmp_path: Path) -> None:
    assert load_synapse_token(tmp_path) is None
    (tmp_path / "synapse.json").write_text("{not json")
    with pytest.raises(SynapseLoginRequired, match="medperf auth synapse_login"):
        load_synapse_token(tmp_path)
