"""Commands and queries the registry answers: containers, models, benchmarks, datasets, users, tokens
and site keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.commands.base import MAX_ID, Command, Id, SiteName
from shared.containers import ContainerSpec, HostedFile
from shared.events import EntityKind, EntityState, MetricSpec, Statistics, _finite
from shared.limits import check_statistics_size
from shared.medperf_format import MedPerfFormatError, MedPerfSource, to_spec
from shared.timestamps import Timestamp

# --- registry commands ------------------------------------------------------------------------


class RegisterContainer(Command):
    SERVICE, NAME = "registry", "register_container"
    name: str = Field(min_length=1, max_length=128)
    spec: ContainerSpec | None = Field(default=None, description="the canonical spec; or give medperf instead")
    medperf: MedPerfSource | None = Field(
        default=None, description="MedPerf's documents (container_config.yaml or mlcube.yaml, ...), converted here"
    )
    state: EntityState = "DEVELOPMENT"

    @model_validator(mode="after")
    def _one_spec(self) -> RegisterContainer:
        if self.medperf is None:
            if self.spec is None:
                raise ValueError("give spec (the JSON container spec) or medperf (MedPerf's YAML documents)")
            return self
        try:
            converted = to_spec(self.medperf)
        except MedPerfFormatError as exc:
            raise ValueError(f"medperf: {exc}") from exc
        if self.spec is not None and self.spec != converted:
            raise ValueError("spec and medperf describe different containers; give one of them")
        object.__setattr__(self, "spec", converted)  # frozen; filled once, while validating
        return self

    @property
    def container_spec(self) -> ContainerSpec:
        assert self.spec is not None  # the validator fills it
        return self.spec


class RegisterModel(Command):
    SERVICE, NAME = "registry", "register_model"
    name: str = Field(min_length=1, max_length=128)
    container_id: Id
    state: EntityState = "DEVELOPMENT"


class SubmitBenchmark(Command):
    SERVICE, NAME = "registry", "submit_benchmark"
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    data_preparator_id: Id
    reference_model_id: Id
    metrics_container_id: Id
    demo_dataset: HostedFile
    metrics: list[MetricSpec] = Field(min_length=1)
    primary_metric: str
    state: EntityState = "DEVELOPMENT"


class RegisterDataset(Command):
    SERVICE, NAME = "registry", "register_dataset"
    name: str = Field(min_length=1, max_length=128)
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    data_preparator_id: Id
    input_hash: str
    prepared_hash: str
    statistics: Statistics
    state: EntityState = "DEVELOPMENT"

    _check_finite = field_validator("statistics")(_finite)
    _check_size = field_validator("statistics")(check_statistics_size)


class EditEntity(Command):
    """Change fields of an entity; which fields may change depends on the entity and its state
    (see ``services.registry.domain.EDITABLE``). ``state`` moves DEVELOPMENT -> OPERATION only."""

    SERVICE, NAME = "registry", "edit"
    entity: EntityKind
    id: Id
    changes: dict[str, Any] = Field(min_length=1)


class DeleteEntity(Command):
    """Hard delete; admins only."""

    SERVICE, NAME = "registry", "delete"
    entity: EntityKind
    id: Id
    reason: str = ""


class CreateUser(Command):
    """Admins only. A user exists before a token is issued to them."""

    SERVICE, NAME = "registry", "create_user"
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9@._-]{0,127}$")
    admin: bool = False


class IssueToken(Command):
    """Admins only. The token is in the answer once (``data.token``) and stored only as a hash."""

    SERVICE, NAME = "registry", "issue_token"
    user: str
    label: str = Field(default="", max_length=128)


class RevokeToken(Command):
    SERVICE, NAME = "registry", "revoke_token"
    token_id: Id


class RegisterSiteKey(Command):
    """The site's owner (or an admin) registers the public key its agent signs results with.
    A site's owner is whoever registered its datasets or its first key. Registering the same key
    again is accepted (an agent does it at every start)."""

    SERVICE, NAME = "registry", "register_site_key"
    site: SiteName
    public_key: str = Field(min_length=1, max_length=64, description="raw Ed25519 public key, base64")


class RevokeSiteKey(Command):
    """The site's owner or an admin stops trusting a key; ``compromised_since`` also refuses results
    signed from that earlier time on (a leaked key)."""

    SERVICE, NAME = "registry", "revoke_site_key"
    site: SiteName
    key_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)
    compromised_since: Timestamp | None = None


class ListSiteKeys(Command):
    """A site's keys, active and revoked; public keys are public."""

    SERVICE, NAME = "registry", "site_keys"
    site: SiteName


class CheckSiteOwner(Command):
    """Is the caller this site's owner (who registered its datasets or its first key)? Asked by the
    ingress before it passes a data owner's consent on to the site's agent: accepted with the
    owners; ``forbidden`` for anyone else, admins included (consent is the data owner's);
    ``not_found`` for a site the caller cannot see (none of its datasets or keys is visible to them)."""

    SERVICE, NAME = "registry", "site_owner"
    site: SiteName


# --- registry queries -------------------------------------------------------------------------


class Authenticate(Command):
    """Asked by the ingress with ``actor='ingress'``: who holds the token with this sha256?
    Answers ``data = {"user": ..., "is_admin": ...}`` or refuses ``unauthenticated``."""

    SERVICE, NAME = "registry", "authenticate"
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class GetEntity(Command):
    """One entity by id; containers, models and benchmarks also by their unique name."""

    SERVICE, NAME = "registry", "get"
    entity: EntityKind
    id: Id | None = None
    name: str | None = None


class ListEntities(Command):
    """A page of entities, newest last; ``mine`` keeps the caller's own."""

    SERVICE, NAME = "registry", "list"
    entity: EntityKind
    mine: bool = False
    owner: str | None = None
    state: EntityState | None = None
    is_valid: bool | None = True
    approval_status: Literal["PENDING", "APPROVED", "REJECTED"] | None = None  # benchmarks only
    name_contains: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class GetRelations(Command):
    """What the caller owns: the ids of their benchmarks, models, datasets and containers, and the
    sites they own (those of their datasets and keys, as for ``RegisterSiteKey``). The live feed
    shows a non-admin the events about these. Answers ``data = {"benchmarks": [...], ...}``."""

    SERVICE, NAME = "registry", "relations"
