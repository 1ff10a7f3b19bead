"""Sites connect with credentials of their own, and the broker enforces what each may do: a real
nats-server configured from shared/nats_config.py, raw clients trying what a hostile site would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from history import stream_messages
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, RawStreamMsg
from secured import SecuredNats
from sites import SITE, USERS, Federation, site_settings
from waiting import eventually

from cli.client import Client
from cli.stack import Stack
from services.executor.app import create_agent
from services.ingress.auth import token_digest
from shared.broker import connect_options, ensure_streams
from shared.commands import ReleaseResults
from shared.events import AssociationApproved, BenchmarkApproved, ResultReported
from shared.messaging import durable_name
from shared.nats_config import site_user
from shared.settings import Settings


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[SecuredNats]:
    with SecuredNats(tmp_path / "nats", sites=("site-a", "site-b")) as servers:
        await ensure_streams(servers.url, user="central", password=servers.passwords["central"])
        yield servers


class Connection:
    """A raw client that records the permission errors the server sends it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NatsClient | None = None

    async def open(self, servers: SecuredNats, user: str) -> NatsClient:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            error_cb=on_error,
            allow_reconnect=False,
            **connect_options(servers.url, user, servers.passwords[user]),
        )
        return self.nc

    async def violation(self, what: str) -> None:
        def refused() -> bool:
            return any("permissions violation" in e.lower() and what.lower() in e.lower() for e in self.errors)

        await eventually(
            lambda: asyncio.sleep(0, refused()), f"the server to refuse {what} (got {self.errors})", timeout=5
        )


def result(site: str, model_id: int = 1) -> ResultReported:
    return ResultReported(
        site=site,
        actor="hospital",
        benchmark_id=1,
        model_id=model_id,
        dataset_id=1,
        metrics={"auc": 0.9},
        container_digests={"model": "sha256:" + "0" * 64},
        dataset_hash="ab" * 32,
    )


async def read_as_operator(servers: SecuredNats, stream: str) -> list[RawStreamMsg]:
    """Every message of ``stream``, read as the operator."""
    nc = await nats.connect(**connect_options(servers.url, "operator", servers.passwords["operator"]))
    try:
        js = nc.jetstream()
        return await stream_messages(js, stream)
    finally:
        await nc.close()


async def test_a_site_publishes_only_as_itself_and_never_approvals(secured: SecuredNats) -> None:
    conn = Connection()
    nc = await conn.open(secured, "site-site-b")
    js = nc.jetstream()
    try:
        own = result("site-b")
        ack = await js.publish(own.subject, own.model_dump_json().encode(), headers={"Nats-Msg-Id": str(own.event_id)})
        assert ack.stream == "SITES"

        forged = result("site-a", model_id=2)
        with pytest.raises(nats.errors.TimeoutError):  # the server drops it: no stream ever acknowledges
            await js.publish(forged.subject, forged.model_dump_json().encode(), timeout=1)
        await conn.violation("medperf.site.site-a.result.reported")

        with pytest.raises(nats.errors.TimeoutError):
            await js.publish("medperf.approvals.association.approved", b"{}", timeout=1)
        await conn.violation("medperf.approvals.association.approved")
        # Nor may it ask for decisions: only the questions its agent asks.
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request("medperf.cmd.approvals.decide_association", b"{}", timeout=1)
        await conn.violation("medperf.cmd.approvals.decide_association")
    finally:
        await nc.close()
    assert [m.subject for m in await read_as_operator(secured, "SITES")] == ["medperf.site.site-b.result.reported"]
    assert await read_as_operator(secured, "APPROVALS") == []


async def test_a_site_reads_only_through_its_own_consumers(secured: SecuredNats) -> None:
    operator = await nats.connect(**connect_options(secured.url, "operator", secured.passwords["operator"]))
    await operator.jetstream().publish("medperf.site.site-a.job.queued", b'{"secret": "site-a work"}')
    await operator.jetstream().publish("medperf.approvals.benchmark.approved", b'{"benchmark": 1}')
    await operator.close()

    conn = Connection()
    nc = await conn.open(secured, "site-site-b")
    js = nc.jetstream()
    try:
        # Its own durable consumer of approvals, as its agent creates it, works.
        durable = durable_name(site_user("site-b"), BenchmarkApproved)
        sub = await js.pull_subscribe(BenchmarkApproved.subscription(), durable=durable, stream="APPROVALS")
        [message] = await sub.fetch(1, timeout=5)
        assert message.data == b'{"benchmark": 1}'
        await message.ack()

        # Another site's jobs: no plain subscription ...
        await nc.subscribe("medperf.site.site-a.>")
        await conn.violation('Subscription to "medperf.site.site-a.>"')
        # ... no consumer on the SITES stream, under any name ...
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(
                "SITES", ConsumerConfig(name="site-site-b-peek", filter_subject="medperf.site.site-a.>"), timeout=1
            )
        await conn.violation("$JS.API.CONSUMER.CREATE.SITES")
        # ... not under site-a's consumer name on the approvals either, nor its own name with another filter ...
        theirs = durable_name(site_user("site-a"), AssociationApproved)
        with pytest.raises(nats.errors.TimeoutError):
            await js.consumer_info("APPROVALS", theirs, timeout=1)
        await conn.violation(f"$JS.API.CONSUMER.INFO.APPROVALS.{theirs}")
        mine = durable_name(site_user("site-b"), AssociationApproved)
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer("APPROVALS", ConsumerConfig(name=mine, filter_subject=">"), timeout=1)
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer("SITES", ConsumerConfig(name=mine, filter_subject="medperf.site.>"), timeout=1)
        await conn.violation(f"$JS.API.CONSUMER.CREATE.SITES.{mine}")
        # ... no direct read of the stream, and no listening to site-a's replies.
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=1).get_msg("SITES", 1)
        await conn.violation("$JS.API.STREAM.MSG.GET.SITES")
        await nc.subscribe("_INBOX.site-site-a.>")
        await conn.violation('Subscription to "_INBOX.site-site-a.>"')
    finally:
        await nc.close()


async def test_only_a_sites_own_agent_takes_its_commands_and_answers_only_what_it_was_asked(
    secured: SecuredNats,
) -> None:
    """A data owner's consent reaches their site's agent on ``medperf.cmd.site.<site>.*``: another
    site may neither send it nor listen for it, and an agent replies only to a request it received."""
    command = ReleaseResults(actor="hospital", site="site-a", all=True)
    own, other = Connection(), Connection()
    agent = await own.open(secured, site_user("site-a"))
    intruder = await other.open(secured, site_user("site-b"))
    central = await nats.connect(**connect_options(secured.url, "central", secured.passwords["central"]))
    try:

        async def answer(msg: Msg) -> None:
            await msg.respond(b'{"ok": true}')

        await agent.subscribe(command.destination(), cb=answer)
        await agent.flush()
        reply = await central.request(command.destination(), command.model_dump_json().encode(), timeout=5)
        assert reply.data == b'{"ok": true}'  # the ingress asks; the site's agent answers

        # site-b cannot send site-a's consent, nor listen for it ...
        with pytest.raises(nats.errors.Error):
            await intruder.request(command.destination(), command.model_dump_json().encode(), timeout=1)
        await other.violation(command.destination())
        await intruder.subscribe("medperf.cmd.site.site-a.>")
        await other.violation('Subscription to "medperf.cmd.site.site-a.>"')
        # ... and site-a replies to no inbox but that of a request it received.
        await agent.publish("_INBOX.central.forged", b'{"ok": true}')
        await own.violation("_INBOX.central.forged")
    finally:
        for nc in (agent, intruder, central):
            await nc.close()


async def test_a_revoked_site_is_disconnected_and_cannot_return(secured: SecuredNats) -> None:
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc = await nats.connect(
        closed_cb=on_closed,
        allow_reconnect=False,
        **connect_options(secured.url, "site-site-b", secured.passwords["site-site-b"]),
    )
    password = secured.passwords["site-site-b"]
    secured.revoke("site-site-b")
    await asyncio.wait_for(closed.wait(), timeout=10)
    assert nc.is_closed
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            allow_reconnect=False, max_reconnect_attempts=0, **connect_options(secured.url, "site-site-b", password)
        )
    # The other site is untouched.
    other = await nats.connect(**connect_options(secured.url, "site-site-a", secured.passwords["site-site-a"]))
    assert other.is_connected
    await other.close()


@pytest.mark.engine
async def test_a_site_with_its_own_credentials_runs_the_flow_and_a_forged_result_is_refused(
    tmp_path: Path, busybox_image: str
) -> None:
    with SecuredNats(tmp_path / "nats", sites=("site-a", "site-b")) as servers:
        settings = Settings(
            nats_url=servers.url,
            nats_user="central",
            nats_password=servers.passwords["central"],
            state_dir=tmp_path / "state",
            http_port=0,
            admins=["admin"],
            api_token_digests={token_digest(t): u for u, t in USERS.items()},
        )
        site = site_settings(tmp_path)
        # The agent's only secret is its own: MEDPERF_NATS_USER/PASSWORD, as `medperf nats issue-site` printed.
        agent_settings = settings.model_copy(
            update={"nats_user": site_user(SITE), "nats_password": servers.passwords[site_user(SITE)]}
        )
        async with Stack(settings) as stack:
            assert stack.ingress
            agent = create_agent(agent_settings, site)
            await agent.start()
            clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
            operator_url = servers.url.replace("nats://", f"nats://operator:{servers.passwords['operator']}@")
            try:
                fed = Federation(operator_url, clients, busybox_image, site, agent.uow)
                await fed.join()
                model_id = await fed.add_model("m2", "echo 1 > /out/p1; echo 2 > /out/p2")
                await fed.job_reaches(model_id, "succeeded")
                url = f"/benchmarks/{fed.benchmark_id}/leaderboard"

                async def rows() -> list[dict]:
                    return (await fed.call("committee", "get", url)).get("rows") or []

                await eventually(lambda: _len_is(rows, 2), "the reference model and m2 on the board")
                dataset_id = (await fed.events(".result.reported"))[0]["dataset_id"]

                # site-b, with valid credentials, reports a score for site-a's dataset on its own subject:
                # the broker allows the subject, the aggregator refuses the claim.
                conn = Connection()
                nc = await conn.open(servers, site_user("site-b"))
                forged = result("site-b", model_id=model_id).model_copy(
                    update={"benchmark_id": fed.benchmark_id, "dataset_id": dataset_id, "metrics": {"auc": 0.0}}
                )
                await nc.jetstream().publish(forged.subject, forged.model_dump_json().encode())
                await nc.close()

                async def letters() -> list[dict]:
                    return [json.loads(m.data) for m in await read_as_operator(servers, "DEADLETTER")]

                await eventually(letters, "the forged result to be dead-lettered")
                [letter] = await letters()
                assert letter["service"] == "aggregator" and "belongs to site 'site-a'" in letter["reason"]
                board = await fed.call("committee", "get", url)
                assert all(0.0 not in row.get("per_dataset", {}).values() for row in board["rows"])
            finally:
                for client in clients.values():
                    client.close()
                await agent.stop()


async def _len_is(rows: Callable[[], Awaitable[list]], n: int) -> bool:
    return len(await rows()) == n
