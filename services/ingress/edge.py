"""The ingress's edge: what a request may be before anything else looks at it.

Two layers, both ahead of routing and authentication, so an anonymous caller costs no more than
the limits allow:

- ``BoundedHttp``, uvicorn's httptools protocol with a cap on the request line and headers (431)
  and deadlines for them and for the body (408): llhttp has no limit of its own, and httptools
  gathers a header's value in memory until it ends, so a 64 MiB header was read whole; a client
  sending a byte now and then kept its connection, and its memory, for ever.
- ``LimitedBodies``, ASGI middleware that refuses a body over the size limit (413) from its
  Content-Length before reading it, or as soon as the bytes read pass it, and measures a JSON
  body's depth and longest string before any parser sees it (``shared.limits``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.limits import LimitExceeded, Limits, check_document

HEADER_SECONDS, BODY_SECONDS = "MEDPERF_LIMIT_HTTP_HEADER_SECONDS", "MEDPERF_LIMIT_HTTP_BODY_SECONDS"
#: How often the deadlines of a server's connections are checked: each is kept to within this.
SWEEP_SECONDS = 0.5
#: How long a refused client may go on sending, its bytes discarded, before the connection closes.
LINGER_SECONDS = 2.0
Scope = dict[str, Any]
Message = dict[str, Any]


def bounded_http(limits: Limits) -> type[HttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with ``limits`` applied."""
    return type("BoundedHttp", (BoundedHttp,), {"limits": limits, "_sweeping": None})


class BoundedHttp(HttpToolsProtocol):
    """Each connection notes when what it is reading is due (``_due``, on the loop's clock); one
    sweep a second for all of them refuses the late ones. A timer per request cost a tenth of
    the ingress's CPU (a call_later and a cancel for the head and again for the body, against
    ~30 us for uvicorn's whole protocol work on a request)."""

    limits: Limits
    _sweeping: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        self._lingering: asyncio.TimerHandle | None = None
        super().connection_made(_Lingering(transport, self))  # type: ignore[arg-type]
        self._start_head()
        if type(self)._sweeping is None:
            type(self)._sweeping = self.loop.call_later(SWEEP_SECONDS, self._sweep)

    # --- deadlines ------------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Refuse every connection of this server whose head or body is late; again in a second,
        while there are connections."""
        now = self.loop.time()
        for connection in list(self.connections):
            due = getattr(connection, "_due", None)
            if due is not None and due <= now:
                connection._too_slow()
        cls = type(self)
        cls._sweeping = self.loop.call_later(SWEEP_SECONDS, self._sweep) if self.connections else None

    def _too_slow(self) -> None:
        self._due = None
        if self._raw.is_closing() or self._lingering is not None:
            return
        if self._reading_head:
            if self._head_received == 0:  # idle since connecting or since its last answer: just close
                self._raw.close()
                return
            seconds = self.limits.http_header_seconds
            self._refuse(408, f"the request line and headers took over {seconds:g} s ({HEADER_SECONDS})")
            return
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_started:
            return
        seconds = self.limits.http_body_seconds
        self._refuse(408, f"the request body took over {seconds:g} s ({BODY_SECONDS})")
        # The app waiting for the body hears that the client is gone, and answers nothing more.
        cycle.disconnected = True
        cycle.message_event.set()

    # --- the head: request line and headers ---------------------------------------------------

    def _start_head(self) -> None:
        #: Bytes received since the head began: a bound on memory while it streams in.
        self._reading_head, self._head_received = True, 0
        self._due: float | None = self.loop.time() + self.limits.http_header_seconds

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

    def on_headers_complete(self) -> None:
        if self._lingering is not None:
            return  # a pipelined request behind a refused one: not served
        # The head as parsed (the chunk that ended it may have carried body bytes too).
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.http_header_bytes:
            self._head_too_large()
            return
        self._reading_head = False
        self._due = self.loop.time() + self.limits.http_body_seconds
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._lingering is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering is None:
            self._due = None
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests the keep-alive timeout applies; the next head gets its own deadline.
        self._reading_head, self._due = False, None

    def _head_too_large(self) -> None:
        limit = self.limits.http_header_bytes
        self._refuse(431, f"the request line and headers exceed {limit:,} bytes (MEDPERF_LIMIT_HTTP_HEADER_BYTES)")

    def _refuse(self, status: int, message: str) -> None:
        if self._raw.is_closing() or self._lingering is not None:
            return
        body = json.dumps({"error": message}).encode()
        phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self._raw.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, phrase, len(body), body)
        )
        self._due = None
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
        self._due = None
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)


class _Lingering:
    """The connection's transport as uvicorn sees it, but ``close`` lingers (``close_gracefully``).
    The methods uvicorn calls per request are bound here once: through ``__getattr__`` each call
    cost a lookup."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttp) -> None:
        self._transport = transport
        self.close = protocol.close_gracefully
        self.write, self.is_closing = transport.write, transport.is_closing
        self.pause_reading, self.resume_reading = transport.pause_reading, transport.resume_reading

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


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
            body = await _read_body(receive, limit)  # within the body's deadline (BoundedHttp)
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


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the (lower-case) header ``name``, as the ASGI scope holds it."""
    for found, value in scope["headers"]:
        if found == name:
            return value
    return None


def _content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def _is_json(scope: Scope) -> bool:
    value = header(scope, b"content-type")
    return value is None or b"json" in value.lower()  # FastAPI parses a body without a type as JSON too


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
