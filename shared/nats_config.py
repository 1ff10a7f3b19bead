"""NATS server configuration generated from the federation's vocabulary: one user per site and per
central service, each allowed exactly the subjects its code uses, and the cluster around them.

Why subject permissions are enough here: every event a site publishes carries the site in its
subject (``medperf.site.<site>.…``, ``medperf.heartbeat.<site>``), every durable consumer a site
keeps is named after the site, and JetStream's API subjects name the stream, the consumer and (for
``CONSUMER.CREATE``) the filter subject. So an allow-list of concrete subjects pins down what a
site can publish, which consumers it can create and read, and nothing else: no stream management,
no direct reads of a stream (``STREAM.MSG.GET``, ``DIRECT.GET``), no other site's replies (its
inbox prefix is ``_INBOX.<user>``; see ``shared.broker.connect_options``).

The credentials themselves (bcrypt hashes, never passwords) live in a JSON file that the operator
keeps; ``render_authorization`` turns it into the ``authorization`` block the servers include.
Revoking = removing the user and reloading the servers (``nats-server --signal reload``).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import bcrypt

from shared.commands import (
    Command,
    GetEntity,
    ListAssociations,
    RegisterDataset,
    RegisterSiteKey,
    ReleaseLog,
    ReleaseResults,
    RequestAssociation,
    SiteCommand,
)
from shared.events import AssociationApproved, AssociationRejected, AssociationRequested, BenchmarkApproved, Event
from shared.messaging import durable_name, stream_name_of
from shared.private_files import write_private
from shared.streams import deadletter_subject, heartbeat_subject

#: What a site agent consumes and asks; services/executor/app.py wires exactly these (a unit test
#: compares), so the permissions cannot drift from the code.
SITE_CONSUMES: tuple[type[Event], ...] = (
    BenchmarkApproved,
    AssociationApproved,
    AssociationRejected,
    AssociationRequested,
)
SITE_ASKS: tuple[type[Command], ...] = (
    GetEntity,
    RegisterDataset,
    ListAssociations,
    RequestAssociation,
    RegisterSiteKey,
)
#: What a site agent answers, each on its own site's subject (``medperf.cmd.site.<site>.<name>``):
#: its data owner's consent relayed by the ingress.
SITE_ANSWERS: tuple[type[SiteCommand], ...] = (ReleaseResults, ReleaseLog)

#: The central services and the event subjects each may publish (the streams each one owns).
CENTRAL = ("registry", "approvals", "aggregator", "console", "ingress")
OWNED_SUBJECTS = {
    "registry": "medperf.registry.>",
    "approvals": "medperf.approvals.>",
    "aggregator": "medperf.aggregator.>",
    # An admin retrying a dead letter has the console republish it on its original subject, which
    # may be any stream's: the console is trusted like the admins who steer it.
    "console": "medperf.>",
    # The first answer to each Idempotency-Key (services/ingress/idempotency.py).
    "ingress": "$KV.IDEMPOTENCY.>",
}

Role = Literal["site", "service", "operator"]
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
BCRYPT_COST = 11  # ~0.1 s per connection attempt on this machine: cheap for a client, costly to guess


def site_user(site: str) -> str:
    return f"site-{site}"


def site_permissions(site: str) -> dict[str, dict[str, Any]]:
    """A site publishes only its own events, heartbeat and dead letters; asks only the questions its
    agent asks; reads only through its own durable consumers of the events it needs; and takes only
    its own site's commands, answering each once (``allow_responses``: a reply only to a request it
    received, never to another inbox). A server reload forgets such pending replies: an answer
    lost that way reaches the ingress as a 503, and asking again says what had been done."""
    user = site_user(site)  # also the agent's ServiceHost name, hence its consumers' prefix
    publish = [f"medperf.site.{site}.>", heartbeat_subject(site), deadletter_subject(user)]
    publish += [command.subject() for command in SITE_ASKS]
    for event_type in SITE_CONSUMES:
        stream, durable, subject = (
            stream_name_of(event_type.subscription()),
            durable_name(user, event_type),
            event_type.subscription(),
        )
        publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            # The filter is part of the subject (nats-py names it there when a consumer has a name),
            # so a site cannot create a consumer of its own name on someone else's subjects.
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.{subject}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    subscribe = [f"_INBOX.{user}.>", *(command.subject_at(site) for command in SITE_ANSWERS)]
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": subscribe},
        "allow_responses": {"max": 1},
    }


def service_permissions(services: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Central services are trusted with JetStream's API and every read, but publish events only on
    the streams they own. Replies go to ``_INBOX.>`` by an explicit allow rather than
    ``allow_responses``: the server forgets pending responses on every config reload, and a reload
    (to revoke a site) must not make a service's answer bounce."""
    services = list(services)
    if unknown := set(services) - set(CENTRAL):
        raise ValueError(f"unknown service(s) {', '.join(sorted(unknown))}; expected some of {', '.join(CENTRAL)}")
    publish = ["medperf.cmd.>", "_INBOX.>", "$JS.API.>", "$JS.ACK.>"]
    publish += [OWNED_SUBJECTS[s] for s in services if s in OWNED_SUBJECTS]
    publish += [deadletter_subject(s) for s in services]
    return {"publish": {"allow": publish}, "subscribe": {"allow": [">"]}}


OPERATOR_PERMISSIONS = {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}


@dataclass(frozen=True)
class NatsUser:
    name: str
    role: Role
    password_hash: str
    services: tuple[str, ...] = ()  # role "service": which central services run under this user
    site: str | None = None  # role "site"

    def permissions(self) -> dict[str, dict[str, Any]]:
        if self.role == "site":
            assert self.site is not None
            return site_permissions(self.site)
        if self.role == "service":
            return service_permissions(self.services)
        return OPERATOR_PERMISSIONS


class CredentialStore:
    """The operator's list of NATS users (JSON, hashes only). Each change is saved at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: dict[str, NatsUser] = {}
        if path.exists():
            for raw in json.loads(path.read_text())["users"]:
                user = NatsUser(**{**raw, "services": tuple(raw.get("services", ()))})
                self.users[user.name] = user

    def issue_site(self, site: str) -> tuple[str, str]:
        """A new password for ``site``'s agent (replacing any previous one); returns (user, password)."""
        if not NAME.match(site):
            raise ValueError(f"site name {site!r} must be lowercase letters, digits and dashes (as MEDPERF_SITE_NAME)")
        return site_user(site), self._issue(NatsUser(site_user(site), "site", "", site=site))

    def issue_service(self, name: str, services: Iterable[str]) -> tuple[str, str]:
        services = tuple(services)
        service_permissions(services)  # validates the names
        return name, self._issue(NatsUser(name, "service", "", services=services))

    def issue_operator(self, name: str) -> tuple[str, str]:
        return name, self._issue(NatsUser(name, "operator", ""))

    def revoke(self, name: str) -> None:
        if self.users.pop(name, None) is None:
            raise KeyError(f"no NATS user {name!r}; known: {', '.join(sorted(self.users)) or 'none'}")
        self._save()

    def _issue(self, user: NatsUser) -> str:
        if not NAME.match(user.name):
            raise ValueError(f"user name {user.name!r} must be lowercase letters, digits and dashes")
        password = secrets.token_urlsafe(24)
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST, prefix=b"2a")).decode()
        self.users[user.name] = NatsUser(user.name, user.role, digest, user.services, user.site)
        self._save()
        return password

    def _save(self) -> None:
        raw = [
            {
                "name": u.name,
                "role": u.role,
                "password_hash": u.password_hash,
                "services": list(u.services),
                "site": u.site,
            }
            for u in sorted(self.users.values(), key=lambda u: u.name)
        ]
        # Atomic (a server reloading meanwhile never reads half a file) and never readable by others.
        write_private(self.path, json.dumps({"users": raw}, indent=2) + "\n")


def render_authorization(users: Iterable[NatsUser]) -> str:
    """The ``authorization`` block for nats-server (its config syntax accepts JSON values)."""
    entries = [{"user": u.name, "password": u.password_hash, "permissions": u.permissions()} for u in users]
    return "# Generated by `medperf nats`; edit the credential store, not this file.\n" + (
        f"authorization {{\n  users = {json.dumps(entries, indent=2)}\n}}\n"
    )


def render_node(
    name: str,
    *,
    client: str,
    store_dir: str,
    cluster: str | None = None,
    routes: Iterable[str] = (),
    monitor: str | None = None,
    include: str | None = None,
    cluster_name: str = "medperf",
) -> str:
    """One server's configuration. ``client``/``cluster``/``monitor`` are host:port listen addresses;
    ``routes`` the other nodes' cluster URLs; ``include`` a file with the authorization block."""
    lines = [
        f"server_name: {json.dumps(name)}",
        f"listen: {json.dumps(client)}",
        f"jetstream {{ store_dir: {json.dumps(store_dir)} }}",
    ]
    if monitor:
        lines.append(f"http: {json.dumps(monitor)}")
    if cluster:
        lines.append(
            f"cluster {{ name: {json.dumps(cluster_name)}, listen: {json.dumps(cluster)}, "
            f"routes: {json.dumps(list(routes))} }}"
        )
    if include:
        lines.append(f"include {json.dumps(include)}")  # relative paths resolve from this file's directory
    return "\n".join(lines) + "\n"
