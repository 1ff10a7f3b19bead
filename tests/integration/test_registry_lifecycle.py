"""The registry service, for real: a nats-server with JetStream, the registry's database (SQLite, and
PostgreSQL where installed), commands over request/reply, and its events read back from the REGISTRY
stream.

Covers issue 3's registry part: the DEVELOPMENT -> OPERATION lifecycle, the EDITABLE table walked
field by field (with the old and new values each EntityEdited carries), validity, deletes, list
filters, who sees a dataset's statistics, and users and API tokens."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import nats
import pytest
from history import stream_messages
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from services.registry.app import create_service
from services.registry.domain import EDITABLE, editable_view, token_digest
from shared.commands import (
    Authenticate,
    Command,
    CreateUser,
    DeleteEntity,
    EditEntity,
    GetEntity,
    IssueToken,
    ListEntities,
    Outcome,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    RevokeToken,
    SubmitBenchmark,
)
from shared.containers import ContainerSpec
from shared.events import (
    AssociationRequested,
    BenchmarkApproved,
    ContainerRegistered,
    EntityDeleted,
    EntityEdited,
    Event,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    parse_event,
)
from shared.service import ServiceHost, ask
from shared.settings import Settings

DEADLINE = 5.0
DIGEST = "sha256:" + "0" * 64
FILES = {"source": "https://example.org/files.tar.gz", "sha256": "a" * 64}
DEMO = {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64}
METRICS = [
    {"name": "auc", "higher_is_better": True, "aggregate": "mean"},
    {"name": "brier", "higher_is_better": False, "aggregate": "median"},
]
T = TypeVar("T")


def spec(*tasks: str, image: str = "example:1") -> dict[str, Any]:
    return ContainerSpec(
        image=image,
        image_digest=DIGEST,
        tasks={t: {"command": ["run", t], "inputs": {"additional_files": {"mount_path": "/f"}}} for t in tasks},
        additional_files=FILES,
    ).model_dump(mode="json")


@dataclass
class Registry:
    host: ServiceHost
    nc: NatsClient
    js: JetStreamContext

    async def ask(self, command: Command) -> Outcome:
        return await ask(self.host.broker, command, DEADLINE)

    async def ok(self, command: Command) -> Outcome:
        outcome = await self.ask(command)
        assert outcome.ok, f"{type(command).__name__} refused: {outcome.code}: {outcome.reason}"
        return outcome

    async def refused(self, command: Command, code: str) -> str:
        outcome = await self.ask(command)
        assert not outcome.ok, f"{type(command).__name__} was accepted"
        assert outcome.code == code, outcome.reason
        assert outcome.reason
        return outcome.reason

    async def get(self, entity: str, entity_id: int, actor: str = "admin") -> dict[str, Any]:
        return (await self.ok(GetEntity(actor=actor, is_admin=actor == "admin", entity=entity, id=entity_id))).data

    async def ids(self, actor: str = "stranger", **filters: Any) -> list[int]:
        outcome = await self.ok(ListEntities(actor=actor, is_admin=actor == "admin", **filters))
        assert isinstance(outcome.data, list)
        return [item["id"] for item in outcome.data]

    async def raw_events(self) -> list[bytes]:
        return [m.data or b"" for m in await stream_messages(self.js, "REGISTRY")]

    async def events(self, until: Callable[[list[Event]], bool]) -> list[Event]:
        """The registry's events once ``until`` holds for them (they leave through the outbox relay)."""

        async def read() -> list[Event] | None:
            events = [parse_event(raw) for raw in await self.raw_events()]
            return events if until(events) else None

        return await eventually(read)

    async def publish(self, event: Event) -> None:
        """An event of another service, as its outbox relay would publish it."""
        await self.js.publish(event.subject, event.model_dump_json().encode(), stream="APPROVALS")


async def eventually(probe: Callable[[], Awaitable[T | None]]) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        result = await probe()
        if result is not None:
            return result
        assert time.monotonic() < deadline, "not reached within the deadline"
        await asyncio.sleep(0.05)


@pytest.fixture
async def registry(tmp_path: Path, nats_url: str, database_url: str | None) -> AsyncIterator[Registry]:
    host = create_service(Settings(nats_url=nats_url, state_dir=tmp_path, database_url=database_url))
    await host.start()
    nc = await nats.connect(nats_url)
    try:
        yield Registry(host, nc, nc.jetstream())
        assert (await nc.jetstream().stream_info("DEADLETTER")).state.messages == 0, "a message was dead-lettered"
    finally:
        # Bounded, and named: a stop that hangs fails the test instead of stalling the suite.
        stuck = []
        for step, stop in (("closing the test's NATS connection", nc.close), ("stopping the registry", host.stop)):
            try:
                await asyncio.wait_for(stop(), 30)
            except TimeoutError:
                stuck.append(step)
        assert not stuck, f"{' and '.join(stuck)} took more than 30 s"


async def container(reg: Registry, name: str, *tasks: str, owner: str = "committee", state: str = "OPERATION") -> int:
    return (await reg.ok(RegisterContainer(actor=owner, name=name, spec=spec(*tasks), state=state))).id  # type: ignore[arg-type,return-value]


async def model(reg: Registry, name: str, owner: str = "committee", state: str = "OPERATION") -> int:
    container_id = await container(reg, f"{name}-container", "infer", owner=owner, state=state)
    return (await reg.ok(RegisterModel(actor=owner, name=name, container_id=container_id, state=state))).id  # type: ignore[arg-type,return-value]


async def benchmark(
    reg: Registry, name: str = "bench", owner: str = "committee", state: str = "DEVELOPMENT", **parts: int
) -> int:
    parts.setdefault(
        "data_preparator_id", await container(reg, f"{name}-prep", "prepare", "sanity_check", "statistics")
    )
    parts.setdefault("reference_model_id", await model(reg, f"{name}-ref"))
    parts.setdefault("metrics_container_id", await container(reg, f"{name}-metrics", "evaluate"))
    command = SubmitBenchmark(
        actor=owner,
        name=name,
        demo_dataset=DEMO,  # type: ignore[arg-type]
        metrics=METRICS,  # type: ignore[arg-type]
        primary_metric="auc",
        state=state,  # type: ignore[arg-type]
        **parts,
    )
    return (await reg.ok(command)).id  # type: ignore[return-value]


async def dataset(
    reg: Registry, preparator: int, name: str = "ds", owner: str = "site-a", prepared: str = "d", **extra: Any
) -> Outcome:
    return await reg.ask(
        RegisterDataset(
            actor=owner,
            name=name,
            site=owner,
            data_preparator_id=preparator,
            input_hash="c" * 64,
            prepared_hash=prepared * 64,
            statistics={"cases": 143},
            **extra,
        )
    )


# --- the EDITABLE table, end to end ---------------------------------------------------------------


async def _walk_subject(reg: Registry, kind: str, state: str) -> tuple[int, dict[str, Any]]:
    """An entity of ``kind`` in ``state``, owned by 'owner', and fitting alternatives for its references."""
    alt = {
        "container_id": await container(reg, "alt-model-container", "infer"),
        "data_preparator_id": await container(reg, "alt-prep", "prepare", "sanity_check", "statistics"),
        "reference_model_id": await model(reg, "alt-ref"),
        "metrics_container_id": await container(reg, "alt-metrics", "evaluate"),
    }
    if kind == "container":
        entity_id = await container(reg, "subject", "infer", owner="owner", state=state)
    elif kind == "model":
        container_id = await container(reg, "subject-container", "infer", owner="owner")
        entity_id = (
            await reg.ok(RegisterModel(actor="owner", name="subject", container_id=container_id, state=state))
        ).id  # type: ignore[arg-type]
    elif kind == "benchmark":
        entity_id = await benchmark(reg, "subject", owner="owner", state=state)
    else:
        prep = await container(reg, "subject-prep", "prepare", "sanity_check", "statistics")
        outcome = await dataset(reg, prep, name="subject", owner="owner", state=state)
        assert outcome.ok, outcome.reason
        entity_id = outcome.id
    assert entity_id is not None
    return entity_id, alt


def _new_value(field: str, current: dict[str, Any], alt: dict[str, Any]) -> Any:
    values: dict[str, Any] = {
        "state": "OPERATION" if current["state"] == "DEVELOPMENT" else "DEVELOPMENT",
        "name": f"{current.get('name')}-2",
        "description": "a better description",
        "is_valid": not current["is_valid"],
        "user_metadata": {"note": "edited"},
        "spec": spec("infer", image="example:2"),
        "additional_files": {"source": "https://mirror.example.org/files.tar.gz", "sha256": FILES["sha256"]},
        "demo_dataset": {"source": "https://mirror.example.org/demo.tar.gz", "sha256": DEMO["sha256"]},
        "metrics": [*METRICS, {"name": "dice", "higher_is_better": True, "aggregate": "weighted_mean"}],
        "primary_metric": "brier",
        "statistics": {"cases": 150, "mean_age": 61.5},
        "approval_status": "APPROVED",
        "site": "elsewhere",
        "owner": "mallory",
        "colour": "red",
        "id": 999,
        "medperf": {"container_config": "image: other"},
        **alt,
    }
    if field in values:
        return values[field]
    if field.endswith("_hash"):
        return "e" * 64
    assert field.endswith("_at"), field
    return "2030-01-01T00:00:00+00:00"


@pytest.mark.parametrize("state", ["DEVELOPMENT", "OPERATION"])
@pytest.mark.parametrize("kind", ["container", "model", "benchmark", "dataset"])
async def test_every_field_of_every_entity_in_every_state(registry: Registry, kind: str, state: str) -> None:
    entity_id, alt = await _walk_subject(registry, kind, state)
    allowed = EDITABLE[kind][state]
    anywhere = EDITABLE[kind]["DEVELOPMENT"] | EDITABLE[kind]["OPERATION"]
    # state last: the move to OPERATION would change what the other fields may do
    fields = [*sorted({*editable_view(kind, await registry.get(kind, entity_id)), "colour"} - {"state"}), "state"]
    expected: list[dict[str, tuple[Any, Any]]] = []
    for field in fields:
        current = editable_view(kind, await registry.get(kind, entity_id, actor="owner"))
        value = _new_value(field, current, alt)
        edit = EditEntity(actor="owner", entity=kind, id=entity_id, changes={field: value})  # type: ignore[arg-type]
        if field in allowed or f"{field}.source" in allowed:
            answer = await registry.ok(edit)
            assert editable_view(kind, answer.data)[field] == value
            expected.append({field: (current[field], value)})
        else:
            in_some_state = field in anywhere or f"{field}.source" in anywhere
            reason = await registry.refused(edit, "conflict" if in_some_state else "invalid")
            assert reason.startswith(field)
    edits = await registry.events(
        lambda events: len([e for e in events if isinstance(e, EntityEdited)]) >= len(expected)
    )
    reported = [
        {f: (c.old, c.new) for f, c in e.changes.items()}
        for e in edits
        if isinstance(e, EntityEdited) and e.entity == kind and e.entity_id == entity_id
    ]
    assert reported == expected
    assert all(e.actor == "owner" for e in edits if isinstance(e, EntityEdited))


async def test_an_operational_demo_dataset_keeps_its_hash(registry: Registry) -> None:
    bench = await benchmark(registry, state="OPERATION")
    moved = {"source": "https://mirror.example.org/demo.tar.gz", "sha256": "f" * 64}
    reason = await registry.refused(
        EditEntity(actor="committee", entity="benchmark", id=bench, changes={"demo_dataset": moved}), "conflict"
    )
    assert reason.startswith(f"demo_dataset.sha256: benchmark {bench} is OPERATION")
    assert (await registry.get("benchmark", bench))["demo_dataset"] == DEMO


async def test_edits_by_strangers_admins_and_of_nothing(registry: Registry) -> None:
    prep = await container(registry, "prep", "prepare", "sanity_check", "statistics", state="DEVELOPMENT")
    edit = {"entity": "container", "id": prep}
    await registry.refused(EditEntity(actor="stranger", changes={"is_valid": False}, **edit), "forbidden")
    await registry.refused(EditEntity(actor="committee", changes={"name": "prep"}, **edit), "invalid")
    await registry.refused(EditEntity(actor="committee", id=999, entity="model", changes={"name": "x"}), "not_found")
    await registry.ok(EditEntity(actor="root", is_admin=True, changes={"user_metadata": {"by": "admin"}}, **edit))
    other = await container(registry, "other", "evaluate")
    reason = await registry.refused(EditEntity(actor="committee", changes={"name": "other"}, **edit), "conflict")
    assert "a container named 'other' already exists" in reason
    # A container's new spec must still serve the models that run it.
    ref = await model(registry, "ref", state="DEVELOPMENT")
    ref_container = (await registry.get("model", ref))["container_id"]
    reason = await registry.refused(
        EditEntity(actor="committee", entity="container", id=ref_container, changes={"spec": spec("evaluate")}),
        "conflict",
    )
    assert f"model {ref} (ref) uses it as model and needs the task(s) infer" in reason
    reason = await registry.refused(
        EditEntity(actor="committee", entity="model", id=ref, changes={"container_id": other}), "invalid"
    )
    assert "lacks the task(s) infer" in reason


# --- lifecycle ------------------------------------------------------------------------------------


async def test_registration_records_the_state_and_announces_it(registry: Registry) -> None:
    dev = await container(registry, "dev", "infer", state="DEVELOPMENT")
    ops = await container(registry, "ops", "infer", state="OPERATION")
    default = (await registry.ok(RegisterModel(actor="committee", name="m", container_id=dev))).id
    assert [(await registry.get("container", i))["state"] for i in (dev, ops)] == ["DEVELOPMENT", "OPERATION"]
    assert (await registry.get("model", default))["state"] == "DEVELOPMENT"  # type: ignore[arg-type]
    events = await registry.events(lambda events: len(events) >= 3)
    assert [getattr(e, "state", None) for e in events] == ["DEVELOPMENT", "OPERATION", "DEVELOPMENT"]


async def test_a_benchmark_becomes_operational_only_with_operational_parts(registry: Registry) -> None:
    prep = await container(registry, "prep", "prepare", "sanity_check", "statistics", state="DEVELOPMENT")
    ref = await model(registry, "ref", state="DEVELOPMENT")
    metrics = await container(registry, "metrics", "evaluate")
    parts = {"data_preparator_id": prep, "reference_model_id": ref, "metrics_container_id": metrics}
    bench = await benchmark(registry, **parts)
    to_operation = EditEntity(actor="committee", entity="benchmark", id=bench, changes={"state": "OPERATION"})
    reason = await registry.refused(to_operation, "conflict")
    ref_container = (await registry.get("model", ref))["container_id"]
    assert f"data preparator container {prep} (prep) is DEVELOPMENT" in reason
    assert f"reference model {ref} (ref) is DEVELOPMENT" in reason
    assert f"the reference model's container {ref_container} (ref-container) is DEVELOPMENT" in reason
    assert "metrics container" not in reason
    # Registering it operational at once follows the same rule.
    submit = SubmitBenchmark(
        actor="other-committee",
        name="b2",
        demo_dataset=DEMO,  # type: ignore[arg-type]
        metrics=METRICS,  # type: ignore[arg-type]
        primary_metric="auc",
        state="OPERATION",
        **parts,
    )
    await registry.refused(submit, "conflict")
    for kind, entity_id in (("container", prep), ("model", ref), ("container", ref_container)):
        await registry.ok(EditEntity(actor="committee", entity=kind, id=entity_id, changes={"state": "OPERATION"}))  # type: ignore[arg-type]
    assert (await registry.ok(to_operation)).data["state"] == "OPERATION"
    reason = await registry.refused(
        EditEntity(actor="committee", entity="benchmark", id=bench, changes={"state": "DEVELOPMENT"}), "conflict"
    )
    assert reason == f"state: benchmark {bench} is OPERATION; it never goes back to DEVELOPMENT"


async def test_operational_datasets_have_unique_prepared_data(registry: Registry) -> None:
    prep = await container(registry, "prep", "prepare", "sanity_check", "statistics")
    first = await dataset(registry, prep, owner="site-a")
    twin = await dataset(registry, prep, owner="site-b")  # development datasets may share contents
    assert first.ok and twin.ok and first.id != twin.id
    assert (await dataset(registry, prep, owner="site-a")).id == first.id  # a repeated registration
    await registry.ok(EditEntity(actor="site-a", entity="dataset", id=first.id, changes={"state": "OPERATION"}))  # type: ignore[arg-type]
    reason = await registry.refused(
        EditEntity(actor="site-b", entity="dataset", id=twin.id, changes={"state": "OPERATION"}),  # type: ignore[arg-type]
        "conflict",
    )
    assert f"operational dataset {first.id} already holds these prepared contents" in reason
    late = await dataset(registry, prep, owner="site-c")
    assert (late.ok, late.code) == (False, "conflict")
    assert (await dataset(registry, prep, owner="site-a")).id == first.id  # still recognised when operational
    other = await dataset(registry, prep, owner="site-c", prepared="9", state="OPERATION")
    assert other.ok


# --- validity, deletes, lists -----------------------------------------------------------------------


async def test_an_invalid_entity_leaves_the_lists(registry: Registry) -> None:
    kept = await container(registry, "kept", "infer")
    retired = await container(registry, "retired", "infer")
    await registry.ok(EditEntity(actor="committee", entity="container", id=retired, changes={"is_valid": False}))
    assert await registry.ids(entity="container") == [kept]
    assert await registry.ids(actor="committee", entity="container", is_valid=None) == [kept, retired]
    assert await registry.ids(actor="committee", entity="container", is_valid=False) == [retired]
    assert await registry.ids(actor="stranger", entity="container", is_valid=False) == []
    assert (await registry.get("container", retired, actor="committee"))["is_valid"] is False
    assert (await registry.get("container", retired, actor="admin"))["is_valid"] is False
    await registry.refused(GetEntity(actor="stranger", entity="container", id=retired), "not_found")


async def test_deletes_are_for_admins_and_leave_nothing_dangling(registry: Registry) -> None:
    bench = await benchmark(registry)
    b = await registry.get("benchmark", bench)
    ref = b["reference_model_id"]
    ref_container = (await registry.get("model", ref))["container_id"]
    prep = b["data_preparator_id"]
    await registry.refused(DeleteEntity(actor="committee", entity="benchmark", id=bench), "forbidden")
    admin = {"actor": "root", "is_admin": True}
    reason = await registry.refused(DeleteEntity(entity="model", id=ref, **admin), "conflict")
    assert f"benchmark {bench} (bench) as its reference model" in reason
    reason = await registry.refused(DeleteEntity(entity="container", id=ref_container, **admin), "conflict")
    assert f"model {ref} (bench-ref)" in reason
    assert (await dataset(registry, prep)).ok
    reason = await registry.refused(DeleteEntity(entity="container", id=prep, **admin), "conflict")
    assert f"benchmark {bench} (bench)" in reason and "dataset 1 (ds)" in reason
    await registry.ok(DeleteEntity(entity="benchmark", id=bench, reason="test", **admin))
    await registry.ok(DeleteEntity(entity="model", id=ref, **admin))
    await registry.ok(DeleteEntity(entity="container", id=ref_container, **admin))
    await registry.refused(DeleteEntity(entity="container", id=ref_container, **admin), "not_found")
    await registry.refused(GetEntity(actor="root", is_admin=True, entity="model", id=ref), "not_found")
    events = await registry.events(lambda events: sum(isinstance(e, EntityDeleted) for e in events) == 3)
    deleted = [(e.entity, e.entity_id, e.reason) for e in events if isinstance(e, EntityDeleted)]
    assert deleted == [("benchmark", bench, "test"), ("model", ref, ""), ("container", ref_container, "")]


async def test_a_deleted_id_is_never_given_again(registry: Registry) -> None:
    """Other services key their projections by these ids; SQLite would reuse the highest one."""
    admin = {"actor": "root", "is_admin": True}
    for kind in ("container", "benchmark", "dataset"):
        prep = await container(registry, f"{kind}-prep", "prepare", "sanity_check", "statistics")
        if kind == "container":
            newest = prep
        elif kind == "benchmark":
            newest = await benchmark(registry, f"{kind}-bench", owner=f"{kind}-committee", data_preparator_id=prep)
        else:
            newest = (await dataset(registry, prep, owner="site-a", prepared="1")).id  # type: ignore[assignment]
        await registry.ok(DeleteEntity(entity=kind, id=newest, **admin))  # type: ignore[arg-type]
        if kind == "container":
            again = await container(registry, "again", "infer")
        elif kind == "benchmark":
            again = await benchmark(registry, "again", owner="other-committee", data_preparator_id=prep)
        else:
            again = (await dataset(registry, prep, owner="site-a", prepared="1")).id  # type: ignore[assignment]
        assert again == newest + 1, kind


async def test_list_filters_and_pages(registry: Registry) -> None:
    mine = [await container(registry, f"alpha-{i}", "infer", owner="alice") for i in range(3)]
    theirs = await container(registry, "Beta", "infer", owner="bob", state="DEVELOPMENT")
    assert await registry.ids(actor="alice", entity="container", mine=True) == mine
    assert await registry.ids(entity="container", owner="bob") == [theirs]
    assert await registry.ids(entity="container", state="DEVELOPMENT") == [theirs]
    assert await registry.ids(entity="container", name_contains="ALPHA") == mine
    assert await registry.ids(entity="container", name_contains="%") == []  # no wildcard
    assert await registry.ids(entity="container", limit=2) == mine[:2]
    assert await registry.ids(entity="container", limit=2, offset=2) == [mine[2], theirs]
    reason = await registry.refused(
        ListEntities(actor="alice", entity="container", approval_status="PENDING"), "invalid"
    )
    assert reason.startswith("approval_status")
    # A benchmark is seen by others once approved (the approvals service says so by an event).
    pending = await benchmark(registry, "pending", owner="carol")
    approved = await benchmark(registry, "approved", owner="dave")
    await registry.publish(BenchmarkApproved(actor="root", benchmark_id=approved, name="approved"))

    async def approved_listed() -> list[int] | None:
        return (await registry.ids(entity="benchmark")) or None

    assert await eventually(approved_listed) == [approved]
    assert await registry.ids(actor="carol", entity="benchmark") == [pending, approved]
    assert await registry.ids(actor="admin", entity="benchmark", approval_status="PENDING") == [pending]
    await registry.refused(GetEntity(actor="stranger", entity="benchmark", id=pending), "not_found")


async def test_who_sees_a_datasets_statistics(registry: Registry) -> None:
    prep = await container(registry, "prep", "prepare", "sanity_check", "statistics", owner="prep-author")
    bench = await benchmark(registry, owner="committee", data_preparator_id=prep)
    ds = (await dataset(registry, prep, owner="site-a")).id
    assert ds is not None

    async def statistics(actor: str) -> Any:
        """What ``actor`` sees of them, by GET and in a list (which must agree)."""
        got = await registry.get("dataset", ds, actor=actor)
        listed = (await registry.ok(ListEntities(actor=actor, is_admin=actor == "admin", entity="dataset"))).data
        return got["statistics"] if listed[0]["statistics"] == got["statistics"] else "disagree"

    assert [await statistics(a) for a in ("site-a", "admin", "prep-author")] == [{"cases": 143}] * 3
    assert [await statistics(a) for a in ("committee", "stranger")] == [None, None]
    request = AssociationRequested(
        actor="site-a", association_id=1, benchmark_id=bench, kind="dataset", component_id=ds
    )
    asked_again = request.model_copy(update={"event_id": uuid4(), "association_id": 3})  # e.g. after a rejection
    model_request = AssociationRequested(actor="x", association_id=2, benchmark_id=bench, kind="model", component_id=ds)
    for event in (request, request, asked_again, model_request):  # the second is a redelivery
        await registry.publish(event)

    async def committee_sees() -> Any:
        seen = await statistics("committee")
        return None if seen in (None, "disagree") else seen  # the projection may commit between the two reads

    assert await eventually(committee_sees) == {"cases": 143}
    assert await statistics("stranger") is None


# --- users and tokens -------------------------------------------------------------------------------


async def test_users_and_tokens(registry: Registry) -> None:
    admin = {"actor": "root", "is_admin": True}
    await registry.refused(CreateUser(actor="alice", name="bob"), "forbidden")
    assert (await registry.ok(CreateUser(name="alice", **admin))).data == {"user": "alice", "is_admin": False}
    await registry.ok(CreateUser(name="carol", admin=True, **admin))
    await registry.refused(CreateUser(name="alice", **admin), "conflict")
    await registry.refused(IssueToken(actor="alice", user="alice"), "forbidden")
    await registry.refused(IssueToken(user="nobody", **admin), "not_found")
    issued = (await registry.ok(IssueToken(user="alice", label="laptop", **admin))).data
    token, token_id = issued["token"], issued["token_id"]
    assert issued["user"] == "alice" and token.startswith("mpf_") and len(token) >= 40
    second = (await registry.ok(IssueToken(user="carol", **admin))).data
    assert second["token"] != token

    async def who(t: str) -> Outcome:
        return await registry.ask(Authenticate(actor="ingress", token_sha256=token_digest(t)))

    assert (await who(token)).data == {"user": "alice", "is_admin": False}
    assert (await who(second["token"])).data == {"user": "carol", "is_admin": True}
    unknown = await who("mpf_not-a-token")
    assert (unknown.ok, unknown.code, unknown.reason) == (False, "unauthenticated", "unknown or revoked token")
    await registry.refused(RevokeToken(actor="carol", token_id=token_id), "not_found")  # not hers: none for her
    await registry.ok(RevokeToken(actor="alice", token_id=token_id))
    assert (await registry.refused(RevokeToken(actor="alice", token_id=token_id), "conflict")).startswith(
        f"token {token_id} is already revoked"
    )
    await registry.refused(RevokeToken(actor="root", is_admin=True, token_id=99), "not_found")
    assert (await who(token)).code == "unauthenticated"
    await registry.ok(RevokeToken(token_id=second["token_id"], **admin))

    events = await registry.events(lambda events: sum(isinstance(e, TokenRevoked) for e in events) == 2)
    assert [(type(e).__name__, getattr(e, "user", None)) for e in events] == [
        ("UserCreated", "alice"),
        ("UserCreated", "carol"),
        ("TokenIssued", "alice"),
        ("TokenIssued", "carol"),
        ("TokenRevoked", "alice"),
        ("TokenRevoked", "carol"),
    ]
    assert isinstance(events[2], TokenIssued) and (events[2].token_id, events[2].label) == (token_id, "laptop")
    assert isinstance(events[1], UserCreated) and events[1].is_admin
    for raw in await registry.raw_events():
        for secret in (token, second["token"], token_digest(token), token_digest(second["token"])):
            assert secret.encode() not in raw


async def test_ids_beyond_64_bits_are_refused_as_invalid(registry: Registry) -> None:
    """SQLite cannot even bind such a number; the command's own validation refuses it first, so a
    client that skips validation (raw JSON on the subject) still gets a reasoned refusal."""
    huge = 2**70
    admin = {"actor": "root", "is_admin": True}
    for command_type, fields in (
        (GetEntity, {"entity": "model", "id": huge, **admin}),
        (EditEntity, {"entity": "model", "id": huge, "changes": {"name": "x"}, **admin}),
        (DeleteEntity, {"entity": "container", "id": huge, **admin}),
        (RevokeToken, {"token_id": huge, **admin}),
        (RegisterModel, {"actor": "committee", "name": "m", "container_id": huge}),
        (ListEntities, {"actor": "stranger", "entity": "container", "offset": huge}),
    ):
        reply = await registry.host.broker.request(
            json.dumps(fields).encode(), command_type.subject(), timeout=DEADLINE
        )
        outcome = Outcome.model_validate_json(reply.body)
        assert (outcome.ok, outcome.code) == (False, "invalid"), outcome
        assert "less than or equal to 2147483647" in (outcome.reason or "")
    ref = await model(registry, "ref", state="DEVELOPMENT")
    reason = await registry.refused(
        EditEntity(actor="committee", entity="model", id=ref, changes={"container_id": huge}), "invalid"
    )
    assert reason.startswith("container_id: Input should be less than or equal to")


async def test_a_medperf_registration_keeps_its_documents_until_the_spec_is_edited(registry: Registry) -> None:
    config = (
        "container_type: DockerImage\nimage: example/model:1\ntasks:\n  infer:\n    run_args:\n"
        "      command: python3 /infer.py --fast\n    input_volumes:\n      data_path:\n"
        "        mount_path: /data\n        type: directory\n"
    )
    documents = {"container_config": config, "parameters": "threshold: 0.5\n", "image_hash": DIGEST}
    made = await registry.ok(RegisterContainer(actor="owner", name="mp", medperf=documents))  # type: ignore[arg-type]
    found = await registry.get("container", made.id or 0, actor="owner")
    assert found["medperf"] == documents
    assert found["spec"]["tasks"]["infer"]["command"] == ["python3", "/infer.py", "--fast"]
    assert found["spec"]["parameters"] == {"threshold": 0.5}
    registered = await registry.events(lambda events: any(isinstance(e, ContainerRegistered) for e in events))
    assert [e.spec.image for e in registered if isinstance(e, ContainerRegistered)] == ["example/model:1"]

    edit = EditEntity(actor="owner", entity="container", id=made.id, changes={"name": "mp-2"})  # type: ignore[arg-type]
    await registry.ok(edit)
    assert (await registry.get("container", made.id or 0))["medperf"] == documents
    edit = EditEntity(actor="owner", entity="container", id=made.id, changes={"spec": spec("infer")})  # type: ignore[arg-type]
    await registry.ok(edit)
    assert (await registry.get("container", made.id or 0))["medperf"] is None  # it no longer describes the spec
