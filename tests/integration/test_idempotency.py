"""``Idempotency-Key`` on POST, against the central services and the ingress as processes: a client
that lost an answer asks again and gets the first answer, not a 409 for its own registration."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from faults import KillableFederation, start_central
from secured import free_port

from cli.client import Client

TOKENS = {"admin": "t-admin", "committee": "t-committee", "other": "t-other"}


def auth(user: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    return headers | ({"Idempotency-Key": key} if key else {})


def spec() -> dict:
    return {"image": "x/y:1", "image_digest": "sha256:" + "a" * 64, "tasks": {"infer": {"command": ["infer"]}}}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableFederation]:
    cluster = start_central(tmp_path_factory.mktemp("idempotency"), TOKENS)
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_repeat_with_the_same_key_gets_the_first_answer(federation: KillableFederation) -> None:
    key, body = str(uuid.uuid4()), {"name": f"c-{uuid.uuid4().hex[:8]}", "spec": spec()}
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        first = await http.post("/containers", json=body, headers=auth("committee", key))
        again = await http.post("/containers", json=body, headers=auth("committee", key))
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        # Without the key the same body is a second registration of a taken name (before: always this).
        assert (await http.post("/containers", json=body, headers=auth("committee"))).status_code == 409
        # A refusal is an answer too: the same key gets the same 409 again.
        other_key = str(uuid.uuid4())
        refused = await http.post("/containers", json=body, headers=auth("committee", other_key))
        refused_again = await http.post("/containers", json=body, headers=auth("committee", other_key))
        assert refused.status_code == refused_again.status_code == 409
        listed = await http.get(f"/containers?name_contains={body['name']}", headers=auth("admin"))
        assert [row["id"] for row in listed.json()] == [first.json()["id"]]


async def test_a_key_belongs_to_its_caller_and_to_one_request(federation: KillableFederation) -> None:
    key = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        mine = {"name": f"c-{uuid.uuid4().hex[:8]}", "spec": spec()}
        theirs = {"name": f"c-{uuid.uuid4().hex[:8]}", "spec": spec()}
        assert (await http.post("/containers", json=mine, headers=auth("committee", key))).status_code == 201
        # Another caller's request under the same key is its own.
        other = await http.post("/containers", json=theirs, headers=auth("other", key))
        assert other.status_code == 201 and "idempotent-replayed" not in other.headers
        # The same caller, the same key, another request: refused, saying why.
        changed = await http.post("/containers", json=theirs | {"name": "changed"}, headers=auth("committee", key))
        assert changed.status_code == 422 and "different request" in changed.json()["error"]
        bad = await http.post("/containers", json=mine, headers=auth("committee", "x" * 300))
        assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]


async def test_concurrent_repeats_run_once(federation: KillableFederation) -> None:
    key, body = str(uuid.uuid4()), {"name": f"c-{uuid.uuid4().hex[:8]}", "spec": spec()}
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        answers = await asyncio.gather(
            *(http.post("/containers", json=body, headers=auth("committee", key)) for _ in range(8))
        )
        created = [a for a in answers if a.status_code == 201]
        running = [a for a in answers if a.status_code == 409]
        assert len(created) + len(running) == 8 and created, [a.text for a in answers]
        assert len({a.json()["id"] for a in created}) == 1
        assert all("still running" in a.json()["error"] and a.headers["retry-after"] for a in running)


async def test_a_secret_answer_is_replayed_to_its_caller_and_kept_only_sealed(federation: KillableFederation) -> None:
    key, user = str(uuid.uuid4()), f"u{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=federation.http_url, timeout=15) as http:
        assert (await http.post("/users", json={"name": user}, headers=auth("admin"))).status_code == 201
        issued = await http.post(f"/users/{user}/tokens", json={"label": "l"}, headers=auth("admin", key))
        again = await http.post(f"/users/{user}/tokens", json={"label": "l"}, headers=auth("admin", key))
        token = issued.json()["token"]
        assert issued.status_code == 201 and again.json()["token"] == token
    nc = await nats.connect(federation.url)
    try:
        kv = await nc.jetstream().key_value("IDEMPOTENCY")
        stored = b"".join([(await kv.get(k)).value or b"" for k in await kv.keys()])
    finally:
        await nc.close()
    assert stored and token.encode() not in stored and key.encode() not in stored


class DroppingProxy:
    """A TCP proxy that forwards requests but drops the first ``drops`` answers: the request
    arrives and runs, the client sees its connection close instead of the answer."""

    def __init__(self, target_port: int, drops: int = 1) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.drops = drops
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    async def _connection(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        server_in, server_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        drop = self.drops > 0
        self.drops -= drop

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, dropping: bool) -> None:
            while data := await source.read(65536):
                if dropping:
                    sink.close()  # the answer came: the client loses it
                    return
                sink.write(data)
                await sink.drain()

        await asyncio.gather(pump(client_in, server_out, False), pump(server_in, client_out, drop))
        client_out.close()
        server_out.close()

    def __enter__(self) -> DroppingProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_the_cli_client_retries_a_post_whose_answer_was_lost_and_gets_the_first_answer(
    federation: KillableFederation,
) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    with DroppingProxy(federation.http_port) as proxy:
        client = Client(f"http://127.0.0.1:{proxy.port}", TOKENS["committee"], patience=10)
        try:
            container = client.register_container(name, spec())  # before: ApiError 409, name taken
        finally:
            client.close()
        assert proxy.drops == 0, "the proxy never dropped an answer"
    listed = httpx.get(f"{federation.http_url}/containers", params={"name_contains": name}, headers=auth("admin"))
    assert [row["id"] for row in listed.json()] == [container]


def test_keys_expire_with_the_window(tmp_path: Path) -> None:
    cluster = start_central(tmp_path, TOKENS, central_env={"MEDPERF_IDEMPOTENCY_SECONDS": "2"})
    try:
        key, body = str(uuid.uuid4()), {"name": f"c-{uuid.uuid4().hex[:8]}", "spec": spec()}
        url = f"{cluster.http_url}/containers"
        assert httpx.post(url, json=body, headers=auth("committee", key)).status_code == 201
        assert httpx.post(url, json=body, headers=auth("committee", key)).status_code == 201

        async def expired() -> bool:
            nc = await nats.connect(cluster.url)
            try:
                kv = await nc.jetstream().key_value("IDEMPOTENCY")
                await asyncio.sleep(2.5)
                return not await kv.keys()
            except nats.js.errors.NoKeysError:
                return True
            finally:
                await nc.close()

        assert asyncio.run(expired())
        # Past the window the key is forgotten: the request runs again (and meets its own name).
        assert httpx.post(url, json=body, headers=auth("committee", key)).status_code == 409
    finally:
        cluster.stop()


def test_the_bucket_holds_only_sealed_records(federation: KillableFederation) -> None:
    async def values() -> list[dict]:
        nc = await nats.connect(federation.url)
        try:
            kv = await nc.jetstream().key_value("IDEMPOTENCY")
            return [json.loads((await kv.get(k)).value or b"{}") for k in await kv.keys()]
        finally:
            await nc.close()

    records = asyncio.run(values())
    assert records and {r["state"] for r in records} <= {"done", "running"}
    assert all(set(r) <= {"state", "fingerprint", "sealed", "since"} for r in records)
