"""Who may call which endpoint: the one permission table of the HTTP API.

Roles are relations, not flags (as in MedPerf, inventory §1.3): a *benchmark_owner* is the committee
that owns the benchmark named in the path, a *data_owner* owns a dataset associated with it, a
*model_owner* owns a model associated with it, a *user* is authenticated with none of these
relations, and an *admin* is in ``settings.admins`` (or was created as one). A cell reads: "may a
caller holding this role do this to the objects it is related to?" For an entity endpoint the object
is the entity in the path (a container belongs to the model owner that registered it); for an
association endpoint a data owner acts on its dataset's association and everyone else on the model's.

Who enforces what: the ingress refuses anonymous callers everywhere except where ``anonymous`` is
allowed (401), and refuses non-admins on ``admin_only`` endpoints (403) before asking any service.
Every other "no" depends on who owns what, which only the owning service knows: it refuses with
``forbidden`` (403) what the caller can see but may not do, and answers ``not_found`` (404), in the
words it uses for a missing id, on every route naming something the caller may not see (another's
pending benchmark, another's invalidated entity, another's token).
``tests/integration/test_permissions.py`` walks every cell of this table against the real services;
``tests/integration/test_invisible.py`` walks every route with an id in its path for the 404s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["anonymous", "user", "benchmark_owner", "data_owner", "model_owner", "admin"]
ROLES: tuple[Role, ...] = ("anonymous", "user", "benchmark_owner", "data_owner", "model_owner", "admin")

ANYONE: frozenset[Role] = frozenset(ROLES)
AUTHENTICATED: frozenset[Role] = ANYONE - {"anonymous"}
ADMIN: frozenset[Role] = frozenset({"admin"})
PARTIES: frozenset[Role] = frozenset({"benchmark_owner", "data_owner", "model_owner", "admin"})
COMMITTEE: frozenset[Role] = frozenset({"benchmark_owner", "admin"})

ENTITY_PATHS = {"container": "containers", "model": "models", "benchmark": "benchmarks", "dataset": "datasets"}
# The owner role of the entity each entity endpoint acts on (see the module docstring).
ENTITY_OWNER: dict[str, Role] = {
    "container": "model_owner",
    "model": "model_owner",
    "benchmark": "benchmark_owner",
    "dataset": "data_owner",
}


@dataclass(frozen=True)
class Rule:
    method: str
    path: str
    allowed: frozenset[Role]
    why: str
    admin_only: bool = False  # the ingress itself refuses non-admins, before asking a service

    def __post_init__(self) -> None:
        if self.admin_only and self.allowed != ADMIN:
            raise ValueError(f"{self.method} {self.path}: admin_only must allow exactly the admin")

    @property
    def public(self) -> bool:
        return "anonymous" in self.allowed


def _entity_rules() -> list[Rule]:
    rules = []
    for entity, plural in ENTITY_PATHS.items():
        owner = ENTITY_OWNER[entity]
        rules += [
            Rule("POST", f"/{plural}", AUTHENTICATED, f"anyone registers a {entity}, and owns it"),
            Rule("GET", f"/{plural}", AUTHENTICATED, "MedPerf: every logged-in user lists every entity"),
            Rule("GET", f"/me/{plural}", AUTHENTICATED, "the caller's own"),
            Rule(
                "GET",
                f"/{plural}/{{entity_id}}",
                AUTHENTICATED,
                "approved benchmarks and every other entity are visible to all (a pending benchmark only to "
                "its owner and admins: 404 otherwise); a dataset's statistics come back null except to its "
                "owner, the committee of a benchmark it joined, the owner of its preparator and admins",
            ),
            Rule("PATCH", f"/{plural}/{{entity_id}}", frozenset({owner, "admin"}), "MedPerf: PUT by owner or admin"),
            Rule("DELETE", f"/{plural}/{{entity_id}}", ADMIN, "MedPerf: delete is admin only", admin_only=True),
        ]
    return rules


PERMISSIONS: tuple[Rule, ...] = (
    Rule("GET", "/health", ANYONE, "load balancers and people probe it without a token"),
    Rule("GET", "/me", AUTHENTICATED, "who the token belongs to, and whether they are an admin"),
    *_entity_rules(),
    Rule(
        "GET",
        "/benchmarks/{entity_id}/audit",
        COMMITTEE,
        "every decision about the benchmark and its associations; participants_info in MedPerf is "
        "for the owner and admins only",
    ),
    Rule(
        "GET",
        "/datasets/{entity_id}/audit",
        frozenset({"data_owner", "benchmark_owner", "admin"}),
        "the dataset's owner, the committee of a benchmark it asked to join, admins",
    ),
    Rule(
        "GET",
        "/models/{entity_id}/audit",
        frozenset({"model_owner", "benchmark_owner", "admin"}),
        "the model's owner, the committee of a benchmark it asked to join, admins",
    ),
    Rule(
        "POST",
        "/benchmarks/{benchmark_id}/decision",
        ADMIN,
        "MedPerf: approval_status is for admins only",
        admin_only=True,
    ),
    Rule(
        "POST",
        "/benchmarks/{benchmark_id}/associations",
        PARTIES,
        "the benchmark owner or the component's owner (or an admin) asks to join",
    ),
    Rule(
        "GET",
        "/benchmarks/{benchmark_id}/associations",
        PARTIES,
        "MedPerf: a benchmark's model list is for admins, its owner and approved data owners; its dataset "
        "list for admins, its owner and approved model owners",
    ),
    Rule(
        "POST",
        "/benchmarks/{benchmark_id}/associations/{kind}/{component_id}/decision",
        PARTIES,
        "either party decides a pending request (approving needs the party that did not initiate it)",
    ),
    Rule(
        "PUT",
        "/benchmarks/{benchmark_id}/auto-approval/{kind}",
        COMMITTEE,
        "MedPerf: the auto-approval modes and allow lists are the benchmark owner's fields",
    ),
    Rule(
        "PUT",
        "/benchmarks/{benchmark_id}/models/{model_id}/priority",
        COMMITTEE,
        "MedPerf: the benchmark owner sets priorities on BenchmarkModel",
    ),
    Rule(
        "GET",
        "/benchmarks/{benchmark_id}/leaderboard",
        PARTIES,
        "the committee sees all; model and data owners always see their own results (unlike MedPerf) "
        "and, under the default sharing policy (participants), the shared board; a public policy "
        "admits every user (403 otherwise, with who the committee shares with)",
    ),
    Rule(
        "PUT",
        "/benchmarks/{benchmark_id}/sharing-policy",
        COMMITTEE,
        "the committee decides what its benchmark shares, and releases embargoes",
    ),
    Rule(
        "POST",
        "/benchmarks/{benchmark_id}/sharing-policy/preview",
        COMMITTEE,
        "what each audience would see under a policy the committee considers (nothing is saved): the "
        "whole board is in it, so the committee and admins only",
    ),
    Rule(
        "GET",
        "/benchmarks/{benchmark_id}/models/{model_id}/provenance",
        PARTIES,
        "where results came from: the committee, admins and the model's owner see every site's cell, a data "
        "owner its own datasets' (as each always sees its own results on the board); others 403",
    ),
    Rule("GET", "/sites/{site}/keys", AUTHENTICATED, "public keys are public: anyone may check a signature"),
    Rule(
        "POST",
        "/sites/{site}/keys",
        frozenset({"data_owner", "admin"}),
        "the site's owner (owner of its datasets, or of its first key) registers the keys its agent signs with",
    ),
    Rule(
        "POST",
        "/sites/{site}/keys/{key_id}/revocation",
        frozenset({"data_owner", "admin"}),
        "the site's owner or an admin stops trusting a key (lost, leaked, replaced)",
    ),
    Rule(
        "POST",
        "/sites/{site}/held-results/release",
        frozenset({"data_owner"}),
        "the site's owner (its data owner) lets held results leave it: consent is theirs, not an admin's or a "
        "committee's; 404 for a site the caller cannot see, 503 while its agent is offline",
    ),
    Rule(
        "POST",
        "/sites/{site}/jobs/{job_id}/log-release",
        frozenset({"data_owner"}),
        "the site's owner lets a failed job's log tail (it may quote patient data) leave the site",
    ),
    Rule("GET", "/me/associations", AUTHENTICATED, "associations where the caller owns the benchmark or component"),
    Rule("POST", "/users", ADMIN, "admins create users", admin_only=True),
    Rule("POST", "/users/{name}/tokens", ADMIN, "admins issue tokens; the token is shown once", admin_only=True),
    Rule(
        "DELETE",
        "/tokens/{token_id}",
        ADMIN,
        "admins revoke any token; the registry decides whether a holder may revoke their own, so the "
        "ingress does not pre-check (the cell's token belongs to someone else)",
    ),
    Rule("GET", "/app", ANYONE, "the web app's page holds no data; it asks for a token and uses the API"),
    Rule("GET", "/app/assets/{name}", ANYONE, "the web app's script and style: code, no data"),
    Rule("GET", "/app/sign-in", ANYONE, "before signing in, the page asks how: the issuer's address is public"),
    Rule("POST", "/app/sign-in/device", ANYONE, "signing in starts without a token; the issuer decides who gets one"),
    Rule("POST", "/app/sign-in/token", ANYONE, "only the holder of the device code gets its token, from the issuer"),
    *(
        Rule("GET", "/console", ANYONE, "the web console's page holds no data; it asks for a token and uses the API"),
        Rule(
            "GET",
            "/console/events",
            AUTHENTICATED,
            "admins read every event; anyone else only the events about what they own (benchmarks, models, "
            "datasets, sites, their own actions), with log tails only from their own sites; filtered by the "
            "ingress (services/console/visibility.py), so a user owning nothing gets an empty feed",
        ),
        Rule(
            "GET",
            "/console/pending",
            AUTHENTICATED,
            "each caller sees what waits on decisions they can see: pending benchmarks (all for admins, their "
            "own otherwise), associations (all for admins, those involving them otherwise), held results (all "
            "for admins, their own sites' otherwise)",
        ),
        Rule("GET", "/console/sites", ADMIN, "every site's agent and its state: admins only", admin_only=True),
        Rule(
            "GET",
            "/console/jobs",
            AUTHENTICATED,
            "jobs and why they failed (whose fault, the reason): every job for admins; a data owner its sites' "
            "(with log tails), a model owner its models' at every site and a committee its benchmarks' (log "
            "tails stay at the site: they may quote patient data); anyone else an empty list",
        ),
        Rule("GET", "/console/dead-letters", ADMIN, "parked messages carry any payload: admins only", admin_only=True),
        Rule(
            "POST",
            "/console/dead-letters/{sequence}/retry",
            ADMIN,
            "republishing a message is an operator's decision",
            admin_only=True,
        ),
        Rule("DELETE", "/console/dead-letters/{sequence}", ADMIN, "discarding a message for good", admin_only=True),
    ),
)

RULES: dict[tuple[str, str], Rule] = {(r.method, r.path): r for r in PERMISSIONS}
if len(RULES) != len(PERMISSIONS):
    raise ValueError("the permission table lists an endpoint twice")


def rule_for(method: str, path: str) -> Rule:
    """The rule of a route; a route without one is a programming error (build_app checks at start)."""
    return RULES[(method.upper(), path)]
