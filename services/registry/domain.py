"""The registry's rules, free of I/O: what makes a benchmark's parts fit together, how an entity's
life goes (DEVELOPMENT -> OPERATION, never back), what its owner may still change, who may delete
it, and who may see what. Handlers gather the facts (rows, owners, dependants) and ask these
functions; a function that refuses raises ``Refusal`` with a reason the user can act on."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt, StringConstraints, TypeAdapter, ValidationError

from shared.commands import MAX_ID
from shared.containers import ContainerSpec, HostedFile
from shared.events import EntityState, MetricSpec, Statistics, _finite


class Refusal(Exception):
    """A request the rules forbid; ``code`` is an ``Outcome`` refusal code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# --- benchmarks: do the parts fit ---------------------------------------------------------------


def benchmark_problems(
    preparator: ContainerSpec,
    reference_model: ContainerSpec,
    metrics_container: ContainerSpec,
    metrics: list[MetricSpec],
    primary_metric: str,
) -> list[str]:
    """Why these parts cannot form a benchmark (empty when they can)."""
    problems = []
    for field, spec, role in (
        ("data_preparator_id", preparator, "data_preparator"),
        ("reference_model_id", reference_model, "model"),
        ("metrics_container_id", metrics_container, "metrics"),
    ):
        if missing := spec.missing_tasks(role):
            problems.append(f"{field}: the container lacks the task(s) {', '.join(missing)} needed as {role}")
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        problems.append("metrics: each metric name must appear once")
    if primary_metric not in names:
        problems.append(f"primary_metric: {primary_metric!r} is not one of the declared metrics ({', '.join(names)})")
    return problems


def check_dependants_fit(spec: ContainerSpec, uses: Iterable[tuple[str, str]]) -> None:
    """A container's new spec must still serve every role it is used in (``uses``: who, role)."""
    problems = [
        f"{who} uses it as {role} and needs the task(s) {', '.join(missing)}"
        for who, role in uses
        if (missing := spec.missing_tasks(role))
    ]
    if problems:
        raise Refusal("conflict", "spec: " + "; ".join(problems) + "; keep those tasks, or change the users first")


# --- lifecycle ----------------------------------------------------------------------------------


def check_benchmark_operational(parts: Mapping[str, str]) -> None:
    """A benchmark may be OPERATION only when everything it runs is; ``parts``: label -> state."""
    not_ready = [f"{label} is {state}" for label, state in parts.items() if state != "OPERATION"]
    if not_ready:
        raise Refusal(
            "conflict",
            "a benchmark becomes OPERATION only when all its parts are OPERATION, but "
            + "; ".join(not_ready)
            + "; make them OPERATION first",
        )


def check_prepared_hash_free(operational_holders: Collection[int]) -> None:
    """Operational datasets have distinct prepared contents (MedPerf's unique generated_uid);
    ``operational_holders``: the other OPERATION datasets with the same prepared hash."""
    if operational_holders:
        ids = ", ".join(str(i) for i in sorted(operational_holders))
        raise Refusal(
            "conflict",
            f"prepared_hash: operational dataset {ids} already holds these prepared contents; "
            "an OPERATION dataset's prepared data must be unique (use that dataset instead)",
        )


def is_repeated_registration(existing: Mapping[str, Any], owner: str, name: str, site: str) -> bool:
    """A site agent that crashed after registering asks again: it gets the same answer, not a new row
    (the caller has already matched the prepared hash)."""
    return existing["owner"] == owner and existing["name"] == name and existing["site"] == site


# --- edits --------------------------------------------------------------------------------------

#: The fields an owner (or an admin) may change, per entity and per state, after MedPerf's rules.
#: ``<field>.source`` is a hosted file whose URL may move while its sha256 stays pinned.
#: ``state`` in DEVELOPMENT allows the one-way move to OPERATION.
EDITABLE: dict[str, dict[str, frozenset[str]]] = {
    "container": {
        "DEVELOPMENT": frozenset({"state", "name", "spec", "additional_files", "is_valid", "user_metadata"}),
        "OPERATION": frozenset({"is_valid", "user_metadata", "additional_files.source"}),
    },
    "model": {
        "DEVELOPMENT": frozenset({"state", "name", "container_id", "is_valid", "user_metadata"}),
        "OPERATION": frozenset({"is_valid", "user_metadata"}),
    },
    "benchmark": {
        "DEVELOPMENT": frozenset(
            {
                "state",
                "name",
                "description",
                "demo_dataset",
                "data_preparator_id",
                "reference_model_id",
                "metrics_container_id",
                "metrics",
                "primary_metric",
                "is_valid",
                "user_metadata",
            }
        ),
        "OPERATION": frozenset({"is_valid", "user_metadata", "description", "demo_dataset.source"}),
    },
    "dataset": {
        "DEVELOPMENT": frozenset({"state", "name", "statistics", "is_valid", "user_metadata"}),
        "OPERATION": frozenset({"is_valid", "user_metadata"}),
    },
}

#: Identity, ownership, the approvals service's decision and the hashes that pin a dataset's data.
NEVER_EDITABLE = frozenset(
    {
        "id",
        "owner",
        "created_at",
        "modified_at",
        "approval_status",
        "approved_at",
        "site",
        "prepared_hash",
        "input_hash",
        "medperf",  # the documents a container was registered from: a record, not a setting
    }
)

#: Kinds whose names are unique (datasets are named per site, so theirs are not).
UNIQUE_NAMES = frozenset({"container", "model", "benchmark"})
#: Benchmark fields whose change means the parts must be checked again.
BENCHMARK_PARTS = frozenset(
    {"data_preparator_id", "reference_model_id", "metrics_container_id", "metrics", "primary_metric"}
)


_ID = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]

# How each editable field's new value is validated and normalised to its stored JSON form.
_VALUES: dict[str, TypeAdapter[Any]] = {
    "state": TypeAdapter(EntityState),
    "name": TypeAdapter(Annotated[str, StringConstraints(min_length=1, max_length=128)]),
    "description": TypeAdapter(str),
    "is_valid": TypeAdapter(StrictBool),
    "user_metadata": TypeAdapter(dict[str, Any]),
    "spec": TypeAdapter(ContainerSpec),
    "additional_files": TypeAdapter(HostedFile | None),
    "demo_dataset": TypeAdapter(HostedFile),
    "container_id": TypeAdapter(_ID),
    "data_preparator_id": TypeAdapter(_ID),
    "reference_model_id": TypeAdapter(_ID),
    "metrics_container_id": TypeAdapter(_ID),
    "metrics": TypeAdapter(Annotated[list[MetricSpec], Field(min_length=1)]),
    "primary_metric": TypeAdapter(str),
    "statistics": TypeAdapter(Statistics),
}


@dataclass(frozen=True)
class EditPlan:
    """An accepted edit: what ``EntityEdited`` reports and what is written to the row."""

    changes: dict[str, tuple[Any, Any]]  # field -> (old, new), JSON values
    columns: dict[str, Any]  # column -> new stored value

    @property
    def new_state(self) -> str | None:
        return self.changes["state"][1] if "state" in self.changes else None


def editable_fields(kind: str, state: str) -> list[str]:
    return sorted(f.replace(".source", " (its URL)") for f in EDITABLE[kind][state])


def editable_view(kind: str, entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity's fields as an edit sees them: a container's ``additional_files`` (kept inside
    its spec) is a field of its own, because in OPERATION it is the one part of the spec that moves."""
    current = dict(entity)
    if kind == "container":
        current["additional_files"] = (entity.get("spec") or {}).get("additional_files")
    return current


def plan_edit(kind: str, entity: Mapping[str, Any], changes: Mapping[str, Any], actor: str, is_admin: bool) -> EditPlan:
    """Check ``changes`` against who asks, the table and the values; ``entity`` is the row's view."""
    what = f"{kind} {entity['id']}"
    if actor != entity["owner"] and not is_admin:
        raise Refusal("forbidden", f"only the owner of {what} ({entity['owner']}) or an admin may edit it")
    state = entity["state"]
    allowed = EDITABLE[kind][state]
    current = editable_view(kind, entity)
    invalid: list[str] = []
    conflicts: list[str] = []
    new: dict[str, Any] = {}
    anywhere = EDITABLE[kind]["DEVELOPMENT"] | EDITABLE[kind]["OPERATION"]
    for field in sorted(changes):
        if field in NEVER_EDITABLE:
            invalid.append(f"{field}: never changes")
        elif field not in current:
            invalid.append(f"{field}: a {kind} has no such field (editable: {', '.join(editable_fields(kind, state))})")
        elif field not in anywhere and f"{field}.source" not in anywhere:
            invalid.append(f"{field}: fixed when the {kind} was registered")
        elif field == "state" and state == "OPERATION":
            conflicts.append(f"state: {what} is OPERATION; it never goes back to DEVELOPMENT")
        elif field not in allowed and f"{field}.source" not in allowed:
            conflicts.append(
                f"{field}: {what} is OPERATION, so only {', '.join(editable_fields(kind, state))} may change"
            )
        else:
            try:
                value = _VALUES[field].validate_python(changes[field])
                if field == "statistics":
                    value = _finite(value)  # JSON has no NaN: the event could not be read
                new[field] = _VALUES[field].dump_python(value, mode="json")
            except (ValidationError, ValueError) as exc:
                invalid.append(f"{field}: {_first_error(exc)}")
                continue
            if f"{field}.source" in allowed and (frozen := _frozen_hash(field, current[field], new[field], what)):
                conflicts.append(frozen)
    if {"spec", "additional_files"} <= set(changes):
        invalid.append("additional_files: change it inside spec or on its own, not both")
    if invalid:
        raise Refusal("invalid", "; ".join(invalid))
    if conflicts:
        raise Refusal("conflict", "; ".join(conflicts))
    diff = {field: (current[field], value) for field, value in new.items() if value != current[field]}
    if not diff:
        raise Refusal("invalid", f"nothing to change: {', '.join(sorted(new))} equal the current values")
    columns = {field: value for field, (_, value) in diff.items() if field != "additional_files"}
    if "additional_files" in diff:
        columns["spec"] = _spec_with_files(current["spec"], diff["additional_files"][1])
    return EditPlan(changes=diff, columns=columns)


def _frozen_hash(field: str, old: dict | None, new: dict | None, what: str) -> str | None:
    if old is None:
        return f"{field}: {what} is OPERATION and has no {field} whose URL could move"
    if new is None or new["sha256"] != old["sha256"]:
        return (
            f"{field}.sha256: {what} is OPERATION, so its {field} may move to another URL "
            f"but keeps sha256 {old['sha256']}"
        )
    return None


def _spec_with_files(spec: dict[str, Any], files: dict[str, Any] | None) -> dict[str, Any]:
    try:
        merged = ContainerSpec.model_validate({**spec, "additional_files": files})
    except ValidationError as exc:
        raise Refusal("invalid", f"additional_files: {_first_error(exc)}") from exc
    return merged.model_dump(mode="json")


def _first_error(exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        return f"{where}: {error['msg']}" if where else error["msg"]
    return str(exc)


# --- deletion -----------------------------------------------------------------------------------


def check_may_delete(is_admin: bool) -> None:
    """Deletes are hard and admin-only, as in MedPerf; owners retire an entity with is_valid."""
    if not is_admin:
        raise Refusal("forbidden", "only an admin may delete; an owner can set is_valid to false instead")


def check_no_dependants(what: str, dependants: Collection[str]) -> None:
    """Nothing may be left pointing at a deleted row."""
    if dependants:
        raise Refusal("conflict", f"{what} is still used by {', '.join(dependants)}; delete or change those first")


# --- visibility ---------------------------------------------------------------------------------


def may_see_benchmark(approval_status: str, owner: str, actor: str, is_admin: bool) -> bool:
    """A benchmark is visible to everyone once approved; before that, to its owner and admins."""
    return approval_status == "APPROVED" or actor == owner or is_admin


def may_see(owner: str, is_valid: bool, actor: str, is_admin: bool, approval_status: str | None = None) -> bool:
    """An invalidated entity stays readable by its owner and admins only; a benchmark also follows
    ``may_see_benchmark``. (``store.visible`` states the same rule as SQL, for paged lists.)"""
    if actor == owner or is_admin:
        return True
    return is_valid and (approval_status is None or may_see_benchmark(approval_status, owner, actor, is_admin))


def may_see_dataset_statistics(
    dataset_owner: str,
    actor: str,
    is_admin: bool,
    preparator_owner: str | None = None,
    requested_benchmark_owners: Collection[str] = (),
) -> bool:
    """MedPerf shows every dataset's statistics to every user. Here: the data owner, admins, the
    owner of the container that prepared it, and the owners of benchmarks it asked to join."""
    return is_admin or actor in (dataset_owner, preparator_owner) or actor in requested_benchmark_owners


def check_list_filters(kind: str, approval_status: str | None) -> None:
    if approval_status is not None and kind != "benchmark":
        raise Refusal("invalid", f"approval_status: only benchmarks have one; drop it to list {kind}s")


# --- users and tokens ---------------------------------------------------------------------------

TOKEN_PREFIX = "mpf_"


def new_token() -> str:
    # The prefix lets secret scanners and people recognise a leaked MedPerf token.
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Only this is stored; a stolen database does not give working tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_admin(is_admin: bool, action: str) -> None:
    if not is_admin:
        raise Refusal("forbidden", f"only an admin may {action}; ask one")


def check_revoke(token_id: int, token_user: str, revoked_at: datetime | None, actor: str, is_admin: bool) -> None:
    if actor != token_user and not is_admin:
        # Nobody sees another user's tokens: the same answer as for an id that does not exist.
        raise Refusal("not_found", f"no token {token_id}")
    if revoked_at is not None:
        raise Refusal("conflict", f"token {token_id} is already revoked (since {revoked_at.isoformat()})")


# --- site signing keys --------------------------------------------------------------------------


def check_site_key_manager(site: str, site_owners: Collection[str], actor: str, is_admin: bool) -> None:
    """Who may register or revoke a site's keys: an admin, or the site's owner (the owner of its
    datasets, or whoever registered its first key). A site nobody owns yet is claimed by its first key."""
    if is_admin or not site_owners or actor in site_owners:
        return
    owners = ", ".join(sorted(site_owners))
    raise Refusal("forbidden", f"site {site!r} belongs to {owners}; they or an admin manage its keys")


def check_dataset_site(site: str, site_owners: Collection[str], actor: str) -> None:
    """A dataset is registered at its owner's own site: one that has owners belongs to them. Else
    anyone could name a hospital's site in a dataset and become one of its owners (its keys, its
    jobs in the feed); a site's agent registers its datasets as the site's one data owner."""
    if site_owners and actor not in site_owners:
        owners = ", ".join(sorted(site_owners))
        raise Refusal(
            "forbidden",
            f"site: site {site!r} belongs to {owners}; register datasets at your own site "
            "(your agent's MEDPERF_SITE_NAME), or ask them to",
        )


def check_site_owner(site: str, site_owners: Collection[str], actor: str, visible: bool) -> None:
    """Only a site's owner gives its data owner's consent (releasing its held results or log tails):
    not an admin, not a committee. A site the caller cannot see (``visible`` false: none of its
    datasets or keys is theirs to see) answers as a missing one."""
    if not visible:
        raise Refusal("not_found", f"no site {site}")
    if actor not in site_owners:
        owners = ", ".join(sorted(site_owners)) or "nobody yet"
        raise Refusal(
            "forbidden",
            f"site {site!r} belongs to {owners}; only its data owner releases what it holds (their consent: "
            "not an admin's, not a committee's)",
        )


def check_key_registrable(site: str, key_id: str, registered_site: str | None, revoked: bool) -> None:
    """A key serves one site, and a revoked key never comes back (a new one must be generated)."""
    if registered_site is not None and registered_site != site:
        raise Refusal("conflict", f"key {key_id} is registered with site {registered_site!r}; a key serves one site")
    if revoked:
        raise Refusal(
            "conflict",
            f"key {key_id} was revoked and cannot be registered again; generate a new key at the site "
            "(remove its signing key file and restart the agent)",
        )
