"""The ingress's edge: what a request may be before anything else looks at it.

Two layers, both ahead of routing and authentication, so an anonymous caller costs no more than
the limits allow:

- ``BoundedHttp``, uvicorn's httptools protocol with a cap on the request line and headers (431)
  and a deadline for them (408): llhttp has no limit of its own, and httptools gathers a header's
  value in memory until it ends, so a 64 MiB header was read whole; a client sending a byte now
  and then kept its connection, and its memory, for ever.
- ``LimitedBodies``, ASGI middleware that refuses a body over the size limit (413) from its
  Content-Length before reading it, or as soon as the bytes read pass it, gives the client a
  deadline for the body (408), and measures a JSON body's depth and longest string before any
  parser sees it (``shared.limits``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.limits import LimitExceeded, Limits, check_document

#: How long a refused client may go on sending, its bytes discarded, before the connection closes.
LINGER_SECONDS = 2.0
Scope = dict[str, Any]
Message = dict[str, Any]


def bounded_http(limits: Limits) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with ``limits`` applied."""
    return type("BoundedHttp", (BoundedHttp,), {"limits": limits})


class BoundedHttp(HttpToolsProtocol):
    limits: Limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._lingering: asyncio.TimerHandle | None = None
        self._head_deadline: asyncio.TimerHandle | None = None
        super().connection_made(_Lingering(transport, self))  # type: ignore[arg-type]
        self._start_head()

    # --- the head: request line and headers ---------------------------------------------------

    def _start_head(self) -> None:
        #: Bytes received since the head began (a bound on memory while it streams in), and the
        #: size of what the parser has handed over (exact, once the head is complete).
        self._reading_head, self._head_received, self._head_parsed = True, 0, 0
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.limits.http_header_seconds, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # the answer is sent: what the client still sends is dropped unread
        if self._reading_head:
            self._head_received += len(data)
        super().data_received(data)
        # httptools gathers a header's value until its end: a head that streams past the limit
        # is refused while it arrives, not once it is whole.
        if self._reading_head and self._head_received > self.limits.http_header_bytes:
            self._head_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_head:  # the next request on a kept-alive connection
            self._start_head()

    def on_url(self, url: bytes) -> None:
        self._head_parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_parsed += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._lingering is not None:
            return  # a pipelined request behind a refused one: not served
        self._disarm_head_deadline()
        if self._head_parsed > self.limits.http_header_bytes:
            self._head_too_large()
            return
        self._reading_head = False
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._lingering is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests the keep-alive timeout applies; the next head gets its own deadline.
        self._reading_head = False
        self._disarm_head_deadline()

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_large(self) -> None:
        limit = self.limits.http_header_bytes
        self._refuse(431, f"the request line and headers exceed {limit:,} bytes (MEDPERF_LIMIT_HTTP_HEADER_BYTES)")

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self._reading_head or self._raw.is_closing():
            return
        if self._head_received == 0:  # idle since connecting or since its last answer: just close
            self._raw.close()
            return
        seconds = self.limits.http_header_seconds
        self._refuse(408, f"the request line and headers took over {seconds:g} s (MEDPERF_LIMIT_HTTP_HEADER_SECONDS)")

    def _refuse(self, status: int, message: str) -> None:
        if self._raw.is_closing() or self._lingering is not None:
            return
        body = json.dumps({"error": message}).encode()
        phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self._raw.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, phrase, len(body), body)
        )
        self._disarm_head_deadline()
        self._linger()

    # --- closing ---------------------------------------------------------------------------------

    def close_gracefully(self) -> None:
        """Close; but if the client may still be sending (a body refused before it was read), linger."""
        if self._raw.is_closing() or self._lingering is not None:
            return
        if self.cycle is not None and self.cycle.more_body:
            self._linger()
        else:
            self._raw.close()

    def _linger(self) -> None:
        """Send a FIN after the answer and discard what still comes for up to ``LINGER_SECONDS``:
        closed at once, unread bytes make the kernel reset the connection, and a client still
        writing its body never reads the 413 it was sent (nginx's "lingering close")."""
        if not self._raw.can_write_eof():
            self._raw.close()
            return
        self._raw.write_eof()
        self._raw.resume_reading()
        self._lingering = self.loop.call_later(LINGER_SECONDS, self._raw.close)

    def eof_received(self) -> bool | None:
        if self._lingering is not None:
            self._raw.close()  # the client has sent everything: done lingering
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)


class _Lingering:
    """The connection's transport as uvicorn sees it, but ``close`` lingers (``close_gracefully``)."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttp) -> None:
        self._transport = transport
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_gracefully()


class LimitedBodies:
    """ASGI middleware: the body is read here, within the limits, and handed on whole."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.http_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, 413, _too_large(declared, limit))
            return
        try:
            async with asyncio.timeout(self.limits.http_body_seconds):
                body = await _read_body(receive, limit)
        except TimeoutError:
            seconds = self.limits.http_body_seconds
            await _refuse(send, 408, f"the request body took over {seconds:g} s (MEDPERF_LIMIT_HTTP_BODY_SECONDS)")
            return
        except _BodyTooLarge as exc:
            await _refuse(send, 413, _too_large(exc.size, limit, at_least=True))
            return
        except _Disconnected:
            return
        if body and _is_json(scope):
            try:
                check_document(body, depth=self.limits.json_depth, string_bytes=self.limits.string_bytes)
            except LimitExceeded as exc:
                await _refuse(send, 413, f"the request body is refused: {exc}")
                return
        await self.app(scope, replay(body, receive), send)


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class _Disconnected(Exception):
    pass


async def _read_body(receive: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Any) -> Any:
    """A receive that hands over the body read already, then whatever the client does next
    (a disconnect, which a streaming response watches for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return b"json" in value.lower()
    return True  # FastAPI parses a body without a content type as JSON too


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    amount = f"over {limit:,}" if at_least else f"{size:,}"
    return f"the request body is {amount} bytes; the limit is {limit:,} (MEDPERF_LIMIT_HTTP_BODY_BYTES)"


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    # connection: close, so a client still sending a body it was refused is not read to its end.
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
