"""The live feed's server-side rule (services/console/visibility.py), event type by event type and
viewer by viewer: every event type the system publishes is in the table below (a test checks it),
with who must receive it and who must not.

The world: benchmark 1 is the committee's (``com``); model 5 (container 3) is ``mo``'s; dataset 10
at site-a is ``alice``'s, dataset 20 at site-b is ``bob``'s; ``eve`` owns model 6, benchmark 2 and
nothing at the sites; ``nobody`` owns nothing. Job events' actor is the site agent's owner.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest

from services.console.visibility import Relations, visible
from services.ingress.feed import Reader
from shared import events as ev
from shared.containers import HostedFile
from shared.events import (
    AnyEvent,
    CompatibilityReport,
    DeadLetter,
    Event,
    FieldChange,
    MetricSpec,
    SharingPolicy,
    SiteHeartbeat,
)
from shared.streams import deadletter_subject, heartbeat_subject

DIGEST = "sha256:" + "a" * 64
VIEWERS = {
    "com": Relations("com", benchmarks=frozenset({1})),
    "mo": Relations("mo", models=frozenset({5}), containers=frozenset({3})),
    "alice": Relations("alice", datasets=frozenset({10}), sites=frozenset({"site-a"})),
    "bob": Relations("bob", datasets=frozenset({20}), sites=frozenset({"site-b"})),
    "eve": Relations("eve", benchmarks=frozenset({2}), models=frozenset({6})),
    "nobody": Relations("nobody"),
}
ADMIN = Relations("root", is_admin=True)


def entry(event: Event | dict[str, Any], subject: str | None = None) -> dict[str, Any]:
    body = event.model_dump(mode="json") if isinstance(event, Event) else event
    return {"seq": 1, "subject": subject or event.subject, "stored_at": "2026-01-01T00:00:00Z", "event": body}  # type: ignore[union-attr]


def job(cls: type, site: str = "site-a", **fields: Any) -> Any:
    owner = {"site-a": "alice", "site-b": "bob"}.get(site, "carol")
    base = {"actor": owner, "site": site, "job_id": 7, "benchmark_id": 1, "model_id": 5, "dataset_id": 10}
    extra = {
        ev.JobQueued: {"reason": "approved"},
        ev.JobStarted: {"attempt": 1},
        ev.JobFailed: {"failure": "model", "reason": "exit 3", "log_tail": "patient 4711: boom"},
        ev.JobLogReleased: {"log_tail": "patient 4711: boom"},
    }.get(cls, {})
    return cls(**{**base, **extra, **fields})


def progress(site: str = "site-a", **fields: Any) -> dict[str, Any]:
    """The coming ``job.progress`` event, as a body only: the rule must need no change for it."""
    owner = {"site-a": "alice", "site-b": "bob"}.get(site, "carol")
    body = {"type": "job.progress", "actor": owner, "site": site, "job_id": 7, "benchmark_id": 1}
    body |= {"model_id": 5, "dataset_id": 10, "stage": "infer", "done": 3, "total": 9, **fields}
    return entry(body, f"medperf.site.{site}.job.progress")


def benchmark(**fields: Any) -> ev.BenchmarkSubmitted:
    body = {
        "actor": "com",
        "benchmark_id": 1,
        "name": "b",
        "description": "",
        "owner": "com",
        "data_preparator_id": 2,
        "reference_model_id": 4,
        "metrics_container_id": 8,
        "demo_dataset": HostedFile(source="https://example.org/d.tar.gz", sha256="b" * 64),
        "metrics": [MetricSpec(name="auc")],
        "primary_metric": "auc",
    }
    return ev.BenchmarkSubmitted(**{**body, **fields})


def dataset(**fields: Any) -> ev.DatasetRegistered:
    body = {
        "actor": "alice",
        "dataset_id": 10,
        "name": "d",
        "owner": "alice",
        "site": "site-a",
        "data_preparator_id": 2,
        "input_hash": "1" * 64,
        "prepared_hash": "2" * 64,
        "statistics": {"cases": 4},
    }
    return ev.DatasetRegistered(**{**body, **fields})


SPEC = {"image": "x/y:1", "image_digest": DIGEST, "tasks": {"infer": {"command": ["run"]}}}
REPORT = CompatibilityReport(passed=True)
ALL = set(VIEWERS)

#: (name, entry, who receives it). Everyone else must not; the admin always does.
CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    (
        "own container",
        entry(ev.ContainerRegistered(actor="mo", container_id=3, name="c", owner="mo", spec=SPEC)),
        {"mo"},
    ),
    (
        "another's container",
        entry(ev.ContainerRegistered(actor="eve", container_id=9, name="e", owner="eve", spec=SPEC)),
        {"eve"},
    ),
    ("own model", entry(ev.ModelRegistered(actor="mo", model_id=5, name="m", owner="mo", container_id=3)), {"mo"}),
    # A model on mo's container is eve's entity: registrations are shown to their owner only.
    (
        "model on mo's container",
        entry(ev.ModelRegistered(actor="eve", model_id=6, name="x", owner="eve", container_id=3)),
        {"eve"},
    ),
    ("own benchmark", entry(benchmark()), {"com"}),
    (
        "benchmark with mo's reference",
        entry(benchmark(actor="eve", owner="eve", benchmark_id=2, reference_model_id=5)),
        {"eve"},
    ),
    ("own dataset", entry(dataset()), {"alice"}),
    ("another's dataset at alice's site", entry(dataset(actor="carol", owner="carol", dataset_id=30)), set()),
    (
        "edit of model 5 by an admin",
        entry(
            ev.EntityEdited(actor="root", entity="model", entity_id=5, changes={"name": FieldChange(old="a", new="b")})
        ),
        {"mo"},
    ),
    (
        "edit of dataset 20",
        entry(
            ev.EntityEdited(
                actor="bob", entity="dataset", entity_id=20, changes={"name": FieldChange(old="a", new="b")}
            )
        ),
        {"bob"},
    ),
    ("deletion of benchmark 1", entry(ev.EntityDeleted(actor="root", entity="benchmark", entity_id=1)), {"com"}),
    ("alice created", entry(ev.UserCreated(actor="root", user="alice")), {"alice"}),
    ("token of bob", entry(ev.TokenIssued(actor="root", user="bob", token_id=4)), {"bob"}),
    ("token of bob revoked by com", entry(ev.TokenRevoked(actor="com", user="bob", token_id=4)), {"bob"}),
    (
        "key of site-a",
        entry(ev.SiteKeyRegistered(actor="alice", site="site-a", key_id="k", public_key="p", owner="alice")),
        {"alice"},
    ),
    (
        "key of site-b revoked",
        entry(ev.SiteKeyRevoked(actor="root", site="site-b", key_id="k", effective_from="2026-01-01T00:00:00Z")),
        {"bob"},
    ),
    ("benchmark 1 approved", entry(ev.BenchmarkApproved(actor="root", benchmark_id=1, name="b")), {"com"}),
    ("benchmark 2 rejected", entry(ev.BenchmarkRejected(actor="root", benchmark_id=2, name="b")), {"eve"}),
    (
        "model 5 asks to join 1",
        entry(ev.AssociationRequested(actor="mo", association_id=1, benchmark_id=1, kind="model", component_id=5)),
        {"com", "mo"},
    ),
    (
        "dataset 10 approved in 1",
        entry(ev.AssociationApproved(actor="com", association_id=2, benchmark_id=1, kind="dataset", component_id=10)),
        {"com", "alice"},
    ),
    (
        "model 6 rejected from 2",
        entry(ev.AssociationRejected(actor="eve", association_id=3, benchmark_id=2, kind="model", component_id=6)),
        {"eve"},
    ),
    # A dataset's id is not a model's: kind decides which relation a component_id names.
    (
        "dataset 5 joins 2",
        entry(ev.AssociationRequested(actor="eve", association_id=4, benchmark_id=2, kind="dataset", component_id=5)),
        {"eve"},
    ),
    (
        "auto-approval of 1",
        entry(ev.AutoApprovalChanged(actor="com", benchmark_id=1, kind="model", mode="NEVER")),
        {"com"},
    ),
    (
        "priority of model 5",
        entry(ev.AssociationPriorityChanged(actor="com", benchmark_id=1, model_id=5, old=0, new=3)),
        {"com", "mo"},
    ),
    (
        "result at site-a",
        entry(
            ev.ResultReported(
                actor="alice",
                site="site-a",
                benchmark_id=1,
                model_id=5,
                dataset_id=10,
                metrics={"auc": 0.9},
                container_digests={},
                dataset_hash="h",
            )
        ),
        {"com", "mo", "alice"},
    ),
    (
        "result of eve's model at site-b",
        entry(
            ev.ResultReported(
                actor="bob",
                site="site-b",
                benchmark_id=2,
                model_id=6,
                dataset_id=20,
                metrics={"auc": 0.9},
                container_digests={},
                dataset_hash="h",
            )
        ),
        {"bob", "eve"},
    ),
    (
        "test of model 5 at site-a",
        entry(
            ev.CompatibilityTested(
                actor="alice", site="site-a", benchmark_id=1, kind="model", component_id=5, report=REPORT
            )
        ),
        {"com", "mo", "alice"},
    ),
    (
        "policy of 1",
        entry(
            ev.SharingPolicyChanged(
                actor="com", benchmark_id=1, old=SharingPolicy(), new=SharingPolicy(visibility="public")
            )
        ),
        {"com"},
    ),
    *[
        (f"{cls.__name__} at site-a", entry(job(cls)), {"com", "mo", "alice"})
        for cls in (ev.JobQueued, ev.JobStarted, ev.JobSucceeded, ev.JobFailed, ev.JobCancelled, ev.JobLogReleased)
    ],
    *[
        (
            f"{cls.__name__} at site-b, eve's",
            entry(job(cls, "site-b", benchmark_id=2, model_id=6, dataset_id=20)),
            {"bob", "eve"},
        )
        for cls in (ev.JobQueued, ev.JobFailed)
    ],
    (
        "a test job at site-b, no model",
        entry(job(ev.JobQueued, "site-b", kind="prepare", benchmark_id=2, model_id=None, dataset_id=None)),
        {"bob", "eve"},
    ),
    ("job.progress at site-a", progress(), {"com", "mo", "alice"}),
    ("job.progress at site-b, eve's", progress("site-b", benchmark_id=2, model_id=6, dataset_id=20), {"bob", "eve"}),
    # The subject names the site: a body claiming another site does not reach that site's owners.
    (
        "site-c's job claiming site-a",
        entry(
            job(ev.JobQueued, "site-a", actor="carol", benchmark_id=2, model_id=6, dataset_id=30),
            "medperf.site.site-c.job.queued",
        ),
        {"eve"},
    ),
    (
        "heartbeat",
        entry(
            SiteHeartbeat(site="site-a").model_dump(mode="json") | {"type": "heartbeat", "actor": "alice"},
            heartbeat_subject("site-a"),
        ),
        set(),
    ),
    (
        "dead letter",
        entry(
            DeadLetter(
                service="console",
                consumer="c",
                subject="medperf.site.site-a.job.queued",
                reason="r",
                deliveries=5,
                payload="{}",
            ).model_dump(mode="json")
            | {"site": "site-a", "actor": "alice", "type": "job.queued"},
            deadletter_subject("console"),
        ),
        set(),
    ),
    ("unreadable", entry({"type": "unreadable", "raw": "site-a alice"}, "medperf.site.site-a.job.queued"), set()),
    ("no type", entry({"site": "site-a", "actor": "alice"}, "medperf.site.site-a.job.queued"), set()),
    ("not an object", {"seq": 1, "subject": "medperf.site.site-a.x.y", "event": ["site-a"]}, set()),
]


def test_every_event_type_is_in_the_table() -> None:
    published = {
        typing.get_args(t.model_fields["type"].annotation)[0] for t in typing.get_args(typing.get_args(AnyEvent)[0])
    }
    covered = {case[1]["event"].get("type") for case in CASES if isinstance(case[1]["event"], dict)}
    assert published - covered == set()
    assert "job.progress" in covered


@pytest.mark.parametrize(("name", "item", "receivers"), CASES, ids=[c[0] for c in CASES])
def test_who_receives_each_event(name: str, item: dict[str, Any], receivers: set[str]) -> None:
    assert receivers <= ALL
    got = {viewer for viewer, relations in VIEWERS.items() if visible(item, relations) is not None}
    assert got == receivers
    assert visible(item, ADMIN) is item  # the admin's entry, untouched


@pytest.mark.parametrize("item", [entry(job(ev.JobFailed)), progress(log_tail="case 3 of patient 4711")])
def test_log_tails_reach_only_the_owners_of_their_site(item: dict[str, Any]) -> None:
    tail = item["event"]["log_tail"]
    assert visible(item, VIEWERS["alice"]) is item  # the site's owner: as it is
    assert visible(item, ADMIN)["event"]["log_tail"] == tail  # type: ignore[index]
    for viewer in ("mo", "com"):
        shown = visible(item, VIEWERS[viewer])
        assert shown is not None and shown["event"]["log_tail"] == "" and shown["event"]["log_tail_withheld"] is True
        assert {k: v for k, v in shown["event"].items() if k not in ("log_tail", "log_tail_withheld")} == {
            k: v for k, v in item["event"].items() if k != "log_tail"
        }
    assert item["event"]["log_tail"] == tail, "the entry itself is not changed"


def test_a_released_tail_reaches_everyone_who_sees_the_job() -> None:
    """The data owner let it leave the site (``medperf job release-log``): /console/jobs shows it to
    the model owner and the committee, and so does the feed."""
    released = entry(job(ev.JobLogReleased))
    for viewer in ("alice", "mo", "com"):
        assert visible(released, VIEWERS[viewer]) is released
    assert visible(released, VIEWERS["bob"]) is None


def test_naming_a_site_in_a_dataset_does_not_make_it_yours() -> None:
    """Anyone may register a dataset that names site-a; site-a's events are its agent owner's."""
    squatter = Relations("mallory", datasets=frozenset({99}), sites=frozenset({"site-a"}))
    failed = entry(job(ev.JobFailed, dataset_id=11, model_id=8, benchmark_id=3))
    assert visible(failed, squatter) is None
    assert visible(failed, Relations("alice"))["event"]["log_tail"] == "patient 4711: boom"  # type: ignore[index]


def test_an_empty_tail_is_not_flagged_and_the_agent_owner_keeps_its_tail() -> None:
    failed = entry(job(ev.JobFailed, log_tail=""))
    assert "log_tail_withheld" not in visible(failed, VIEWERS["mo"])["event"]  # type: ignore[index]
    # A site's agent reports as its owner: that owner reads the tail even before the registry says
    # the site is theirs (the owner of a key-less, dataset-less site).
    carol = entry(job(ev.JobFailed, "site-c"))
    assert visible(carol, Relations("carol"))["event"]["log_tail"] == "patient 4711: boom"  # type: ignore[index]
    assert visible(carol, VIEWERS["mo"])["event"]["log_tail"] == ""  # type: ignore[index]


def test_a_registration_passing_by_adds_the_relation_at_once() -> None:
    alice = Relations("alice")
    new_job = entry(job(ev.JobQueued, actor="agent", dataset_id=11, model_id=6, benchmark_id=2))
    assert visible(new_job, alice) is None
    learnt = alice.learn(entry(dataset(dataset_id=11)))
    assert learnt.datasets == {11} and learnt.sites == {"site-a"}
    assert visible(new_job, learnt) is new_job
    key = entry(ev.SiteKeyRegistered(actor="alice", site="site-k", key_id="k", public_key="p", owner="alice"))
    assert alice.learn(key).sites == {"site-k"}
    model = entry(ev.ModelRegistered(actor="alice", model_id=8, name="m", owner="alice", container_id=3))
    assert alice.learn(model).models == {8}
    assert alice.learn(entry(benchmark(owner="alice", benchmark_id=9))).benchmarks == {9}


def test_only_the_registry_creates_relations() -> None:
    alice = Relations("alice")
    assert alice.learn(entry(dataset(owner="bob"))) is alice  # another's registration
    forged = entry(dataset(site="site-b"), "medperf.site.site-x.dataset.registered")  # a site's forgery
    assert alice.learn(forged) is alice
    assert alice.learn(entry(job(ev.JobQueued))) is alice
    assert ADMIN.learn(entry(dataset(owner="root"))) is ADMIN


def test_relations_from_the_registrys_answer() -> None:
    data = {"benchmarks": [1], "models": [5], "datasets": [10], "containers": [3], "sites": ["site-a"]}
    relations = Relations.of("alice", data)
    assert relations == Relations(
        "alice", False, frozenset({1}), frozenset({5}), frozenset({10}), frozenset({3}), frozenset({"site-a"})
    )
    assert not relations.owns("model", True) and not relations.owns("model", "5") and relations.owns("model", 5)


async def test_a_reader_asks_the_registry_again_once_its_relations_are_old() -> None:
    asked: list[int] = []
    later = Relations("alice", datasets=frozenset({10}))

    async def fetch() -> Relations:
        asked.append(1)
        if len(asked) == 2:
            raise TimeoutError("the registry is busy")
        return later

    fresh = Reader(Relations("alice"), fetch)
    item = entry(job(ev.JobQueued, "site-b"))  # concerns alice only through dataset 10, learnt later
    assert await fresh.admit(item) is None and asked == []  # just read: not asked again
    old = Reader(Relations("alice"), fetch, fetched_at=0.0)  # read long ago
    assert await old.admit(item) is item and asked == [1]
    old.fetched_at = 0.0
    assert await old.admit(item) is item and old.relations is later  # a failed refresh keeps what it knew
    assert await Reader(ADMIN).admit(item) is item
