"""``medperf profile ...``: several federations and identities, one active. They live in
``<config dir>/profiles.json`` (0600: it holds tokens); ``MEDPERF_URL`` and ``MEDPERF_TOKEN``
override the active profile's, and ``MEDPERF_CONFIG_DIR`` moves the directory."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cli.output import UsageError, listing, view
from cli.verbs import Verbs
from shared.private_files import write_private

DEFAULT_URL = "http://127.0.0.1:8080"  # where `medperf serve` listens by default
FIELDS = ("url", "token", "oidc_issuer", "client_id", "audience")
NOT_LOGGED_IN = "not logged in: run `medperf auth login` (or set MEDPERF_URL and MEDPERF_TOKEN)"


def config_dir() -> Path:
    return Path(os.environ.get("MEDPERF_CONFIG_DIR") or Path.home() / ".medperf_config")


def _file() -> Path:
    return config_dir() / "profiles.json"


def load() -> dict[str, Any]:
    """``{"active": NAME, "profiles": {NAME: {url, token, ...}}}``; a first run has one profile,
    ``default``, pointing at a local ``medperf serve``."""
    path = _file()
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON ({exc}); fix or remove it") from exc
        if isinstance(stored, dict) and isinstance(stored.get("profiles"), dict) and stored["profiles"]:
            return stored
    legacy = config_dir() / "credentials.json"  # what `auth login` wrote before profiles existed
    first = json.loads(legacy.read_text()) if legacy.exists() else {}
    return {"active": "default", "profiles": {"default": {"url": DEFAULT_URL, **first}}}


def save(store: dict[str, Any]) -> Path:
    config_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    # 0600 even over a file that was world-readable before: the tokens are the user's identity.
    return write_private(_file(), json.dumps(store, indent=2))


def active(store: dict[str, Any] | None = None, name: str | None = None) -> tuple[str, dict[str, Any]]:
    store = store or load()
    name = name or os.environ.get("MEDPERF_PROFILE") or store["active"]
    if name not in store["profiles"]:
        raise UsageError(f"no profile {name!r}: `medperf profile ls` lists them, `medperf profile create` adds one")
    return name, store["profiles"][name]


def update(name: str | None, **changes: Any) -> tuple[str, Path]:
    """Change fields of a profile (None removes one); returns its name and the file."""
    store = load()
    name, profile = active(store, name)
    for key, value in changes.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    return name, save(store)


def server_url() -> str:
    return os.environ.get("MEDPERF_URL") or active()[1].get("url") or DEFAULT_URL


def credentials() -> tuple[str, str]:
    url = server_url()
    token = os.environ.get("MEDPERF_TOKEN") or active()[1].get("token")
    if not token:
        raise UsageError(NOT_LOGGED_IN)
    return url, token


def add_commands(verbs: Verbs) -> None:
    help = "the federations you talk to, and who you are in each"
    listed = verbs.verb("profile", "ls", _ls, "list profiles; * marks the active one", group_help=help)
    listed.add_argument("--format", choices=["table", "json"], default="table")
    create = verbs.verb("profile", "create", _create, "add a profile (a federation's URL, how you log in)")
    create.add_argument("name")
    _profile_options(create)
    create.add_argument("--activate", action="store_true", help="make it the active profile")
    verbs.verb("profile", "activate", _activate, "use this profile from now on").add_argument("name")
    change = verbs.verb("profile", "set", _set, "change fields of a profile (the active one by default)")
    change.add_argument("--profile", dest="name", help="another profile than the active one")
    _profile_options(change)
    shown = verbs.verb("profile", "view", _view, "a profile's settings (the token masked)")
    shown.add_argument("name", nargs="?")
    shown.add_argument("--format", choices=["yaml", "json"], default="yaml")


def _profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the federation's HTTP ingress (default {DEFAULT_URL})")
    parser.add_argument("--oidc-issuer", help="log in through this OpenID Connect issuer (device code)")
    parser.add_argument("--client-id", help="the CLI's OAuth client id at the issuer")
    parser.add_argument("--audience", help="the API audience to ask the issuer for")


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("url", "oidc_issuer", "client_id", "audience") if getattr(args, k)}


def _ls(args: argparse.Namespace) -> int:
    store = load()
    rows = [
        {"": "*" if name == store["active"] else "", "name": name, **_masked(p)}
        for name, p in store["profiles"].items()
    ]
    return listing(rows, args.format, ["", "name", "url", "token", "oidc_issuer"])


def _create(args: argparse.Namespace) -> int:
    store = load()
    if args.name in store["profiles"] and _file().exists():
        raise UsageError(f"profile {args.name!r} exists: change it with `medperf profile set --profile {args.name}`")
    store["profiles"][args.name] = {"url": DEFAULT_URL, **_changes(args)}
    if args.activate:
        store["active"] = args.name
    path = save(store)
    print(f"created profile {args.name}{' (active)' if args.activate else ''} in {path}")
    return 0


def _activate(args: argparse.Namespace) -> int:
    store = load()
    active(store, args.name)
    store["active"] = args.name
    save(store)
    print(f"active profile: {args.name} ({store['profiles'][args.name].get('url')})")
    return 0


def _set(args: argparse.Namespace) -> int:
    changes = _changes(args)
    if not changes:
        raise UsageError("nothing to change: give --url, --oidc-issuer, --client-id or --audience")
    name, _ = update(args.name, **changes)
    print(f"profile {name}: set {', '.join(changes)}")
    return 0


def _view(args: argparse.Namespace) -> int:
    name, profile = active(name=args.name)
    shown = {"name": name, **_masked(profile)}
    overridden = [v for v in ("MEDPERF_URL", "MEDPERF_TOKEN") if os.environ.get(v)]
    if overridden:
        shown["overridden_by_environment"] = overridden
    view(shown, args.format)
    return 0


def _masked(profile: dict[str, Any]) -> dict[str, Any]:
    token = profile.get("token")
    return {**profile, "token": f"{token[:8]}… (stored)" if token else None}
