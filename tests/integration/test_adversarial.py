"""Malformed events on every subscribed subject, against the real services (registry, approvals,
aggregator, console and a site agent) on a real nats-server: hypothesis generates payloads that
the consumer's declared event type refuses (random bytes, JSON of the wrong shape, and the
event's own fields with junk values). For every durable consumer the server holds, its payloads
are published on a subject its filter matches. Each must be dead-lettered at once with the
reason, by every consumer that took it; no service may crash or apply part of one (every
table is unchanged), and afterwards the flow still runs to a result on the board.

Examples per consumer: ``MEDPERF_FUZZ_EXAMPLES`` (default 25)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import nats
import pytest
from faults import consumers, stored_events, subject_matches
from figures import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from sites import USERS, Federation, site_settings
from waiting import eventually

from cli.client import Client
from cli.stack import Stack
from services.console.app import AnyJobEvent
from services.ingress.auth import token_digest
from shared import events as vocabulary
from shared.settings import Settings

pytestmark = pytest.mark.engine

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def event_types() -> dict[str, type[vocabulary.Event]]:
    """Each event class by the suffix its consumers' durable names carry (``benchmark-approved``)."""
    found: dict[str, type[vocabulary.Event]] = {}
    pending = [vocabulary.Event]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        default = cls.model_fields["type"].default
        if isinstance(default, str):
            found[default.replace(".", "-")] = cls
    return found


def validator_of(consumer: str) -> TypeAdapter[Any]:
    """The type a consumer decodes its messages into (what a malformed payload fails)."""
    if consumer == "console-jobs":
        return TypeAdapter(AnyJobEvent)
    if consumer == "console-heartbeats":
        return TypeAdapter(vocabulary.SiteHeartbeat)
    suffixes = event_types()
    for suffix, cls in suffixes.items():
        if consumer.endswith(f"-{suffix}"):
            return TypeAdapter(cls)
    raise AssertionError(f"no event type known for consumer {consumer}")


def payloads(adapter: TypeAdapter[Any], count: int) -> list[bytes]:
    """``count`` hypothesis-generated payloads that ``adapter`` refuses."""
    schema = adapter.json_schema()
    fields = sorted(schema.get("properties", {}))
    event_type = schema.get("properties", {}).get("type", {}).get("const")
    junk_fields = st.fixed_dictionaries({f: JSON for f in fields}).map(
        lambda d: {**d, "type": event_type} if event_type else d  # past the type check, into the fields
    )
    strategy = st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda v: json.dumps(v).encode()),
        junk_fields.map(lambda d: json.dumps(d).encode()),
        junk_fields.map(lambda d: json.dumps(d)[:-1].encode()),  # cut short
    )
    found: list[bytes] = []

    def refused(data: bytes) -> bool:
        try:
            adapter.validate_json(data)
        except (ValidationError, ValueError):
            return True
        return False

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy.filter(refused))
    def collect(data: bytes) -> None:
        found.append(data)

    collect()
    return found


def concrete(filter_subject: str, index: int) -> str:
    # Distinct subjects for heartbeats: their stream keeps one message per subject.
    token = f"fuzz-{index}" if filter_subject.startswith("medperf.heartbeat.") else "fuzz"
    return ".".join(token if part == "*" else part for part in filter_subject.split("."))


def snapshot(state_dirs: list[Path]) -> dict[str, str]:
    """A digest of every table of every service's database (the outboxes' publish marks and the
    console's heartbeat view move on their own, so they are left out)."""
    digests = {}
    for db_path in sorted(p for d in state_dirs for p in d.rglob("*.db")):
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table.endswith("_outbox") or table in ("console_sites", "site_state"):
                    continue
                rows = sorted(map(repr, db.execute(f'SELECT * FROM "{table}"').fetchall()))
                digests[f"{db_path.name}:{table}"] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return digests


async def test_malformed_events_on_every_subject_are_refused_with_a_reason(tmp_path: Path, busybox_image: str) -> None:
    examples = int(os.environ.get("MEDPERF_FUZZ_EXAMPLES", "25"))
    settings_ = Settings(
        state_dir=tmp_path / "state",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    # A name of its own: an agent removes containers labelled with its site's name when it starts.
    site = site_settings(tmp_path).model_copy(update={"name": f"fuzz-{uuid.uuid4().hex[:6]}"})
    async with Stack(settings_, sites=[site]) as stack:
        assert stack.ingress and stack.settings.nats_url
        url = stack.settings.nats_url
        clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        fed = Federation(url, clients, busybox_image, site, stack.hosts[f"site-{site.name}"].uow)
        try:
            await fed.join()  # tables with rows in them, so a half-applied message would show
            await fed.job_reaches(await fed.add_model("before", "echo 1 > /out/p1"), "succeeded")
            durable = await consumers(url)
            assert len(durable) >= 15, [c.name for c in durable]  # every service's consumers are there

            busy: list = []

            async def drained() -> bool:
                busy[:] = [c for c in await consumers(url) if c.pending or c.unacknowledged]
                return not busy

            try:
                # 75 s: a result the aggregator's batched consumer fetched but did not acknowledge
                # comes back after its 60 s ack wait, and would move a table under the snapshot.
                await eventually(drained, "the flow's events to be consumed", timeout=75, interval=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {busy}") from None
            before = snapshot([tmp_path / "state", site.work_dir])
            first_letter = len([e for e in await stored_events(url) if e.stream == "DEADLETTER"])

            nc = await nats.connect(url)
            published: list[tuple[str, int]] = []  # (subject, stream sequence)
            try:
                js = nc.jetstream()
                for consumer in durable:
                    for index, body in enumerate(payloads(validator_of(consumer.name), examples)):
                        subject = concrete(consumer.filter_subject, index)
                        ack = await js.publish(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4())})
                        published.append((subject, ack.seq))
            finally:
                await nc.close()
            expected = Counter(
                c.name for c in durable for subject, _ in published if subject_matches(c.filter_subject, subject)
            )

            async def letters() -> list[dict]:
                found = [e.event for e in await stored_events(url) if e.stream == "DEADLETTER"][first_letter:]
                return found if len(found) >= sum(expected.values()) else []

            await eventually(letters, f"{sum(expected.values())} dead letters", timeout=90, interval=0.5)
            parked = await letters()
            assert Counter(letter["consumer"] for letter in parked) == expected
            assert all(letter["reason"].startswith("rejected: malformed message") for letter in parked), {
                letter["reason"] for letter in parked if not letter["reason"].startswith("rejected: malformed")
            }
            assert all(letter["deliveries"] == 1 for letter in parked)  # refused at once, never retried
            assert snapshot([tmp_path / "state", site.work_dir]) == before, "a malformed message changed a table"

            # The services still answer and still consume: a new model runs to the board.
            model_id = await fed.add_model("after", "echo 1 > /out/p1; echo 2 > /out/p2")
            await fed.job_reaches(model_id, "succeeded")

            async def on_board() -> bool:
                board = await fed.call("committee", "get", f"/benchmarks/{fed.benchmark_id}/leaderboard")
                return any(row["model"] == "after" for row in board.get("rows") or [])

            await eventually(on_board, "the model sent after the flood on the board", timeout=30)
            record(
                "adversarial input",
                consumers=len(durable),
                malformed_inputs_tried=len(published),
                refusals_dead_lettered=len(parked),
                half_applied=0,
                crashes=0,
            )
        finally:
            for client in clients.values():
                client.close()
