"""``medperf admin ...``: the first admin (``bootstrap``, no server needed), then users and tokens
over the API (admins only)."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import Any

from cli import profiles
from cli.client import Client
from cli.verbs import Verbs
from shared.private_files import write_private
from shared.settings import Settings

BOOTSTRAP_FILE = "bootstrap.json"


def add_commands(verbs: Verbs) -> None:
    verbs.group("admin", "the first admin; users and API tokens (admins only)")
    boot = verbs.verb(
        "admin",
        "bootstrap",
        _bootstrap,
        "create the first admin's token before the server runs; `medperf serve` in this directory trusts it",
    )
    boot.add_argument("name", help="the admin's user name")
    boot.add_argument("--state-dir", type=Path, help="the state directory `medperf serve` will use (MEDPERF_STATE_DIR)")
    create = verbs.verb("admin", "create-user", _create_user, "create a user, who can then be issued tokens")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="give the user admin rights")
    issue = verbs.verb("admin", "issue-token", _issue, "issue an API token to a user; printed once, never again")
    issue.add_argument("user")
    issue.add_argument("--label", default="", help="what the token is for, e.g. the machine it lives on")
    revoke = verbs.verb("admin", "revoke-token", _revoke, "revoke a token by its id; it stops working within 2 s")
    revoke.add_argument("token_id", type=int)


def _bootstrap(args: argparse.Namespace) -> int:
    from services.ingress.auth import token_digest

    state_dir = args.state_dir or Settings().state_dir
    token = "mpf_" + secrets.token_urlsafe(32)  # the shape of the tokens the registry issues
    stored = read_bootstrap(state_dir)
    stored["api_token_digests"][token_digest(token)] = args.name
    stored["admins"] = sorted({*stored["admins"], args.name})
    state_dir.mkdir(parents=True, exist_ok=True)
    path = write_private(state_dir / BOOTSTRAP_FILE, json.dumps(stored, indent=2))
    name, _ = profiles.update(None, token=token)
    # Only the digest is kept on the server's side: this is the one time the token is shown.
    print(f"admin {args.name}'s token (shown once; also stored in your CLI profile {name!r}):")
    print(token)
    print(f"`medperf serve` started with MEDPERF_STATE_DIR={state_dir} trusts it ({path}).")
    print("For a server started elsewhere (compose, another machine), set instead:")
    print(f"export MEDPERF_API_TOKEN_DIGESTS='{json.dumps(stored['api_token_digests'])}'")
    print(f"export MEDPERF_ADMINS='{json.dumps(stored['admins'])}'")
    return 0


def read_bootstrap(state_dir: Path) -> dict[str, Any]:
    path = state_dir / BOOTSTRAP_FILE
    stored = json.loads(path.read_text()) if path.exists() else {}
    return {"api_token_digests": dict(stored.get("api_token_digests", {})), "admins": list(stored.get("admins", []))}


def with_bootstrap(settings: Settings) -> Settings:
    """The settings plus the admins `medperf admin bootstrap` wrote into the state directory."""
    stored = read_bootstrap(settings.state_dir)
    return settings.model_copy(
        update={
            "api_token_digests": {**stored["api_token_digests"], **settings.api_token_digests},
            "admins": sorted({*settings.admins, *stored["admins"]}),
        }
    )


def _create_user(args: argparse.Namespace) -> int:
    # Users are known by name (the registry keeps no other id): the next step is their token.
    Client.from_credentials().create_user(args.name, admin=args.admin)
    admin = " (admin)" if args.admin else ""
    print(f"created user {args.name}{admin}; give them a token: medperf admin issue-token {args.name}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    issued = Client.from_credentials().issue_token(args.user, label=args.label)
    # The federation stores only the token's hash: this is the one time anyone sees it.
    print(f"token {issued['id']} for {args.user} (shown once; store it now, e.g. `medperf auth login`):")
    print(issued["token"])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    Client.from_credentials().revoke_token(args.token_id)
    print(f"revoked token {args.token_id}; it stops working within 2 seconds")
    return 0
