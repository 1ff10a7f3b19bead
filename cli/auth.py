"""``medperf auth login|logout|status|synapse_login``.

Login is OAuth 2.0's device authorization grant (RFC 8628) when the profile names an OpenID Connect
issuer, as MedPerf logs in through Auth0: the CLI shows a code and a URL, the user approves in any
browser, the CLI polls the issuer's token endpoint and stores the access token. Without an issuer,
the user pastes an API token an admin issued (hidden prompt)."""

from __future__ import annotations

import argparse
import getpass
import time
from typing import Any

import httpx

from cli import profiles
from cli.client import Client
from cli.output import UsageError, view, waiting
from cli.verbs import Verbs

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def add_commands(verbs: Verbs) -> None:
    verbs.group("auth", "log in and out of the active profile's federation")
    login = verbs.verb("auth", "login", _login, "log in: device code through the OIDC issuer, or paste a token")
    login.add_argument("--url", help="the federation's URL (stored in the active profile)")
    login.add_argument("--token", help="an API token (prompted, hidden, if omitted and no OIDC issuer)")
    login.add_argument("--profile", help="log in to this profile instead of the active one")
    logout = verbs.verb("auth", "logout", _logout, "forget the active profile's token")
    logout.add_argument("--profile")
    status = verbs.verb("auth", "status", _status, "who the federation says you are")
    status.add_argument("--format", choices=["yaml", "json"], default="yaml")
    synapse = verbs.verb(
        "auth",
        "synapse-login",
        _synapse,
        "store a Synapse personal access token for synapse: assets",
        aliases=["synapse_login"],
    )
    synapse.add_argument("--token", help="personal access token (prompted, hidden, if omitted)")


def _login(args: argparse.Namespace) -> int:
    if args.url:
        profiles.update(args.profile, url=args.url)
    name, profile = profiles.active(name=args.profile)
    if args.token:
        token = args.token
    elif profile.get("oidc_issuer"):
        token = device_login(profile["oidc_issuer"], profile.get("client_id") or "medperf-cli", profile.get("audience"))
    else:
        token = getpass.getpass("API token (from your admin's `medperf admin issue-token`): ").strip()
    if not token:
        raise UsageError("no token given; nothing was stored")
    _, path = profiles.update(name, token=token)
    print(f"logged in to {profile.get('url')} (profile {name}); token stored in {path}")
    return 0


def device_login(issuer: str, client_id: str, audience: str | None, say: Any = print) -> str:
    """The access token the issuer grants once the user approves the device code in a browser."""
    http = httpx.Client(timeout=15.0)
    try:
        try:
            discovery = http.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration").raise_for_status().json()
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot read {issuer}'s OpenID configuration: {exc}") from exc
        device_url = discovery.get("device_authorization_endpoint")
        if not device_url:
            raise UsageError(f"{issuer} offers no device login: paste a token with `medperf auth login --token`")
        request = {"client_id": client_id, "scope": "openid email offline_access"}
        if audience:
            request["audience"] = audience
        started = _form(http, device_url, request)
        if "device_code" not in started:
            raise UsageError(f"{issuer} refused the device login: {_oauth_error(started)}")
        link = started.get("verification_uri_complete") or started["verification_uri"]
        say(f"Open {link} in a browser and confirm the code {started['user_code']}")
        return _poll(http, discovery["token_endpoint"], client_id, started)
    finally:
        http.close()


def _poll(http: httpx.Client, token_url: str, client_id: str, started: dict[str, Any]) -> str:
    interval = float(started.get("interval", 5))
    deadline = time.monotonic() + float(started.get("expires_in", 600))
    grant = {"grant_type": DEVICE_GRANT, "device_code": started["device_code"], "client_id": client_id}
    with waiting("waiting for you to approve in the browser…"):
        while time.monotonic() < deadline:
            answer = _form(http, token_url, grant)
            if "access_token" in answer:
                return str(answer["access_token"])
            error = answer.get("error")
            if error == "slow_down":
                interval += 5  # RFC 8628 3.5: the issuer asks for longer gaps
            elif error != "authorization_pending":
                raise UsageError(f"login failed: {_oauth_error(answer)}; run `medperf auth login` again")
            time.sleep(interval)
    raise UsageError("the code expired before it was approved; run `medperf auth login` again")


def _form(http: httpx.Client, url: str, fields: dict[str, str]) -> dict[str, Any]:
    try:
        answer = http.post(url, data=fields)
        return answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise UsageError(f"the identity provider at {url} did not answer properly: {exc}") from exc


def _oauth_error(answer: dict[str, Any]) -> str:
    return str(answer.get("error_description") or answer.get("error") or answer)


def _logout(args: argparse.Namespace) -> int:
    name, _ = profiles.update(args.profile, token=None)
    print(f"logged out of profile {name}: its token is forgotten (revoke it too: `medperf admin revoke-token ID`)")
    return 0


def _status(args: argparse.Namespace) -> int:
    name, profile = profiles.active()
    client = Client.from_credentials()
    me = client.get("/me")
    shown = {"profile": name, "url": client.url, "user": me["user"], "admin": me["is_admin"]}
    if profile.get("oidc_issuer"):
        shown["oidc_issuer"] = profile["oidc_issuer"]
    view(shown, args.format)
    return 0


def _synapse(args: argparse.Namespace) -> int:
    from services.executor.assets import save_synapse_token
    from shared.settings import Settings

    token = args.token or getpass.getpass("Synapse personal access token: ")
    print(f"saved to {save_synapse_token(token, Settings().state_dir)}")
    return 0
