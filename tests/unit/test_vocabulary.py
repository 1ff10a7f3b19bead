"""The shared vocabulary: the container contract, the event envelope and its subjects, and commands."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

import shared.commands as commands
from shared.containers import ROLE_TASKS, ContainerSpec, HostedFile, Mount
from shared.events import (
    EVENTS,
    LOG_TAIL_CHARS,
    AnyEvent,
    AssociationApproved,
    AssociationPriorityChanged,
    AssociationRejected,
    AssociationRequested,
    AutoApprovalChanged,
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    CompatibilityReport,
    CompatibilityTested,
    ContainerRegistered,
    DatasetRegistered,
    EntityDeleted,
    EntityEdited,
    Event,
    FieldChange,
    JobCancelled,
    JobFailed,
    JobLogReleased,
    JobProgress,
    JobQueued,
    JobStarted,
    JobSucceeded,
    MetricSpec,
    ModelRegistered,
    ReportSummary,
    ResultReported,
    SharingPolicy,
    SharingPolicyChanged,
    SiteEvent,
    SiteKeyRegistered,
    SiteKeyRevoked,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    parse_event,
)

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"
DEMO = HostedFile(source="https://example.org/demo.tar.gz", sha256=HEX)


def spec(tasks: dict | None = None, **extra) -> dict:
    tasks = {"infer": {"command": ["infer"]}} if tasks is None else tasks
    return {"image": "demo:1", "image_digest": DIGEST, "tasks": tasks, **extra}


def invalid(model: type, data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value


# --- the container contract --------------------------------------------------------------------


def test_a_full_spec_validates() -> None:
    full = ContainerSpec.model_validate(
        spec(
            {
                "prepare": {
                    "command": ["prepare"],
                    "inputs": {"data_path": {"mount_path": "/in"}, "additional_files": {"mount_path": "/extra"}},
                    "outputs": {"output_path": {"mount_path": "/out"}, "output_labels_path": {"mount_path": "/l"}},
                },
                "evaluate": {
                    "command": ["evaluate"],
                    "inputs": {"predictions": {"mount_path": "/p"}, "labels": {"mount_path": "/l"}},
                    "outputs": {"output_path": {"mount_path": "/results.yaml", "type": "file"}},
                },
            },
            additional_files={"source": "synapse:syn123", "sha256": HEX},
        )
    )
    assert full.tasks["evaluate"].outputs["output_path"].type == "file"
    assert full.additional_files is not None and full.additional_files.source == "synapse:syn123"


@pytest.mark.parametrize(
    ("task", "direction", "key"),
    [
        ("infer", "inputs", "labels_path"),  # a model never sees labels
        ("infer", "outputs", "output_labels_path"),
        ("sanity_check", "outputs", "output_path"),  # nothing is ever mounted there
        ("evaluate", "inputs", "data_path"),
        ("prepare", "inputs", "predictions"),
    ],
)
def test_unknown_mount_key_names_the_task_and_key(task: str, direction: str, key: str) -> None:
    error = invalid(ContainerSpec, spec({task: {"command": ["x"], direction: {key: {"mount_path": "/m"}}}}))
    assert f"tasks.{task}.{direction}.{key}: unknown mount key" in str(error)


def test_unknown_mount_key_lists_what_is_allowed() -> None:
    error = invalid(ContainerSpec, spec({"infer": {"command": ["x"], "inputs": {"labels": {"mount_path": "/m"}}}}))
    assert "allowed here: additional_files, data_path, parameters_file" in str(error)
    error = invalid(ContainerSpec, spec({"sanity_check": {"command": ["x"], "outputs": {"x": {"mount_path": "/m"}}}}))
    assert "allowed here: none" in str(error)


def test_additional_files_mounted_but_not_declared() -> None:
    tasks = {"infer": {"command": ["x"], "inputs": {"additional_files": {"mount_path": "/extra"}}}}
    error = invalid(ContainerSpec, spec(tasks))
    assert "tasks.infer.inputs.additional_files is mounted but the container has no additional_files" in str(error)
    assert ContainerSpec.model_validate(spec(tasks, additional_files=DEMO.model_dump())).additional_files == DEMO


@pytest.mark.parametrize(
    "digest",
    [HEX, f"sha256:{HEX[:-1]}", f"sha256:{HEX.upper()}", f"sha512:{HEX}", f"sha256:{HEX}0", "latest", ""],
)
def test_bad_image_digest(digest: str) -> None:
    error = invalid(ContainerSpec, spec(image_digest=digest))
    assert [e["loc"] for e in error.errors()] == [("image_digest",)]
    assert "docker images --digests" in str(error)


def test_image_digest_with_trailing_newline_is_refused() -> None:
    invalid(ContainerSpec, spec(image_digest=DIGEST + "\n"))


def test_unknown_task_and_empty_command_are_refused() -> None:
    error = invalid(ContainerSpec, spec({"train": {"command": ["x"]}}))
    assert error.errors()[0]["loc"][:2] == ("tasks", "train")
    error = invalid(ContainerSpec, spec({"infer": {"command": []}}))
    assert error.errors()[0]["loc"] == ("tasks", "infer", "command")
    error = invalid(ContainerSpec, spec({}))  # a container with no task at all
    assert [e["loc"] for e in error.errors()] == [("tasks",)]


@pytest.mark.parametrize("path", ["data", "./data", "data/../x", "/data/../../etc", "/..", "/a/.."])
def test_bad_mount_path_names_the_field(path: str) -> None:
    tasks = {"infer": {"command": ["x"], "inputs": {"data_path": {"mount_path": path}}}}
    error = invalid(ContainerSpec, spec(tasks))
    assert [e["loc"] for e in error.errors()] == [("tasks", "infer", "inputs", "data_path", "mount_path")]
    assert "absolute path" in str(error) and "'..'" in str(error)


@pytest.mark.parametrize("path", ["/", "/data", "/mlcommons/volumes/data", "/a..b/c", "/a/.../b"])
def test_good_mount_paths(path: str) -> None:
    assert Mount(mount_path=path).mount_path == path


@pytest.mark.parametrize(
    "sha",
    [HEX[:-1], HEX + "0", "g" * 64, f"md5:{HEX}", f"{HEX}  demo.tar.gz", ""],
)
def test_hosted_file_bad_sha256(sha: str) -> None:
    error = invalid(HostedFile, {"source": DEMO.source, "sha256": sha})
    assert [e["loc"] for e in error.errors()] == [("sha256",)]
    assert "sha256sum" in str(error)


@pytest.mark.parametrize(
    "source",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "example.org/x",
        "synapse:123",
        "synapse:synABC",
        "syn123",
        "https://example.org/with space",
        "direct:synapse:syn1",
        "",
    ],
)
def test_hosted_file_bad_source_scheme(source: str) -> None:
    error = invalid(HostedFile, {"source": source, "sha256": HEX})
    assert [e["loc"] for e in error.errors()] == [("source",)]
    assert "Synapse ID" in str(error)


@pytest.mark.parametrize(
    "source", ["https://example.org/x", "http://127.0.0.1:8000/x", "direct:https://example.org/x", "synapse:syn123"]
)
def test_hosted_file_good_sources(source: str) -> None:
    assert HostedFile(source=source, sha256=HEX).source == source


@pytest.mark.parametrize(("field", "value"), [("source", "https://example.org/x\n"), ("sha256", HEX + "\n")])
def test_hosted_file_refuses_a_trailing_newline(field: str, value: str) -> None:
    invalid(HostedFile, {"source": DEMO.source, "sha256": HEX, field: value})


@pytest.mark.parametrize("sha", [f"sha256:{HEX}", HEX.upper(), f"SHA256:{HEX.upper()}", f"sha256:{HEX.upper()}"])
def test_hosted_file_sha256_is_normalised(sha: str) -> None:
    assert HostedFile(source=DEMO.source, sha256=sha).sha256 == HEX


@pytest.mark.parametrize(
    ("tasks", "role", "missing"),
    [
        (("prepare", "sanity_check", "statistics"), "data_preparator", []),
        (("prepare",), "data_preparator", ["sanity_check", "statistics"]),
        (("infer",), "data_preparator", ["prepare", "sanity_check", "statistics"]),
        (("infer",), "model", []),
        (("evaluate",), "model", ["infer"]),
        (("evaluate",), "metrics", []),
        (("infer", "prepare"), "metrics", ["evaluate"]),
    ],
)
def test_missing_tasks_per_role(tasks: tuple[str, ...], role: str, missing: list[str]) -> None:
    container = ContainerSpec.model_validate(spec({t: {"command": [t]} for t in tasks}))
    assert container.missing_tasks(role) == missing


def test_roles_are_the_three_benchmark_roles() -> None:
    assert set(ROLE_TASKS) == {"data_preparator", "model", "metrics"}


# --- events ------------------------------------------------------------------------------------

CONTAINER_SPEC = ContainerSpec.model_validate(spec())
REPORT = CompatibilityReport(passed=True, metrics={"auc": 0.75}, detail="ran on the demo dataset")


def one_of_each() -> list[Event]:
    common = {"actor": "alice", "correlation_id": uuid4()}
    return [
        ContainerRegistered(**common, container_id=1, name="prep", owner="alice", spec=CONTAINER_SPEC),
        ModelRegistered(**common, model_id=2, name="ref", owner="alice", container_id=1),
        BenchmarkSubmitted(
            **common,
            benchmark_id=3,
            name="bench",
            description="d",
            owner="alice",
            data_preparator_id=1,
            reference_model_id=2,
            metrics_container_id=4,
            demo_dataset=DEMO,
            metrics=[MetricSpec(name="auc"), MetricSpec(name="brier", higher_is_better=False)],
            primary_metric="auc",
        ),
        DatasetRegistered(
            **common,
            dataset_id=5,
            name="train",
            owner="bob",
            site="site-a",
            data_preparator_id=1,
            input_hash="in",
            prepared_hash="out",
            statistics={"cases": 569, "mean_age": 54.5, "label": "binary"},
        ),
        BenchmarkApproved(**common, benchmark_id=3, name="bench", reason="fine"),
        BenchmarkRejected(**common, benchmark_id=3, name="bench", reason="no"),
        AssociationRequested(**common, association_id=6, benchmark_id=3, kind="dataset", component_id=5),
        AssociationRequested(
            **common, association_id=7, benchmark_id=3, kind="model", component_id=2, compatibility=REPORT
        ),
        AssociationApproved(**common, association_id=6, benchmark_id=3, kind="dataset", component_id=5, priority=2),
        AssociationRejected(**common, association_id=7, benchmark_id=3, kind="model", component_id=2, reason="x"),
        ResultReported(
            **common,
            site="site-a",
            benchmark_id=3,
            model_id=2,
            dataset_id=5,
            metrics={"auc": 0.9, "brier": 0.1},
            container_digests={"model": DIGEST},
            dataset_hash="out",
            partial=True,
        ),
        CompatibilityTested(**common, site="site-a", benchmark_id=3, kind="model", component_id=2, report=REPORT),
        SharingPolicyChanged(
            **common, benchmark_id=3, old=SharingPolicy(), new=SharingPolicy(visibility="public", min_sites=3)
        ),
        JobQueued(**common, site="site-a", job_id=4, benchmark_id=3, model_id=2, dataset_id=5, reason="approved"),
        JobStarted(**common, site="site-a", job_id=4, benchmark_id=3, model_id=2, dataset_id=5, attempt=1),
        JobSucceeded(**common, site="site-a", job_id=4, benchmark_id=3, model_id=2, dataset_id=5, held=True),
        JobFailed(
            **common,
            site="site-a",
            job_id=4,
            benchmark_id=3,
            model_id=2,
            failure="infrastructure",
            will_retry=True,
            reason="oom",
            log_tail="...",
        ),
        JobCancelled(**common, site="site-a", job_id=4, kind="compatibility", benchmark_id=3),
        JobLogReleased(**common, site="site-a", job_id=4, benchmark_id=3, model_id=2, log_tail="Traceback: ..."),
        JobProgress(
            **common,
            site="site-a",
            job_id=4,
            kind="prepare",
            benchmark_id=3,
            stage="prepare",
            done=3,
            total=10,
            message="the data preparator runs",
            report=ReportSummary(cases=10, statuses={"1": 3, "DONE": 2}),
        ),
        EntityEdited(
            **common,
            entity="dataset",
            entity_id=5,
            changes={
                "state": FieldChange(old="DEVELOPMENT", new="OPERATION"),
                "user_metadata": FieldChange(old={}, new={"a": 1}),
            },
        ),
        EntityDeleted(**common, entity="container", entity_id=1, reason="duplicate"),
        UserCreated(**common, user="bob", is_admin=False),
        TokenIssued(**common, user="bob", token_id=1, label="laptop"),
        TokenRevoked(**common, user="bob", token_id=1),
        SiteKeyRegistered(**common, site="hospital-a", key_id="0" * 16, public_key="A" * 43 + "=", owner="alice"),
        SiteKeyRevoked(**common, site="hospital-a", key_id="0" * 16, effective_from=datetime.now(UTC), reason="lost"),
        AutoApprovalChanged(**common, benchmark_id=3, kind="model", mode="ALLOWLIST", allowlist=["bob"]),
        AssociationPriorityChanged(**common, benchmark_id=3, model_id=2, old=0, new=5),
    ]


def test_one_of_each_covers_the_union() -> None:
    (union, _) = typing.get_args(AnyEvent)
    assert {type(e) for e in one_of_each()} == set(typing.get_args(union))


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_parse_event_round_trips(event: Event) -> None:
    text = event.model_dump_json()
    for data in (text, text.encode()):
        back = parse_event(data)
        assert type(back) is type(event)
        assert back == event


EXPECTED_SUBJECTS = {
    "container.registered": "medperf.registry.container.registered",
    "model.registered": "medperf.registry.model.registered",
    "benchmark.submitted": "medperf.registry.benchmark.submitted",
    "dataset.registered": "medperf.registry.dataset.registered",
    "benchmark.approved": "medperf.approvals.benchmark.approved",
    "benchmark.rejected": "medperf.approvals.benchmark.rejected",
    "association.requested": "medperf.approvals.association.requested",
    "association.approved": "medperf.approvals.association.approved",
    "association.rejected": "medperf.approvals.association.rejected",
    "result.reported": "medperf.site.site-a.result.reported",
    "compatibility.tested": "medperf.site.site-a.compatibility.tested",
    "job.failed": "medperf.site.site-a.job.failed",
    "job.queued": "medperf.site.site-a.job.queued",
    "sharing_policy.changed": "medperf.aggregator.sharing_policy.changed",
    "job.started": "medperf.site.site-a.job.started",
    "job.succeeded": "medperf.site.site-a.job.succeeded",
    "job.cancelled": "medperf.site.site-a.job.cancelled",
    "job.log_released": "medperf.site.site-a.job.log_released",
    "job.progress": "medperf.site.site-a.job.progress",
    "entity.edited": "medperf.registry.entity.edited",
    "entity.deleted": "medperf.registry.entity.deleted",
    "user.created": "medperf.registry.user.created",
    "token.issued": "medperf.registry.token.issued",
    "token.revoked": "medperf.registry.token.revoked",
    "site_key.registered": "medperf.registry.site_key.registered",
    "site_key.revoked": "medperf.registry.site_key.revoked",
    "auto_approval.changed": "medperf.approvals.auto_approval.changed",
    "association.priority_changed": "medperf.approvals.association.priority_changed",
}


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_subject(event: Event) -> None:
    assert event.subject == EXPECTED_SUBJECTS[event.type]


@pytest.mark.parametrize(
    ("cls", "pattern"),
    [
        (ContainerRegistered, "medperf.registry.container.registered"),
        (BenchmarkSubmitted, "medperf.registry.benchmark.submitted"),
        (BenchmarkApproved, "medperf.approvals.benchmark.approved"),
        (AssociationRequested, "medperf.approvals.association.requested"),
        (ResultReported, "medperf.site.*.result.reported"),
        (CompatibilityTested, "medperf.site.*.compatibility.tested"),
        (JobFailed, "medperf.site.*.job.failed"),
    ],
)
def test_subscription(cls: type[Event], pattern: str) -> None:
    assert cls.subscription() == pattern


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_subscription_matches_the_subject(event: Event) -> None:
    pattern, subject = type(event).subscription().split("."), event.subject.split(".")
    assert len(pattern) == len(subject)
    assert all(p in ("*", s) for p, s in zip(pattern, subject, strict=True))


def test_a_site_event_subject_carries_its_own_site() -> None:
    a = JobFailed(actor="agent", site="site-a", job_id=1, benchmark_id=1, failure="data", reason="r")
    b = a.model_copy(update={"site": "hospital-2"})
    assert b.subject == "medperf.site.hospital-2.job.failed"
    assert a.subject != b.subject


def test_parse_event_rejects_an_unknown_type() -> None:
    data = json.loads(BenchmarkApproved(actor="admin", benchmark_id=1, name="b").model_dump_json())
    data["type"] = "benchmark.deleted"
    with pytest.raises(ValidationError):
        parse_event(json.dumps(data))
    del data["type"]
    with pytest.raises(ValidationError):
        parse_event(json.dumps(data))


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_parse_event_rejects_missing_required_fields(event: Event) -> None:
    data = json.loads(event.model_dump_json())
    required = [name for name, f in type(event).model_fields.items() if f.is_required()]
    assert "actor" in required
    for name in required:
        incomplete = {k: v for k, v in data.items() if k != name}
        with pytest.raises(ValidationError) as caught:
            parse_event(json.dumps(incomplete))
        assert any(e["type"] == "missing" and e["loc"][-1] == name for e in caught.value.errors())


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: e.type)
def test_parse_event_rejects_extra_fields(event: Event) -> None:
    data = json.loads(event.model_dump_json())
    with pytest.raises(ValidationError) as caught:
        parse_event(json.dumps({**data, "surprise": 1}))
    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]


def test_parse_event_rejects_extra_fields_in_nested_parts() -> None:
    event = CompatibilityTested(actor="a", site="site-a", benchmark_id=1, kind="model", component_id=2, report=REPORT)
    data = json.loads(event.model_dump_json())
    data["report"]["cases"] = [1, 2, 3]  # a report carries aggregate metrics only
    with pytest.raises(ValidationError):
        parse_event(json.dumps(data))


def test_parse_event_rejects_garbage_and_empty_actor() -> None:
    with pytest.raises(ValidationError):
        parse_event(b"not json")
    data = json.loads(BenchmarkApproved(actor="admin", benchmark_id=1, name="b").model_dump_json())
    with pytest.raises(ValidationError):
        parse_event(json.dumps({**data, "actor": ""}))


def test_events_are_immutable() -> None:
    event = BenchmarkApproved(actor="admin", benchmark_id=1, name="b")
    with pytest.raises(ValidationError):
        event.benchmark_id = 2  # type: ignore[misc]


def test_every_event_gets_its_own_id() -> None:
    a, b = (BenchmarkApproved(actor="admin", benchmark_id=1, name="b") for _ in range(2))
    assert a.event_id != b.event_id
    assert a.occurred_at.tzinfo is not None


def result(**overrides) -> dict:
    return {
        "actor": "agent",
        "site": "site-a",
        "benchmark_id": 1,
        "model_id": 2,
        "dataset_id": 3,
        "metrics": {"auc": 0.5},
        "container_digests": {},
        "dataset_hash": "h",
        **overrides,
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_result_reported_refuses_non_finite_metrics(bad: float) -> None:
    error = invalid(ResultReported, result(metrics={"auc": 0.5, "dice": bad}))
    assert "metric 'dice'" in str(error) and "finite" in str(error)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_result_reported_refuses_non_finite_metrics_in_json(literal: str) -> None:
    text = json.dumps({"type": "result.reported", **result(metrics={"auc": 0.5})}).replace("0.5", literal)
    assert literal in text
    with pytest.raises(ValidationError, match="finite"):
        parse_event(text)


def test_result_reported_accepts_finite_extremes() -> None:
    assert ResultReported(**result(metrics={"a": 0.0, "b": -1e308, "c": 1e308})).metrics["c"] == 1e308


NON_FINITE_ELSEWHERE = {
    "compatibility.tested": lambda: CompatibilityTested(
        actor="a",
        site="site-a",
        benchmark_id=1,
        kind="model",
        component_id=2,
        report=CompatibilityReport(passed=True, metrics={"auc": float("nan")}),
    ),
    "association.requested": lambda: AssociationRequested(
        actor="a",
        association_id=1,
        benchmark_id=1,
        kind="model",
        component_id=2,
        compatibility=CompatibilityReport(passed=True, metrics={"auc": float("inf")}),
    ),
    "dataset.registered": lambda: DatasetRegistered(
        actor="a",
        dataset_id=1,
        name="n",
        owner="o",
        site="site-a",
        data_preparator_id=1,
        input_hash="i",
        prepared_hash="p",
        statistics={"mean_age": float("nan")},
    ),
}


@pytest.mark.parametrize("build", NON_FINITE_ELSEWHERE.values(), ids=NON_FINITE_ELSEWHERE.keys())
def test_every_event_that_can_be_built_can_be_parsed_back(build) -> None:
    try:
        event = build()
    except ValidationError:
        return  # refusing non-finite values up front is a fix too
    text = event.model_dump_json()
    assert parse_event(text).model_dump_json() == text


@pytest.mark.parametrize("site", ["a", "site-a", "0hospital", "x" * 63, "h-1-2"])
def test_site_name_pattern_accepts(site: str) -> None:
    assert ResultReported(**result(site=site)).site == site


@pytest.mark.parametrize(
    "site", ["", "-site", "Site", "site_a", "site.a", "site*", "site>", "site a", "x" * 64, "ü", "site-a\n"]
)
def test_site_name_pattern_refuses(site: str) -> None:
    error = invalid(ResultReported, result(site=site))
    assert [e["loc"] for e in error.errors()] == [("site",)]


def test_site_event_owner() -> None:
    assert issubclass(ResultReported, SiteEvent) and ResultReported.OWNER == "site"


def test_union_types_are_distinct() -> None:
    types = [cls.model_fields["type"].default for cls in typing.get_args(typing.get_args(AnyEvent)[0])]
    assert len(types) == len(set(types)) == 28
    assert EVENTS.validate_python(one_of_each()[0].model_dump()).type == "container.registered"


# --- commands ----------------------------------------------------------------------------------

COMMAND_SUBJECTS = {
    commands.RegisterContainer: "medperf.cmd.registry.register_container",
    commands.RegisterModel: "medperf.cmd.registry.register_model",
    commands.SubmitBenchmark: "medperf.cmd.registry.submit_benchmark",
    commands.RegisterDataset: "medperf.cmd.registry.register_dataset",
    commands.GetEntity: "medperf.cmd.registry.get",
    commands.ListEntities: "medperf.cmd.registry.list",
    commands.DecideBenchmark: "medperf.cmd.approvals.decide_benchmark",
    commands.RequestAssociation: "medperf.cmd.approvals.request_association",
    commands.DecideAssociation: "medperf.cmd.approvals.decide_association",
    commands.ListAssociations: "medperf.cmd.approvals.list_associations",
    commands.GetLeaderboard: "medperf.cmd.aggregator.leaderboard",
    commands.SetSharingPolicy: "medperf.cmd.aggregator.sharing_policy",
    commands.EditEntity: "medperf.cmd.registry.edit",
    commands.DeleteEntity: "medperf.cmd.registry.delete",
    commands.CreateUser: "medperf.cmd.registry.create_user",
    commands.IssueToken: "medperf.cmd.registry.issue_token",
    commands.RevokeToken: "medperf.cmd.registry.revoke_token",
    commands.Authenticate: "medperf.cmd.registry.authenticate",
    commands.RegisterSiteKey: "medperf.cmd.registry.register_site_key",
    commands.RevokeSiteKey: "medperf.cmd.registry.revoke_site_key",
    commands.ListSiteKeys: "medperf.cmd.registry.site_keys",
    commands.GetRelations: "medperf.cmd.registry.relations",
    commands.PreviewSharingPolicy: "medperf.cmd.aggregator.preview_sharing_policy",
    commands.CheckSiteOwner: "medperf.cmd.registry.site_owner",
    # A site's agent answers these on its own site's subject: medperf.cmd.site.<site>.<name>.
    commands.ReleaseResults: "medperf.cmd.site.*.release_results",
    commands.ReleaseLog: "medperf.cmd.site.*.release_log",
    commands.GetProvenance: "medperf.cmd.aggregator.provenance",
    commands.SetAutoApproval: "medperf.cmd.approvals.set_auto_approval",
    commands.SetPriority: "medperf.cmd.approvals.set_priority",
    commands.AuditTrail: "medperf.cmd.approvals.audit_trail",
    commands.ListSites: "medperf.cmd.console.sites",
    commands.ListJobs: "medperf.cmd.console.jobs",
    commands.ListHeldResults: "medperf.cmd.console.held_results",
    commands.ListDeadLetters: "medperf.cmd.console.dead_letters",
    commands.RetryDeadLetter: "medperf.cmd.console.retry_dead_letter",
    commands.DiscardDeadLetter: "medperf.cmd.console.discard_dead_letter",
}


@pytest.mark.parametrize(("cls", "subject"), COMMAND_SUBJECTS.items(), ids=lambda v: getattr(v, "__name__", ""))
def test_command_subject(cls: type[commands.Command], subject: str) -> None:
    assert cls.subject() == subject


def test_every_command_has_a_subject_of_its_own() -> None:
    defined = {
        obj
        for obj in vars(commands).values()
        if isinstance(obj, type)
        and issubclass(obj, commands.Command)
        and obj not in (commands.Command, commands.SiteCommand)
    }
    assert defined == set(COMMAND_SUBJECTS)
    assert len({cls.subject() for cls in defined}) == len(defined)


def test_a_site_command_is_sent_to_its_own_site() -> None:
    release = commands.ReleaseResults(actor="alice", site="hospital-a", all=True)
    assert release.destination() == "medperf.cmd.site.hospital-a.release_results"
    assert commands.ReleaseLog.subject_at("hospital-b") == "medperf.cmd.site.hospital-b.release_log"
    assert commands.GetLeaderboard(actor="a", benchmark_id=1).destination() == "medperf.cmd.aggregator.leaderboard"
    assert "the site's agent at hospital-a is not answering" in release.not_answering()


@pytest.mark.parametrize(
    "fields",
    [{}, {"all": True, "job_ids": [1]}, {"all": False}, {"job_ids": [0]}, {"job_ids": list(range(1, 502))}],
    ids=["neither", "both", "all-false", "id-0", "too-many"],
)
def test_a_release_names_its_jobs_or_all_within_limits(fields: dict) -> None:
    with pytest.raises(ValidationError):
        commands.ReleaseResults(actor="alice", site="hospital-a", **fields)


def test_commands_refuse_extra_fields_and_empty_actor() -> None:
    with pytest.raises(ValidationError):
        commands.GetLeaderboard(actor="a", benchmark_id=1, surprise=True)
    with pytest.raises(ValidationError):
        commands.GetLeaderboard(actor="", benchmark_id=1)
    assert commands.GetLeaderboard(actor="a", benchmark_id=1).is_admin is False


def test_outcome_constructors() -> None:
    assert commands.Outcome.accepted(7, {"x": 1}).model_dump() == {
        "ok": True,
        "id": 7,
        "data": {"x": 1},
        "reason": None,
        "code": None,
        "next_offset": None,
    }
    assert commands.Outcome.accepted(data=[1, 2], next_offset=2).next_offset == 2
    # A page carries what fits in one answer, and says where the next starts.
    assert commands.Outcome.page([1, 2], offset=10).next_offset is None
    assert commands.Outcome.page([1, 2], offset=10, more=True).next_offset == 12
    large = [{"blob": "x" * 300_000}] * 5
    cut = commands.Outcome.page(large, offset=10)
    assert len(cut.data) == 3 and cut.next_offset == 13
    refused = commands.Outcome.refused("forbidden", "ask an admin")
    assert (refused.ok, refused.code, refused.reason) == (False, "forbidden", "ask an admin")
    with pytest.raises(ValidationError):
        commands.Outcome.refused("nope", "x")  # type: ignore[arg-type]


# --- bounded job fields ------------------------------------------------------------------------

JOB = {"actor": "alice", "site": "site-a", "job_id": 4, "benchmark_id": 3}


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(JobFailed, {"failure": "model", "reason": "exit 1"}), (JobLogReleased, {})],
    ids=["job.failed", "job.log_released"],
)
def test_log_tail_longer_than_the_executor_reads_is_refused(cls: type, extra: dict) -> None:
    assert cls.model_validate({**JOB, **extra, "log_tail": "x" * LOG_TAIL_CHARS}).log_tail
    error = invalid(cls, {**JOB, **extra, "log_tail": "x" * (LOG_TAIL_CHARS + 1)})
    assert [e["loc"] for e in error.errors()] == [("log_tail",)]


def test_the_executor_reads_no_longer_tail_than_an_event_carries(tmp_path) -> None:
    from services.executor.engine import read_tail

    log = tmp_path / "task.log"
    log.write_bytes(("\xff" * 7 + "é" * 3 + "\n").encode("latin-1", errors="replace") * 5000)
    tail = read_tail(log, max_lines=10**6)
    assert len(tail) <= LOG_TAIL_CHARS
    JobFailed.model_validate({**JOB, "failure": "model", "reason": "r", "log_tail": tail})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stage", "x" * 33),
        ("stage", "Prepare!"),
        ("done", -1),
        ("total", -1),
        ("message", "m" * 501),
        ("report", {"cases": -1}),
        ("report", {"cases": 1, "statuses": {str(n): 1 for n in range(17)}}),
        ("report", {"cases": 1, "statuses": {"s" * 33: 1}}),
        ("report", {"cases": 1, "case_ids": ["case-1"]}),
    ],
)
def test_job_progress_is_bounded(field: str, value: object) -> None:
    data = {**JOB, "stage": "hash", field: value}
    error = invalid(JobProgress, data)
    assert error.errors()[0]["loc"][0] == field
