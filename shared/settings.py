"""Settings shared by every process, read from ``MEDPERF_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.limits import Limits

#: OpenID Connect's standard claims that an issuer may not have checked, and the claim saying it did.
VERIFIED_BY_DEFAULT = {"email": "email_verified", "phone_number": "phone_number_verified"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDPERF_", extra="ignore")

    nats_url: str | None = Field(
        default=None,
        description="NATS server URL, or several separated by commas (every node of a cluster, so a client "
        "fails over); empty means: start an embedded nats-server with JetStream",
    )
    nats_user: str | None = Field(default=None, description="this process's NATS user (see `medperf nats`)")
    nats_password: str | None = Field(default=None, description="the NATS user's password")
    nats_replicas: int = Field(
        default=1, ge=1, le=5, description="copies JetStream keeps of each stream: 3 on a three-node cluster"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL shared by the services (each owns its own tables); "
        "empty means one SQLite file per service under the state directory",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="what a SQLite COMMIT waits for: FULL, the disk (an acknowledged write survives a power cut); "
        "NORMAL, the OS (it survives a crash of the process only)",
    )
    state_dir: Path = Field(
        default=Path(".medperf"), description="where databases, caches and the embedded broker live"
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    api_token_digests: dict[str, str] = Field(
        default_factory=dict, description="sha256 hex of each API token -> the user it authenticates"
    )
    admins: list[str] = Field(default_factory=list, description="users with admin rights")
    auto_approve_benchmarks_from: list[str] = Field(
        default_factory=list, description="users whose benchmarks are approved without an admin deciding"
    )
    oidc_issuer: str | None = Field(default=None, description="accept JWTs from this OpenID Connect issuer")
    oidc_audience: str | None = None
    oidc_client_id: str = Field(
        default="medperf-web", max_length=200, description="the OAuth client the web app signs in as (device grant)"
    )
    oidc_jwks_url: str | None = Field(default=None, description="default: <issuer>/.well-known/jwks.json")
    oidc_user_claim: str = Field(default="email", description="the JWT claim that names the user")
    oidc_verified_claim: str | None = Field(
        default=None,
        description="a claim that must be true for the user claim to count; default: email_verified for "
        "the email claim (phone_number_verified for phone_number), none for others such as sub; empty: none",
    )
    oidc_jwks_deadline: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="seconds a call to the issuer (its keys, a step of a web sign-in) may take in all",
    )
    oidc_jwks_max_age: float = Field(
        default=300.0, gt=0, description="seconds after which the cached keys are refreshed (in the background)"
    )
    request_timeout: float = Field(default=10.0, description="seconds to wait for a service to answer a command")
    max_deliveries: int = Field(default=5, description="attempts at handling an event before it is dead-lettered")
    limits: Limits = Field(default_factory=Limits, description="every input's limit (MEDPERF_LIMIT_*)")
    idempotency_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="how long the ingress keeps the first answer to each Idempotency-Key (a POST sent again "
        "with the same key within it gets that answer)",
    )

    def oidc_required_claim(self) -> str | None:
        """The claim that must be true for ``oidc_user_claim`` to count (None: no condition)."""
        if self.oidc_verified_claim is not None:
            return self.oidc_verified_claim or None
        return VERIFIED_BY_DEFAULT.get(self.oidc_user_claim)

    def database_url_for(self, service: str) -> str:
        if self.database_url:
            return self.database_url
        path = (self.state_dir / f"{service}.db").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
