"""Every input's limit, in one table (``Limits``, ``MEDPERF_LIMIT_*``), and the one check of a JSON
document's shape that both sides use: the ingress refuses a body past the configured limits before
parsing it or looking at its token; consumers refuse only what lies past the ceilings, which no
configuration of the ingress can admit. So whatever the ingress accepts, every consumer accepts.

Events are bounded by what the broker can carry: NATS refuses a message over its ``max_payload``
(1 MiB by default), headers included. A unit of work therefore measures each event as it is
emitted, before anything commits (``UnitOfWork.emit``), and a service never stores an event its
outbox relay could not publish.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import pydantic_core
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KiB, MiB, GiB = 2**10, 2**20, 2**30
#: No configuration of the ingress admits JSON deeper than this, or a string longer than that.
JSON_DEPTH_CEILING = 64
STRING_BYTES_CEILING = MiB
#: The levels an event adds around what a request carried (envelope, ``changes``, old and new).
ENVELOPE_DEPTH = 8
#: NATS's default ``max_payload``; a server may be configured lower, and services then use its figure.
BROKER_MAX_PAYLOAD = MiB
#: Left under ``max_payload`` for the headers the relay adds (Nats-Msg-Id, content type) and a margin.
HEADER_ROOM = 8 * KiB


class Limits(BaseSettings):
    """The limits table. docs/reliability.md lists each with its reason; every refusal names one."""

    model_config = SettingsConfigDict(env_prefix="MEDPERF_LIMIT_", extra="ignore", frozen=True)

    http_body_bytes: int = Field(
        default=256 * KiB,
        ge=KiB,
        le=BROKER_MAX_PAYLOAD // 2,
        description="largest HTTP request body; an edit's event carries the old and the new value, "
        "so twice this must fit under the broker's max_payload",
    )
    http_header_bytes: int = Field(
        default=32 * KiB, ge=4 * KiB, le=MiB, description="largest request line and headers together"
    )
    http_header_seconds: float = Field(
        default=10.0, gt=0, le=300, description="time a client has to send its request line and headers"
    )
    http_body_seconds: float = Field(default=30.0, gt=0, le=3600, description="time a client has to send its body")
    json_depth: int = Field(
        default=32, ge=4, le=JSON_DEPTH_CEILING, description="deepest nesting of a JSON body, from its outer brackets"
    )
    string_bytes: int = Field(
        default=64 * KiB, ge=KiB, le=STRING_BYTES_CEILING, description="longest string in a JSON body, as sent"
    )
    event_bytes: int = Field(
        default=BROKER_MAX_PAYLOAD - HEADER_ROOM,
        ge=64 * KiB,
        description="largest event or answer; lowered at start to the broker's max_payload less header room",
    )


#: What consumers accept: anything an ingress at the ceilings could have admitted, and its envelope.
CONSUMER_DEPTH = JSON_DEPTH_CEILING + ENVELOPE_DEPTH


class LimitExceeded(ValueError):
    """An input past one of the limits: a request that can never succeed as it stands, so it is
    refused (HTTP 413, a dead letter) with the limit named, never retried."""

    def __init__(self, what: str, size: int, limit: int, setting: str, unit: str = "bytes") -> None:
        self.what, self.size, self.limit, self.setting = what, size, limit, setting
        super().__init__(f"{what} is {size:,} {unit}; the limit is {limit:,} ({setting})")


@dataclass(frozen=True)
class Shape:
    depth: int
    longest_string: int


# A JSON string, escapes included, as an unrolled loop (no backtracking on long strings).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def shape(raw: bytes) -> Shape:
    """The nesting depth and the longest string (in bytes as sent, quotes excluded) of a JSON
    document, read from its bytes without parsing it. Malformed JSON is measured as well as it
    can be: refusing it is the parser's job."""
    brackets = raw.count(b"[") + raw.count(b"{")
    quotes = raw.count(b'"')
    if brackets == 0 and quotes == 0:
        return Shape(0, 0)
    strings = _STRING.findall(raw) if quotes else []
    longest = max(map(len, strings), default=2) - 2
    if brackets == 0:
        return Shape(0, longest)
    bare = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw) if quotes else raw)
    # A running sum over the brackets alone, in C: a hostile 256 KiB of brackets takes milliseconds.
    return Shape(max(accumulate(map(_DEPTH_STEP.__getitem__, bare)), default=0), longest)


def check_document(
    raw: bytes,
    *,
    depth: int,
    string_bytes: int,
    named: tuple[str, str] = ("MEDPERF_LIMIT_JSON_DEPTH", "MEDPERF_LIMIT_STRING_BYTES"),
) -> None:
    """Raise ``LimitExceeded`` if ``raw`` nests deeper than ``depth`` or holds a longer string;
    ``named`` says where each limit comes from.

    The bracket count bounds the depth, so the usual small document is passed after two scans
    in C, without the walk over its brackets."""
    if raw.count(b"[") + raw.count(b"{") <= depth and len(raw) <= string_bytes:
        return
    found = shape(raw)
    if found.depth > depth:
        raise LimitExceeded("the JSON's nesting", found.depth, depth, named[0], unit="levels")
    if found.longest_string > string_bytes:
        raise LimitExceeded("its longest string", found.longest_string, string_bytes, named[1])


_CEILING = "the consumers' ceiling: what no ingress admits"


def check_consumed(raw: bytes) -> None:
    """What a consumer refuses: a message deeper or with longer strings than any ingress admits."""
    check_document(raw, depth=CONSUMER_DEPTH, string_bytes=STRING_BYTES_CEILING, named=(_CEILING, _CEILING))


class EventTooLarge(LimitExceeded):
    """An event over the broker's limit: committed, it would stop the outbox relay behind it."""


_event_bytes: int | None = None


def event_budget() -> int:
    """The largest event (or answer) this process may produce."""
    global _event_bytes
    if _event_bytes is None:
        _event_bytes = Limits().event_bytes
    return _event_bytes


def fit_to_broker(max_payload: int) -> int:
    """Lower the event budget to what the connected broker accepts; returns the budget."""
    global _event_bytes
    _event_bytes = min(event_budget(), max_payload - HEADER_ROOM)
    return _event_bytes


def check_event_size(subject: str, payload: str) -> None:
    budget = event_budget()
    if len(payload) * 4 <= budget:  # UTF-8 takes at most 4 bytes a character: no need to encode
        return
    size = len(payload.encode())
    if size > budget:
        raise EventTooLarge(f"the event {subject}", size, budget, "the broker's max_payload less header room")


#: A dataset's statistics, as JSON: they travel in its registration, its event and every list of
#: datasets, so they are kept to a size that a page of datasets can carry by the dozen.
STATISTICS_BYTES = 64 * KiB


def check_statistics_size(statistics: dict[str, Any]) -> dict[str, Any]:
    size = len(pydantic_core.to_json(statistics))
    if size > STATISTICS_BYTES:
        raise LimitExceeded(
            "the statistics' JSON", size, STATISTICS_BYTES, "a dataset's statistics leave the site whole"
        )
    return statistics


#: Room kept in an answer for what surrounds its rows (the Outcome's other fields).
ANSWER_ROOM = 4 * KiB


def rows_that_fit(rows: Sequence[Any]) -> int:
    """How many of ``rows``, from the first, one answer can carry: a page of large entities (a
    container's parameters may take a quarter of a MiB) would otherwise be an answer the broker
    refuses, for every caller. At least one, so a single row too large is reported, not hidden."""
    budget = event_budget() - ANSWER_ROOM
    used = 2
    for count, row in enumerate(rows):
        used += len(pydantic_core.to_json(row)) + 1
        if used > budget:
            return max(count, 1)
    return len(rows)
