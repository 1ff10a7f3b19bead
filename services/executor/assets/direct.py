"""Files named by a direct-download http(s) URL."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import BinaryIO

import httpx

from services.executor.assets.base import Source, StreamHasher
from services.executor.assets.errors import DownloadFailed, NotADirectDownload

_URL = re.compile(r"^(direct:)?https?://", re.IGNORECASE)
_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html[\s>])", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
#: Enough of the body to recognise an HTML page that was served with a non-HTML Content-Type.
_SNIFF_BYTES = 512
#: Statuses worth asking again for; any other error status will not change on a retry.
_TRANSIENT_STATUS = frozenset({408, 425, 429})


class _Transient(Exception):
    """A failure a later attempt may not hit (network trouble, 5xx); the message says what happened."""


class DirectSource(Source):
    """Streams a URL with httpx, retrying transient failures and resuming with ``Range`` when it can."""

    def __init__(
        self,
        *,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        # The read timeout bounds the silence between two chunks, not the whole transfer, so large
        # files on slow links still complete while a stalled server is noticed.
        self.timeout = timeout or httpx.Timeout(60.0, connect=15.0)

    def matches(self, source: str) -> bool:
        return bool(_URL.match(source))

    async def fetch(self, source: str, dest: Path, hasher: StreamHasher) -> None:
        url = source.removeprefix("direct:")
        # identity: the registered hash is of the file as stored, and Range offsets must count the
        # same bytes we write, so no transfer compression may sit in between.
        headers = {"Accept-Encoding": "identity"}
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True, headers=headers) as client:
            with dest.open("wb") as out:
                validator: list[str] = []
                failure = ""
                for attempt in range(1, self.attempts + 1):
                    try:
                        await self._attempt(client, url, source, out, hasher, validator)
                        return
                    except _Transient as exc:
                        failure = str(exc)
                    if attempt < self.attempts:
                        await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise DownloadFailed(source, f"gave up after {self.attempts} attempts; last error: {failure}")

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        url: str,
        source: str,
        out: BinaryIO,
        hasher: StreamHasher,
        validator: list[str],
    ) -> None:
        """One GET, continuing from ``hasher.done`` bytes if an earlier attempt was cut off.

        ``validator`` carries the first response's ETag/Last-Modified between attempts so that a
        resume is only honoured if the file on the server is still the one we started reading.
        """
        request_headers: dict[str, str] = {}
        if hasher.done:
            request_headers["Range"] = f"bytes={hasher.done}-"
            if validator:
                request_headers["If-Range"] = validator[0]
        try:
            async with client.stream("GET", url, headers=request_headers) as response:
                status = response.status_code
                if status >= 500 or status in _TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {status} {response.reason_phrase}")
                if status == 206 and hasher.done:
                    total = self._check_resume(response, hasher.done, out, hasher)
                elif status == 200:
                    if hasher.done:
                        # The server ignored the Range (or the file changed): start over, or the
                        # file would be the old prefix glued to a whole new copy.
                        _restart(out, hasher)
                    if "text/html" in response.headers.get("Content-Type", "").lower():
                        raise NotADirectDownload(source)
                    etag = response.headers.get("ETag", "")
                    # A weak ETag may not be used in If-Range; Last-Modified is the fallback.
                    found = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
                    validator[:] = [found] if found else []
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                elif status == 416 and hasher.done:
                    _restart(out, hasher)
                    raise _Transient("the server refused to resume the interrupted download")
                else:
                    raise DownloadFailed(source, f"the server answered HTTP {status} {response.reason_phrase}")
                hasher.expect(total)
                await self._copy_body(response, source, out, hasher, sniff=hasher.done == 0)
                if total is not None and hasher.done != total:
                    raise _Transient(f"connection closed after {hasher.done} of {total} bytes")
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise DownloadFailed(source, f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _check_resume(response: httpx.Response, offset: int, out: BinaryIO, hasher: StreamHasher) -> int | None:
        """Accept a 206 only if it continues exactly where we stopped; returns the full size."""
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            _restart(out, hasher)
            raise _Transient("the server resumed at a different offset than requested")
        return None if match.group(3) == "*" else int(match.group(3))

    async def _copy_body(
        self, response: httpx.Response, source: str, out: BinaryIO, hasher: StreamHasher, *, sniff: bool
    ) -> None:
        # Raw bytes: the content as sent, never decoded, which with identity encoding is the file.
        # No chunk_size: httpx would hold bytes back to fill a chunk, and bytes still held when the
        # connection drops are bytes a resume has to fetch again.
        head = bytearray()
        async for chunk in response.aiter_raw():
            if sniff:
                head += chunk
                if len(head) < _SNIFF_BYTES:
                    continue
                chunk, sniff = bytes(head), False
                _refuse_html(chunk, source)
            hasher.update(chunk)  # first: it refuses a chunk over the size cap before it is stored
            out.write(chunk)
        if sniff and head:
            _refuse_html(bytes(head), source)
            hasher.update(bytes(head))
            out.write(head)


def _refuse_html(head: bytes, source: str) -> None:
    if _HTML_START.match(head.removeprefix(_BOM)):
        raise NotADirectDownload(source)


def _restart(out: BinaryIO, hasher: StreamHasher) -> None:
    out.seek(0)
    out.truncate()
    hasher.reset()
