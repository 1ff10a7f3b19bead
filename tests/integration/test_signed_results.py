"""Signed results over a real nats-server and SQLite, through the registry (which registers and
revokes site keys) and the aggregator (which verifies every result against them): a forged
signature, a tampered metric, an unknown key and a key revoked before signing are dead-lettered
with the reason; a replay changes nothing; legitimate results are on the board, and each cell's
provenance names its site, digests, dataset hash, key and approvals."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from test_aggregator_results import COMMITTEE, KEYS, board, cells, dead_letters, js, publish, result, setup, sign
from waiting import eventually

from services.aggregator.app import create_service as create_aggregator
from services.registry.app import create_service as create_registry
from shared.commands import Command, GetProvenance, Outcome, RegisterSiteKey, RevokeSiteKey
from shared.events import AssociationApproved, DeadLetter
from shared.service import ServiceHost, ask
from shared.settings import Settings
from shared.signing import SiteKey

__all__ = ["js"]  # the fixture, shared with test_aggregator_results


@pytest.fixture
async def services(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[ServiceHost, ServiceHost]]:
    settings = Settings(nats_url=nats_url, state_dir=tmp_path, max_deliveries=3)
    registry, aggregator = create_registry(settings), create_aggregator(settings)
    await registry.start()
    await aggregator.start()
    try:
        yield registry, aggregator
    finally:
        await aggregator.stop()
        await registry.stop()


async def command(host: ServiceHost, cmd: Command) -> Outcome:
    return await ask(host.broker, cmd, 5.0)


async def test_only_genuine_results_reach_the_board(
    services: tuple[ServiceHost, ServiceHost], js: JetStreamContext
) -> None:
    registry, aggregator = services
    await setup(js)  # benchmark, models, datasets of site-10..12; their keys as events
    # The registry's own path: a site's owner registers its key; nobody else may.
    late = SiteKey.generate()
    stranger = await command(registry, RegisterSiteKey(actor="mallory", site="site-13", public_key=late.public_key))
    assert stranger.ok  # an unowned site is claimed by its first key...
    taken = await command(
        registry, RegisterSiteKey(actor="eve", site="site-13", public_key=SiteKey.generate().public_key)
    )
    assert taken.code == "forbidden" and "belongs to mallory" in (taken.reason or "")  # ...and is then theirs
    await publish(
        js,
        *(
            AssociationApproved(actor=COMMITTEE, association_id=n, benchmark_id=1, kind=kind, component_id=c)
            for n, (kind, c) in enumerate((("dataset", 10), ("dataset", 11), ("model", 1)), start=1)
        ),
    )
    legitimate = [result(1, 10, 0.91), result(1, 11, 0.81), result(2, 10, 0.70)]
    await publish(js, *legitimate)
    await eventually(lambda: _shown(aggregator, 3), "the three legitimate results")

    forged = SiteKey.generate().sign_result(result(2, 11, 0.99)).model_copy(update={"key_id": KEYS[11].key_id})
    tampered = result(2, 12, 0.60)
    tampered = tampered.model_copy(update={"metrics": {"auc": 0.96}})  # changed after signing
    unknown = SiteKey.generate().sign_result(result(1, 12, 0.5))  # a key nobody registered
    # A replay: the first result re-signed with other metrics under its old event id, and an old
    # result (valid signature, earlier time) published after the newer one.
    # The re-signed one is also dated later, so only the event id can tell it is a replay.
    later = legitimate[0].occurred_at + timedelta(minutes=5)
    replayed = sign(legitimate[0].model_copy(update={"metrics": {"auc": 0.11}, "occurred_at": later}))
    older = sign(
        legitimate[1].model_copy(
            update={
                "event_id": uuid.uuid4(),
                "metrics": {"auc": 0.12},
                "occurred_at": legitimate[1].occurred_at - timedelta(days=1),
            }
        )
    )
    await publish(js, forged, tampered, unknown)
    await js.publish(replayed.subject, replayed.model_dump_json().encode(), headers={"Nats-Msg-Id": "replay"})
    await publish(js, older)

    # Site 11's agent registers its key with the registry too (setup announced it directly); then an
    # admin revokes it (it leaked): what it signed before stays, what it signs now is refused.
    again = RegisterSiteKey(actor="site-11", site="site-11", public_key=KEYS[11].public_key)
    assert (await command(registry, again)).ok
    revoked = await command(
        registry, RevokeSiteKey(actor=COMMITTEE, is_admin=True, site="site-11", key_id=KEYS[11].key_id, reason="leaked")
    )
    assert revoked.ok, revoked
    after = result(2, 11, 0.77)
    await eventually(lambda: _key_revoked_in_provenance(aggregator), "the aggregator to learn the revocation")
    await publish(js, after)

    async def settled() -> bool:
        info = await js.consumer_info("SITES", "aggregator-result-reported")
        return info.num_pending == 0 and info.num_ack_pending == 0 and len(await refused_results(js)) >= 4

    await eventually(settled, "every result acknowledged or dead-lettered", timeout=20)
    reasons = {letter.payload.split('"event_id":"')[1][:36]: letter.reason for letter in await refused_results(js)}
    assert len(reasons) == 4, reasons
    assert "bad signature" in reasons[str(forged.event_id)]
    assert (
        "bad signature" in reasons[str(tampered.event_id)]
        and "changed after signing" in reasons[str(tampered.event_id)]
    )
    assert "not registered" in reasons[str(unknown.event_id)] and "failed 3 times" in reasons[str(unknown.event_id)]
    assert "revoked" in reasons[str(after.event_id)] and "leaked" in reasons[str(after.event_id)]
    # Legitimate results only, each with its original value: neither replay changed a cell.
    assert cells(await board(aggregator)) == {
        ("model-1", "site-10"): 0.91,
        ("model-1", "site-11"): 0.81,
        ("model-2", "site-10"): 0.70,
    }

    shown = await command(aggregator, GetProvenance(actor=COMMITTEE, benchmark_id=1, model_id=1))
    assert shown.ok, shown
    by_site = {cell["site"]: cell for cell in shown.data["cells"]}
    assert set(by_site) == {"site-10", "site-11"}
    ten, eleven = by_site["site-10"], by_site["site-11"]
    assert ten["key_id"] == KEYS[10].key_id and ten["key_revoked_at"] is None
    assert ten["container_digests"] == legitimate[0].container_digests and ten["dataset_hash"] == "p10"
    assert ten["event_id"] == str(legitimate[0].event_id)
    assert ten["dataset_association"]["approved_by"] == COMMITTEE and ten["dataset_association"]["approved_at"]
    assert eleven["key_revoked_at"] is not None  # signed before the revocation: kept, and flagged
    assert shown.data["model_association"]["approved_by"] == COMMITTEE
    # A data owner sees its own site's cells only; an outsider none.
    own = await command(aggregator, GetProvenance(actor="site-10", benchmark_id=1, model_id=1))
    assert [cell["site"] for cell in own.data["cells"]] == ["site-10"]
    outsider = await command(aggregator, GetProvenance(actor="mallory", benchmark_id=1, model_id=1))
    assert outsider.code == "forbidden"


async def refused_results(js: JetStreamContext) -> list[DeadLetter]:
    """The aggregator's dead letters (the registry here parks the setup's approval of a benchmark it
    never registered: the setup publishes the registry's events itself)."""
    return [letter for letter in await dead_letters(js) if letter.service == "aggregator"]


async def _shown(aggregator: ServiceHost, n: int) -> bool:
    try:
        return len(cells(await board(aggregator))) == n
    except AssertionError:
        return False


async def _key_revoked_in_provenance(aggregator: ServiceHost) -> bool:
    shown = await ask(aggregator.broker, GetProvenance(actor=COMMITTEE, benchmark_id=1, model_id=1), 5.0)
    return any(c["key_revoked_at"] for c in shown.data["cells"] if c["site"] == "site-11")
