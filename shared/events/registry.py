"""Events of the registry: containers, models, benchmarks, datasets, edits, users, tokens and site keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.containers import ContainerSpec, HostedFile
from shared.events.envelope import EntityKind, EntityState, Event, Statistics, _finite

# --- registry ---------------------------------------------------------------------------------


class ContainerRegistered(Event):
    OWNER = "registry"
    type: Literal["container.registered"] = "container.registered"
    container_id: int
    name: str
    owner: str
    spec: ContainerSpec
    state: EntityState = "DEVELOPMENT"


class ModelRegistered(Event):
    OWNER = "registry"
    type: Literal["model.registered"] = "model.registered"
    model_id: int
    name: str
    owner: str
    container_id: int
    state: EntityState = "DEVELOPMENT"


class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # The metrics container's own spelling (MedPerf's are often ``Accuracy``, ``AUC``); a dotted
    # name reaches into nested results (``AUC.pneumonia``).
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    higher_is_better: bool = True
    aggregate: Literal["mean", "weighted_mean", "median", "min"] = Field(
        default="mean",
        description="how one model's values across sites combine: weighted_mean weighs each site by its "
        "dataset's 'cases' (or MedPerf's 'num_cases') statistic (a site that declares neither counts as one "
        "case); min is the worst site",
    )


class BenchmarkSubmitted(Event):
    OWNER = "registry"
    type: Literal["benchmark.submitted"] = "benchmark.submitted"
    benchmark_id: int
    name: str
    description: str
    owner: str
    data_preparator_id: int
    reference_model_id: int
    metrics_container_id: int
    demo_dataset: HostedFile
    metrics: list[MetricSpec]
    primary_metric: str
    state: EntityState = "DEVELOPMENT"


class DatasetRegistered(Event):
    OWNER = "registry"
    type: Literal["dataset.registered"] = "dataset.registered"
    dataset_id: int
    name: str
    owner: str
    site: str
    data_preparator_id: int
    input_hash: str
    prepared_hash: str
    statistics: Statistics
    state: EntityState = "DEVELOPMENT"

    _check_finite = field_validator("statistics")(_finite)


class FieldChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    old: Any
    new: Any


class EntityEdited(Event):
    """An owner (or admin) changed fields of a registered entity; ``changes`` holds old and new values.
    A change of ``state`` (DEVELOPMENT -> OPERATION) or ``is_valid`` is an edit like any other."""

    OWNER = "registry"
    type: Literal["entity.edited"] = "entity.edited"
    entity: EntityKind
    entity_id: int
    changes: dict[str, FieldChange] = Field(min_length=1)


class EntityDeleted(Event):
    """An admin deleted an entity for good (hard delete)."""

    OWNER = "registry"
    type: Literal["entity.deleted"] = "entity.deleted"
    entity: EntityKind
    entity_id: int
    reason: str = ""


class UserCreated(Event):
    OWNER = "registry"
    type: Literal["user.created"] = "user.created"
    user: str
    is_admin: bool = False


class TokenIssued(Event):
    """An admin issued an API token; the event never carries the token, only its id."""

    OWNER = "registry"
    type: Literal["token.issued"] = "token.issued"
    user: str
    token_id: int
    label: str = ""


class TokenRevoked(Event):
    OWNER = "registry"
    type: Literal["token.revoked"] = "token.revoked"
    user: str
    token_id: int


class SiteKeyRegistered(Event):
    """A site's public signing key, registered by the site's owner (or an admin). Results signed
    with it are accepted until it is revoked."""

    OWNER = "registry"
    type: Literal["site_key.registered"] = "site_key.registered"
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    key_id: str
    public_key: str = Field(description="raw Ed25519 public key, base64")
    owner: str = Field(description="the site's owner, who registered it")


class SiteKeyRevoked(Event):
    """A site's key stopped being trusted. Results signed (``occurred_at``) from ``effective_from``
    on are refused; those signed before stay, and their provenance shows the revocation."""

    OWNER = "registry"
    type: Literal["site_key.revoked"] = "site_key.revoked"
    site: str
    key_id: str
    effective_from: datetime = Field(description="the revocation time, or earlier when the key leaked before")
    reason: str = ""
