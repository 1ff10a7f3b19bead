"""The registry's pure rules: what makes a benchmark's parts fit, what an owner may edit in which
state (the EDITABLE table, walked field by field), the lifecycle, and who may see what."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from services.registry.domain import (
    EDITABLE,
    NEVER_EDITABLE,
    Refusal,
    benchmark_problems,
    check_admin,
    check_benchmark_operational,
    check_dataset_site,
    check_dependants_fit,
    check_list_filters,
    check_may_delete,
    check_no_dependants,
    check_prepared_hash_free,
    check_revoke,
    check_site_owner,
    editable_view,
    is_repeated_registration,
    may_see,
    may_see_benchmark,
    may_see_dataset_statistics,
    new_token,
    plan_edit,
    token_digest,
)
from shared.containers import ContainerSpec
from shared.events import MetricSpec

DIGEST = "sha256:" + "0" * 64


def spec(*tasks: str) -> ContainerSpec:
    return ContainerSpec(image="demo:1", image_digest=DIGEST, tasks={t: {"command": ["run", t]} for t in tasks})


PREPARATOR = spec("prepare", "sanity_check", "statistics")
MODEL = spec("infer")
METRICS_CONTAINER = spec("evaluate")
METRICS = [MetricSpec(name="auc"), MetricSpec(name="brier", higher_is_better=False)]


def problems(
    preparator: ContainerSpec = PREPARATOR,
    reference_model: ContainerSpec = MODEL,
    metrics_container: ContainerSpec = METRICS_CONTAINER,
    metrics: list[MetricSpec] = METRICS,
    primary: str = "auc",
) -> list[str]:
    return benchmark_problems(preparator, reference_model, metrics_container, metrics, primary)


def test_fitting_parts_have_no_problems() -> None:
    assert problems() == []


def test_one_container_may_serve_every_role() -> None:
    everything = spec("prepare", "sanity_check", "statistics", "infer", "evaluate")
    assert problems(everything, everything, everything) == []


@pytest.mark.parametrize(
    ("argument", "container", "expected"),
    [
        (
            "preparator",
            spec("prepare"),
            "data_preparator_id: the container lacks the task(s) sanity_check, statistics needed as data_preparator",
        ),
        (
            "preparator",
            spec("prepare", "statistics"),
            "data_preparator_id: the container lacks the task(s) sanity_check needed as data_preparator",
        ),
        (
            "reference_model",
            spec("evaluate"),
            "reference_model_id: the container lacks the task(s) infer needed as model",
        ),
        (
            "metrics_container",
            spec("infer"),
            "metrics_container_id: the container lacks the task(s) evaluate needed as metrics",
        ),
    ],
)
def test_missing_tasks_name_the_field_and_the_task(argument: str, container: ContainerSpec, expected: str) -> None:
    assert problems(**{argument: container}) == [expected]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(MODEL, METRICS_CONTAINER, PREPARATOR, [MetricSpec(name="auc"), MetricSpec(name="auc")], "dice")
    assert [p.split(":")[0] for p in found] == [
        "data_preparator_id",
        "reference_model_id",
        "metrics_container_id",
        "metrics",
        "primary_metric",
    ]


def test_duplicate_metric_names_are_a_problem() -> None:
    duplicated = [MetricSpec(name="auc"), MetricSpec(name="auc", higher_is_better=False)]
    assert problems(metrics=duplicated) == ["metrics: each metric name must appear once"]


def test_primary_metric_must_be_declared() -> None:
    assert problems(primary="dice") == ["primary_metric: 'dice' is not one of the declared metrics (auc, brier)"]


def test_a_lower_is_better_metric_may_be_primary() -> None:
    assert problems(primary="brier") == []


@pytest.mark.parametrize(
    ("status", "actor", "is_admin", "visible"),
    [
        ("APPROVED", "stranger", False, True),
        ("APPROVED", "owner", False, True),
        ("PENDING", "owner", False, True),
        ("PENDING", "stranger", True, True),
        ("PENDING", "stranger", False, False),
        ("REJECTED", "owner", False, True),
        ("REJECTED", "stranger", True, True),
        ("REJECTED", "stranger", False, False),
    ],
)
def test_may_see_benchmark(status: str, actor: str, is_admin: bool, visible: bool) -> None:
    assert may_see_benchmark(status, "owner", actor, is_admin) is visible


@pytest.mark.parametrize(
    ("actor", "is_admin", "visible"),
    [("owner", False, True), ("owner", True, True), ("stranger", True, True), ("stranger", False, False)],
)
def test_may_see_dataset_statistics(actor: str, is_admin: bool, visible: bool) -> None:
    assert may_see_dataset_statistics("owner", actor, is_admin) is visible


# --- the EDITABLE table, walked -----------------------------------------------------------------

FILES = {"source": "https://example.org/files.tar.gz", "sha256": "a" * 64}
CONTAINER_SPEC = ContainerSpec(
    image="demo:1",
    image_digest=DIGEST,
    tasks={"infer": {"command": ["infer"], "inputs": {"additional_files": {"mount_path": "/files"}}}},
    additional_files=FILES,
).model_dump(mode="json")
COMMON = {
    "id": 7,
    "owner": "owner",
    "created_at": "2025-01-01T00:00:00+00:00",
    "modified_at": "2025-01-01T00:00:00+00:00",
    "is_valid": True,
    "user_metadata": {},
}
ENTITY_FIELDS: dict[str, dict[str, Any]] = {
    "container": {"name": "prep", "spec": CONTAINER_SPEC},
    "model": {"name": "ref", "container_id": 1},
    "benchmark": {
        "name": "bench",
        "description": "old",
        "data_preparator_id": 1,
        "reference_model_id": 2,
        "metrics_container_id": 3,
        "demo_dataset": {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64},
        "metrics": [
            {"name": "auc", "higher_is_better": True, "aggregate": "mean"},
            {"name": "brier", "higher_is_better": False, "aggregate": "median"},
        ],
        "primary_metric": "auc",
        "approval_status": "APPROVED",
        "approved_at": "2025-01-02T00:00:00+00:00",
    },
    "dataset": {
        "name": "hospital-a",
        "site": "hospital-a",
        "data_preparator_id": 1,
        "input_hash": "c" * 64,
        "prepared_hash": "d" * 64,
        "statistics": {"cases": 10},
    },
}


def entity(kind: str, state: str) -> dict[str, Any]:
    return {**COMMON, **ENTITY_FIELDS[kind], "state": state}


def new_value(kind: str, field: str, current: dict[str, Any]) -> Any:
    """A value different from the current one, valid wherever the field is editable."""
    hosted = {"additional_files": FILES, "demo_dataset": ENTITY_FIELDS["benchmark"]["demo_dataset"]}
    special: dict[str, Any] = {
        "state": "OPERATION" if current["state"] == "DEVELOPMENT" else "DEVELOPMENT",
        "name": current.get("name", "") + "-2",
        "description": "new",
        "is_valid": not current["is_valid"],
        "user_metadata": {"note": "x"},
        "spec": {**CONTAINER_SPEC, "image": "demo:2"},
        "metrics": [
            *ENTITY_FIELDS["benchmark"]["metrics"],
            {"name": "dice", "higher_is_better": True, "aggregate": "weighted_mean"},
        ],
        "primary_metric": "brier",
        "statistics": {"cases": 11, "mean_age": 61.5},
        "approval_status": "REJECTED",
        "site": "elsewhere",
        "owner": "mallory",
        "colour": "red",
    }
    if field in hosted:  # the URL moves, the hash stays: allowed wherever the field is editable
        return {"source": "https://mirror.example.org/moved.tar.gz", "sha256": hosted[field]["sha256"]}
    if field in special:
        return special[field]
    if field.endswith("_id") or field == "id":
        return 42
    if field.endswith("_hash"):
        return "e" * 64
    if field.endswith("_at"):
        return "2030-01-01T00:00:00+00:00"
    raise AssertionError(f"no sample value for {field}")


def editable(kind: str, state: str, field: str) -> bool:
    return field in EDITABLE[kind][state] or f"{field}.source" in EDITABLE[kind][state]


WALK = [
    (kind, state, field)
    for kind in ENTITY_FIELDS
    for state in ("DEVELOPMENT", "OPERATION")
    for field in sorted({*editable_view(kind, entity(kind, state)), "colour"})
]


def test_the_walk_covers_every_field_of_the_table() -> None:
    named = {(k, s, f) for k, s, f in WALK}
    for kind, states in EDITABLE.items():
        for state, fields in states.items():
            for field in fields:
                assert (kind, state, field.removesuffix(".source")) in named


def test_no_field_is_both_editable_and_never_editable() -> None:
    for states in EDITABLE.values():
        for fields in states.values():
            assert not {f.removesuffix(".source") for f in fields} & NEVER_EDITABLE


@pytest.mark.parametrize(("kind", "state", "field"), WALK)
def test_editable_table(kind: str, state: str, field: str) -> None:
    current = entity(kind, state)
    value = new_value(kind, field, current)
    if editable(kind, state, field):
        plan = plan_edit(kind, current, {field: value}, "owner", False)
        assert plan.changes == {field: (editable_view(kind, current)[field], value)}
        if field == "additional_files":  # kept inside the spec
            assert plan.columns == {"spec": {**current["spec"], "additional_files": value}}
        else:
            assert plan.columns == {field: value}
    else:
        with pytest.raises(Refusal) as refused:
            plan_edit(kind, current, {field: value}, "owner", False)
        anywhere = editable(kind, "DEVELOPMENT", field) or editable(kind, "OPERATION", field)
        # Fixed for good: the request is wrong. Frozen by the state: it conflicts with the entity now.
        assert refused.value.code == ("conflict" if anywhere else "invalid"), refused.value.reason
        assert refused.value.reason.startswith(field)
        if refused.value.code == "conflict":
            assert "is OPERATION" in refused.value.reason


@pytest.mark.parametrize(("kind", "state", "field"), WALK)
def test_an_admin_edits_what_the_owner_may(kind: str, state: str, field: str) -> None:
    current = entity(kind, state)
    if editable(kind, state, field):
        assert plan_edit(kind, current, {field: new_value(kind, field, current)}, "admin", True).changes


@pytest.mark.parametrize("kind", sorted(ENTITY_FIELDS))
def test_only_the_owner_or_an_admin_edits(kind: str) -> None:
    with pytest.raises(Refusal) as refused:
        plan_edit(kind, entity(kind, "DEVELOPMENT"), {"is_valid": False}, "stranger", False)
    assert refused.value.code == "forbidden"
    assert "(owner)" in refused.value.reason


@pytest.mark.parametrize(("kind", "field"), [("benchmark", "demo_dataset"), ("container", "additional_files")])
def test_an_operational_hosted_file_moves_but_keeps_its_hash(kind: str, field: str) -> None:
    moved = {"source": "https://mirror.example.org/x.tar.gz", "sha256": "f" * 64}
    with pytest.raises(Refusal) as refused:
        plan_edit(kind, entity(kind, "OPERATION"), {field: moved}, "owner", False)
    assert refused.value.code == "conflict"
    assert refused.value.reason.startswith(f"{field}.sha256: {kind} 7 is OPERATION")
    # In development the file may be replaced altogether.
    plan = plan_edit(kind, entity(kind, "DEVELOPMENT"), {field: moved}, "owner", False)
    assert plan.changes[field][1] == moved


def test_moving_a_container_file_rewrites_its_spec() -> None:
    moved = {"source": "synapse:syn123", "sha256": "A" * 64}
    plan = plan_edit("container", entity("container", "OPERATION"), {"additional_files": moved}, "owner", False)
    assert plan.changes == {"additional_files": (FILES, {"source": "synapse:syn123", "sha256": "a" * 64})}
    assert plan.columns == {"spec": {**CONTAINER_SPEC, "additional_files": plan.changes["additional_files"][1]}}


def test_an_operational_container_without_files_has_no_url_to_move() -> None:
    bare = {**entity("container", "OPERATION"), "spec": spec("infer").model_dump(mode="json")}
    with pytest.raises(Refusal, match="has no additional_files") as refused:
        plan_edit("container", bare, {"additional_files": FILES}, "owner", False)
    assert refused.value.code == "conflict"


def test_dropping_files_a_task_mounts_is_invalid() -> None:
    with pytest.raises(Refusal, match="additional_files") as refused:
        plan_edit("container", entity("container", "DEVELOPMENT"), {"additional_files": None}, "owner", False)
    assert refused.value.code == "invalid"


def test_spec_and_additional_files_are_not_changed_together() -> None:
    changes = {"spec": new_value("container", "spec", entity("container", "DEVELOPMENT")), "additional_files": None}
    with pytest.raises(Refusal, match="not both"):
        plan_edit("container", entity("container", "DEVELOPMENT"), changes, "owner", False)


def test_an_edit_that_changes_nothing_is_invalid() -> None:
    with pytest.raises(Refusal, match="nothing to change: is_valid, name equal") as refused:
        plan_edit("model", entity("model", "DEVELOPMENT"), {"name": "ref", "is_valid": True}, "owner", False)
    assert refused.value.code == "invalid"


def test_only_the_changed_fields_are_reported() -> None:
    plan = plan_edit("model", entity("model", "DEVELOPMENT"), {"name": "ref", "is_valid": False}, "owner", False)
    assert plan.changes == {"is_valid": (True, False)}


def test_state_never_goes_back() -> None:
    with pytest.raises(Refusal) as refused:
        plan_edit("dataset", entity("dataset", "OPERATION"), {"state": "DEVELOPMENT"}, "owner", True)
    assert (refused.value.code, refused.value.reason) == (
        "conflict",
        "state: dataset 7 is OPERATION; it never goes back to DEVELOPMENT",
    )


def test_the_move_to_operation_is_reported() -> None:
    plan = plan_edit("dataset", entity("dataset", "DEVELOPMENT"), {"state": "OPERATION"}, "owner", False)
    assert plan.new_state == "OPERATION"
    assert plan.changes == {"state": ("DEVELOPMENT", "OPERATION")}


@pytest.mark.parametrize(
    ("kind", "changes", "fragment"),
    [
        ("model", {"is_valid": "yes"}, "is_valid: Input should be a valid boolean"),
        ("model", {"name": ""}, "name: String should have at least 1 character"),
        ("model", {"container_id": "3"}, "container_id: Input should be a valid integer"),
        ("model", {"container_id": 2**64}, "container_id: Input should be less than or equal to"),
        ("model", {"state": "RETIRED"}, "state: Input should be 'DEVELOPMENT' or 'OPERATION'"),
        ("container", {"spec": {"image": "x"}}, "spec: "),
        ("benchmark", {"metrics": []}, "metrics: List should have at least 1 item"),
        ("benchmark", {"demo_dataset": {"source": "ftp://x", "sha256": "a" * 64}}, "demo_dataset: source: "),
        ("dataset", {"statistics": {"mean": float("nan")}}, "statistics: metric 'mean' is nan"),
        ("dataset", {"user_metadata": ["not", "an", "object"]}, "user_metadata: Input should be a valid dictionary"),
    ],
)
def test_new_values_are_validated(kind: str, changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(Refusal) as refused:
        plan_edit(kind, entity(kind, "DEVELOPMENT"), changes, "owner", False)
    assert refused.value.code == "invalid"
    assert fragment in refused.value.reason


def test_every_problem_of_an_edit_is_reported_at_once() -> None:
    changes = {"owner": "mallory", "colour": "red", "is_valid": "maybe"}
    with pytest.raises(Refusal) as refused:
        plan_edit("model", entity("model", "OPERATION"), changes, "owner", False)
    assert [p.split(":")[0] for p in refused.value.reason.split("; ")] == ["colour", "is_valid", "owner"]


# --- lifecycle, dependants, deletion --------------------------------------------------------------


def test_a_benchmark_is_operational_only_with_operational_parts() -> None:
    check_benchmark_operational({"data preparator container 1 (prep)": "OPERATION", "reference model 2": "OPERATION"})
    with pytest.raises(Refusal) as refused:
        check_benchmark_operational(
            {
                "data preparator container 1 (prep)": "DEVELOPMENT",
                "reference model 2": "OPERATION",
                "metrics 3": "DEVELOPMENT",
            }
        )
    assert refused.value.code == "conflict"
    assert "data preparator container 1 (prep) is DEVELOPMENT; metrics 3 is DEVELOPMENT" in refused.value.reason
    assert "reference model 2" not in refused.value.reason


def test_operational_datasets_have_unique_prepared_contents() -> None:
    check_prepared_hash_free([])
    with pytest.raises(Refusal, match="operational dataset 3, 5 already holds") as refused:
        check_prepared_hash_free([5, 3])
    assert refused.value.code == "conflict"


def test_a_repeated_registration_is_recognised() -> None:
    existing = {"owner": "site-a", "name": "ds", "site": "hospital-a"}
    assert is_repeated_registration(existing, "site-a", "ds", "hospital-a")
    assert not is_repeated_registration(existing, "site-b", "ds", "hospital-a")
    assert not is_repeated_registration(existing, "site-a", "other", "hospital-a")


def test_a_new_spec_must_serve_its_users() -> None:
    check_dependants_fit(spec("infer"), [("model 1 (m)", "model")])
    with pytest.raises(Refusal) as refused:
        check_dependants_fit(spec("infer"), [("model 1 (m)", "model"), ("benchmark 2 (b)", "metrics")])
    assert refused.value.code == "conflict"
    assert "benchmark 2 (b) uses it as metrics and needs the task(s) evaluate" in refused.value.reason


def test_only_admins_delete_and_nothing_may_dangle() -> None:
    check_may_delete(True)
    with pytest.raises(Refusal) as refused:
        check_may_delete(False)
    assert refused.value.code == "forbidden"
    check_no_dependants("container 1", [])
    with pytest.raises(Refusal, match="container 1 is still used by model 2 \\(m\\), benchmark 3 \\(b\\)"):
        check_no_dependants("container 1", ["model 2 (m)", "benchmark 3 (b)"])


# --- visibility, lists ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("is_valid", "status", "actor", "is_admin", "visible"),
    [
        (True, None, "stranger", False, True),
        (False, None, "stranger", False, False),
        (False, None, "owner", False, True),
        (False, None, "stranger", True, True),
        (True, "APPROVED", "stranger", False, True),
        (False, "APPROVED", "stranger", False, False),
        (True, "PENDING", "stranger", False, False),
        (False, "PENDING", "owner", False, True),
    ],
)
def test_may_see(is_valid: bool, status: str | None, actor: str, is_admin: bool, visible: bool) -> None:
    assert may_see("owner", is_valid, actor, is_admin, status) is visible


@pytest.mark.parametrize(
    ("actor", "visible"),
    [("owner", True), ("prep-owner", True), ("committee", True), ("other-committee", False), ("stranger", False)],
)
def test_statistics_are_shared_with_the_preparator_and_the_benchmarks_asked(actor: str, visible: bool) -> None:
    assert may_see_dataset_statistics("owner", actor, False, "prep-owner", {"committee"}) is visible


def test_approval_status_filters_only_benchmarks() -> None:
    check_list_filters("benchmark", "APPROVED")
    check_list_filters("model", None)
    with pytest.raises(Refusal, match="only benchmarks have one") as refused:
        check_list_filters("model", "APPROVED")
    assert refused.value.code == "invalid"


# --- users and tokens -------------------------------------------------------------------------------


def test_tokens_are_prefixed_random_and_stored_as_sha256() -> None:
    token, other = new_token(), new_token()
    assert token.startswith("mpf_") and len(token) > 40 and token != other
    assert token_digest(token) == hashlib.sha256(token.encode()).hexdigest()


def test_only_admins_administer_users() -> None:
    check_admin(True, "create users")
    with pytest.raises(Refusal, match="only an admin may create users") as refused:
        check_admin(False, "create users")
    assert refused.value.code == "forbidden"


@pytest.mark.parametrize(
    ("actor", "is_admin", "revoked", "code"),
    [
        ("alice", False, False, None),
        ("bob", True, False, None),
        ("bob", False, False, "not_found"),  # someone else's token: as if there were none
        ("bob", False, True, "not_found"),
        ("alice", False, True, "conflict"),
    ],
)
def test_who_revokes_a_token(actor: str, is_admin: bool, revoked: bool, code: str | None) -> None:
    revoked_at = datetime(2025, 1, 1, tzinfo=UTC) if revoked else None
    if code is None:
        check_revoke(3, "alice", revoked_at, actor, is_admin)
        return
    with pytest.raises(Refusal) as refused:
        check_revoke(3, "alice", revoked_at, actor, is_admin)
    assert refused.value.code == code


def test_only_a_sites_owner_gives_its_consent_and_a_hidden_site_is_missing() -> None:
    check_site_owner("site-a", {"alice"}, "alice", visible=True)
    for actor in ("admin", "committee", "bob"):  # an admin is not the data owner either
        with pytest.raises(Refusal) as refused:
            check_site_owner("site-a", {"alice"}, actor, visible=True)
        assert refused.value.code == "forbidden" and "belongs to alice" in refused.value.reason
    with pytest.raises(Refusal) as missing:
        check_site_owner("site-a", {"alice"}, "bob", visible=False)
    assert (missing.value.code, missing.value.reason) == ("not_found", "no site site-a")


def test_a_dataset_is_registered_at_its_owners_own_site() -> None:
    check_dataset_site("site-a", set(), "anyone")  # a new site: its first dataset claims it
    check_dataset_site("site-a", {"hospital-a"}, "hospital-a")
    with pytest.raises(Refusal) as refused:
        check_dataset_site("site-a", {"hospital-a"}, "mallory")
    assert refused.value.code == "forbidden" and "belongs to hospital-a" in refused.value.reason
