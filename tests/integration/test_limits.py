"""Hostile input at the HTTP edge and on the way to the broker, against the federation as OS
processes (nats-server, ``medperf serve registry|approvals|aggregator|ingress``): bodies, headers
and JSON past the limits are refused before anything parses them, slow clients cannot hold the
ingress, an event the broker would refuse never commits, a list of large entities still answers,
and a row the relay cannot publish is parked instead of stopping every event behind it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import nats
import pytest
from faults import KillableFederation, start_central
from figures import record
from history import stream_messages
from waiting import eventually

from shared.limits import KiB, Limits, MiB

TOKENS = {"admin": "t-admin", "committee": "t-committee"}
ADMIN = {"Authorization": "Bearer t-admin"}
COMMITTEE = {"Authorization": "Bearer t-committee"}
LIMITS = Limits()
HEADER_SECONDS = 2.0
#: Hostile inputs sent to the module's federation, by kind, for the figures of the last test.
TRIED: Counter[str] = Counter()
MEASURED: dict[str, float] = {}


def spec(parameters: object = None, **tasks: list[str]) -> dict:
    found = {"image": "x/y:1", "image_digest": "sha256:" + "a" * 64, "tasks": {"infer": {"command": ["infer"]}}}
    if parameters is not None:
        found["parameters"] = parameters
    return found


def nested(depth: int) -> dict:
    """A JSON object ``depth`` levels deep (``{}`` is one level)."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableFederation]:
    cluster = start_central(
        tmp_path_factory.mktemp("limits"),
        TOKENS,
        central_env={"MEDPERF_LIMIT_HTTP_HEADER_SECONDS": str(HEADER_SECONDS)},
    )
    try:
        yield cluster
    finally:
        cluster.stop()


async def raw_request(url: str, head: bytes, body: bytes = b"", *, read_timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are and read the answer's status and body: httpx would not send a lie."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(read_timeout):
            answer_head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in answer_head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            )
            answer_body = await reader.readexactly(length)
    finally:
        writer.close()
    return int(answer_head.split(b" ", 2)[1]), answer_body


def ingress_rss_kib(cluster: KillableFederation) -> int:
    popen = cluster.processes["ingress"].popen
    assert popen is not None
    for line in Path(f"/proc/{popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def dead_letters(url: str) -> list[dict]:
    nc = await nats.connect(url)
    try:
        return [json.loads(m.data) for m in await stream_messages(nc.jetstream(), "DEADLETTER")]
    finally:
        await nc.close()


# --- the HTTP edge -------------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read_or_the_token_looked_at(
    federation: KillableFederation,
) -> None:
    # 50 MiB announced, none of it sent: the answer comes without waiting for a byte of it.
    head = b"POST /containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
        50 * MiB
    )
    status, body = await raw_request(federation.http_url, head, read_timeout=5)
    TRIED["declared 50 MiB bodies"] += 1
    assert status == 413
    message = json.loads(body)["error"]
    assert f"{LIMITS.http_body_bytes:,}" in message and "MEDPERF_LIMIT_HTTP_BODY_BYTES" in message


async def test_concurrent_anonymous_streamed_bodies_cost_the_ingress_no_more_than_the_limit(
    federation: KillableFederation,
) -> None:
    before = ingress_rss_kib(federation)

    async def stream_50_mib() -> int:
        async def chunks():  # chunked: no Content-Length to refuse up front
            for _ in range(50):
                yield b"[" * MiB

        async with httpx.AsyncClient(timeout=30) as http:
            try:
                response = await http.post(f"{federation.http_url}/containers", content=chunks())
            except httpx.HTTPError:  # the server may close while we are still sending
                return 0
            return response.status_code

    statuses = await asyncio.gather(*(stream_50_mib() for _ in range(8)))
    TRIED["streamed 50 MiB bodies"] += len(statuses)
    assert set(statuses) <= {413, 0} and 413 in statuses, statuses
    grown_mib = (ingress_rss_kib(federation) - before) / 1024
    MEASURED["ingress_rss_growth_mib_under_8_streamed_50_mib_bodies"] = round(grown_mib, 1)
    # Before the limits: 112 -> 564 MiB. Now each reads at most the limit before it is refused.
    assert grown_mib < 48, f"the ingress grew by {grown_mib:.0f} MiB"


async def test_headers_over_the_limit_are_431(federation: KillableFederation) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * (LIMITS.http_header_bytes + KiB) + b"\r\n\r\n"
    status, body = await raw_request(federation.http_url, head)
    TRIED["oversized headers"] += 1
    assert status == 431
    assert "MEDPERF_LIMIT_HTTP_HEADER_BYTES" in json.loads(body)["error"]
    # Headers just under the limit are fine.
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * (LIMITS.http_header_bytes - KiB) + b"\r\n\r\n"
    assert (await raw_request(federation.http_url, head))[0] == 200


async def test_hundreds_of_slow_clients_do_not_delay_a_normal_request(federation: KillableFederation) -> None:
    host, port = federation.http_url.removeprefix("http://").split(":")
    writers = []
    for _ in range(300):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never finished
        writers.append((reader, writer))
    TRIED["slow clients"] += len(writers)
    try:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(f"{federation.http_url}/containers", headers=ADMIN)
        assert response.status_code == 200
        MEASURED["normal_request_ms_beside_300_slow_clients"] = round((time.monotonic() - started) * 1000, 1)
        assert time.monotonic() - started < 1.0
        # Past the head deadline each slow connection is answered 408 and closed.
        answers = await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in writers)), HEADER_SECONDS + 10)
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
        assert b"MEDPERF_LIMIT_HTTP_HEADER_SECONDS" in answers[0]
    finally:
        for _, writer in writers:
            writer.close()


def test_a_body_too_slow_to_arrive_is_408(tmp_path: Path) -> None:
    cluster = start_central(tmp_path, TOKENS, central_env={"MEDPERF_LIMIT_HTTP_BODY_SECONDS": "1"})
    try:
        head = b"POST /containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        status, body = asyncio.run(raw_request(cluster.http_url, head, b"{", read_timeout=10))
        assert status == 408 and "MEDPERF_LIMIT_HTTP_BODY_SECONDS" in json.loads(body)["error"]
    finally:
        cluster.stop()


# --- JSON depth and strings: what the ingress accepts, every consumer accepts ---------------------


async def test_json_at_the_depth_limit_is_accepted_everywhere_and_one_past_it_is_413(
    federation: KillableFederation,
) -> None:
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        # The body itself, spec and parameters are three levels: the rest is the user's.
        at_limit = {"name": f"deep-{uuid.uuid4().hex[:8]}", "spec": spec(parameters=nested(LIMITS.json_depth - 2))}
        created = await http.post("/containers", json=at_limit, headers=COMMITTEE)
        assert created.status_code == 201, created.text
        container = created.json()["id"]
        past = {"name": "deeper", "spec": spec(parameters=nested(LIMITS.json_depth - 1))}
        refused = await http.post("/containers", json=past, headers=COMMITTEE)
        TRIED["JSON past the depth or string limit"] += 3
        assert refused.status_code == 413
        assert f"is {LIMITS.json_depth + 1} levels; the limit is {LIMITS.json_depth}" in refused.json()["error"]
        # An edit at the limit (body, changes, the field: three levels) reaches every consumer.
        edit = {"changes": {"user_metadata": nested(LIMITS.json_depth - 2)}}
        edited = await http.patch(f"/containers/{container}", json=edit, headers=COMMITTEE)
        assert edited.status_code == 200, edited.text
        edit = {"changes": {"user_metadata": nested(LIMITS.json_depth - 1)}}
        assert (await http.patch(f"/containers/{container}", json=edit, headers=COMMITTEE)).status_code == 413
        # A string past the limit, anywhere in the body.
        long = {"name": "long", "spec": spec(parameters={"text": "x" * (LIMITS.string_bytes + 1)})}
        refused = await http.post("/containers", json=long, headers=COMMITTEE)
        assert refused.status_code == 413 and "MEDPERF_LIMIT_STRING_BYTES" in refused.json()["error"]
    # Every service consumed the edit: nothing dead-lettered (before: approvals and the aggregator
    # parked the registry's edit, and the services disagreed from then on).
    await asyncio.sleep(1.0)
    assert await dead_letters(federation.url) == []


async def test_a_message_deeper_than_any_ingress_admits_is_dead_lettered_with_the_limit_named(
    federation: KillableFederation,
) -> None:
    nc = await nats.connect(federation.url)
    try:
        deep = json.dumps({"type": "model.registered", "junk": nested(200)}).encode()
        await nc.jetstream().publish("medperf.registry.model.registered", deep)
        TRIED["messages past the consumer ceiling"] += 1
    finally:
        await nc.close()

    async def parked() -> list[dict]:
        return [d for d in await dead_letters(federation.url) if "nesting" in d["reason"]]

    await eventually(parked, "the deep message to be dead-lettered", timeout=15)
    letters = await parked()
    ceiling = "the limit is 72 (the consumers' ceiling"
    assert all(d["deliveries"] == 1 and ceiling in d["reason"] for d in letters), letters
    # Parked, so clean up: the next test looks for an empty dead-letter stream.
    nc = await nats.connect(federation.url)
    try:
        await nc.jetstream().purge_stream("DEADLETTER")
    finally:
        await nc.close()


# --- answers: a list of large entities still answers ---------------------------------------------


async def test_a_list_of_large_entities_answers_in_pages_that_fit(federation: KillableFederation) -> None:
    tag = uuid.uuid4().hex[:8]
    big = {"blob": "x" * (60 * KiB)}
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        ids = []
        for i in range(24):  # 24 x ~240 KiB: about six times what one answer can carry
            body = {"name": f"big-{tag}-{i}", "spec": spec(parameters={f"p{j}": big for j in range(4)})}
            response = await http.post("/containers", json=body, headers=COMMITTEE)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        seen: list[int] = []
        url: str | None = f"/containers?name_contains=big-{tag}&limit=500"
        pages = 0
        while url is not None:
            response = await http.get(url, headers=ADMIN)
            assert response.status_code == 200, response.text
            seen += [row["id"] for row in response.json()]
            pages += 1
            url = response.links.get("next", {}).get("url")
        assert seen == ids and pages > 1
        mine = await http.get("/me/containers?limit=500", headers=COMMITTEE)
        assert mine.status_code == 200 and "next" in mine.links


# --- events the broker cannot carry --------------------------------------------------------------


@pytest.fixture(scope="module")
def small_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableFederation]:
    """A nats-server that takes at most 192 KiB a message: under the ingress's body limit."""
    cluster = start_central(tmp_path_factory.mktemp("small"), TOKENS, nats_config=f"max_payload: {192 * KiB}")
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_change_whose_event_the_broker_would_refuse_is_413_and_never_committed(
    small_broker: KillableFederation,
) -> None:
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=small_broker.http_url, timeout=15) as http:
        created = await http.post("/containers", json={"name": f"edited-{tag}", "spec": spec()}, headers=COMMITTEE)
        assert created.status_code == 201, created.text
        url = f"/containers/{created.json()['id']}"
        first = {"changes": {"user_metadata": {"n1": "a" * (50 * KiB), "n2": "a" * (50 * KiB)}}}
        assert (await http.patch(url, json=first, headers=COMMITTEE)).status_code == 200
        # Its event holds the old and the new value: 200 KiB, over what this broker carries.
        second = {"changes": {"user_metadata": {"n1": "b" * (50 * KiB), "n2": "b" * (50 * KiB)}}}
        refused = await http.patch(url, json=second, headers=COMMITTEE)
        assert refused.status_code == 413, refused.text
        assert "max_payload" in refused.json()["error"]
        assert (await http.get(url, headers=COMMITTEE)).json()["user_metadata"] == first["changes"]["user_metadata"]
        # A request larger than the broker carries is refused at the ingress, not "try again".
        body = {"name": f"larger-{tag}", "spec": spec(parameters={f"p{i}": "x" * (50 * KiB) for i in range(4)})}
        refused = await http.post("/containers", json=body, headers=COMMITTEE)
        assert refused.status_code == 413 and "max_payload" in refused.json()["error"], refused.text
        # The registry goes on: the next registration is accepted and its event published.
        after = await http.post("/containers", json={"name": f"after-{tag}", "spec": spec()}, headers=COMMITTEE)
        assert after.status_code == 201, after.text
    await eventually(lambda: published_all(small_broker), "the registry's outbox to be published")


async def published_all(cluster: KillableFederation) -> bool:
    return not cluster.rows("registry", "SELECT event_id FROM registry_outbox WHERE published_at IS NULL")


async def test_an_outbox_row_the_broker_refuses_is_parked_and_the_rest_go_out_even_after_a_restart(
    small_broker: KillableFederation,
) -> None:
    # A row as stored before these limits existed: over what the broker takes.
    oversized = json.dumps({"junk": "x" * (200 * KiB)})
    event_id = str(uuid.uuid4())
    with closing(sqlite3.connect(small_broker.database("registry"), timeout=10)) as db:
        db.execute(
            "INSERT INTO registry_outbox (event_id, subject, payload, created_at) VALUES (?, ?, ?, ?)",
            (event_id, "medperf.registry.container.registered", oversized, "2026-01-01 00:00:00.000000"),
        )
        db.commit()
    small_broker.kill("registry")
    small_broker.start("registry")  # before: it never came back, its relay failing on that row at start
    async with httpx.AsyncClient(base_url=small_broker.http_url, timeout=15) as http:

        async def registered() -> bool:
            small_broker.check_alive()
            try:
                body = {"name": f"after-restart-{event_id[:8]}", "spec": spec()}
                response = await http.post("/containers", json=body, headers=COMMITTEE)
            except httpx.HTTPError:
                return False
            return response.status_code == 201

        await eventually(registered, "a registration after the restart", timeout=30, interval=0.5)

    async def parked() -> list[dict]:
        return [d for d in await dead_letters(small_broker.url) if event_id in d["reason"]]

    await eventually(parked, "the oversized row to be dead-lettered", timeout=15)
    letter = (await parked())[0]
    assert letter["consumer"] == "outbox-relay" and "max_payload" in letter["reason"]
    await eventually(lambda: published_all(small_broker), "the registry's outbox to be published")


async def test_the_federation_survived_every_hostile_input(federation: KillableFederation) -> None:
    """Last in the module: no process died, and nothing the ingress accepted was refused later."""
    federation.check_alive()
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        body = {"name": f"survivor-{uuid.uuid4().hex[:8]}", "spec": spec()}
        assert (await http.post("/containers", json=body, headers=COMMITTEE)).status_code == 201
    refused_later = await dead_letters(federation.url)
    record(
        "hostile input at the HTTP edge",
        tried=sum(TRIED.values()),
        **{kind.replace(" ", "_"): count for kind, count in sorted(TRIED.items())},
        crashes=0,
        accepted_then_dead_lettered=len(refused_later),
        **MEASURED,
    )
    assert refused_later == []
