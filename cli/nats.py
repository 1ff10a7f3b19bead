"""``medperf nats``: the federation operator's credentials for sites and services, and the NATS
server configuration generated from them (shared/nats_config.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.nats_config import CENTRAL, CredentialStore, render_authorization, render_node
from shared.private_files import write_private

DEFAULT_STORE = Path("nats-users.json")


def add_commands(commands: argparse._SubParsersAction) -> None:
    nats = commands.add_parser("nats", help="NATS users of sites and services, and the servers' config (operators)")
    nats.add_argument("--store", type=Path, default=DEFAULT_STORE, help="the credential store (JSON, hashes only)")
    nats.add_argument(
        "--auth-conf",
        type=Path,
        default=Path("auth.conf"),
        help="the authorization file the servers include; rewritten after every change",
    )
    sub = nats.add_subparsers(dest="nats_command", required=True)
    site = sub.add_parser("issue-site", help="credentials for a site's agent (a new password replaces the old)")
    site.add_argument("site", help="the site's MEDPERF_SITE_NAME")
    service = sub.add_parser("issue-service", help="credentials for central service(s) sharing one user")
    service.add_argument("user")
    service.add_argument("services", nargs="+", choices=CENTRAL)
    operator = sub.add_parser("issue-operator", help="an all-powerful user for operators' tools (rebuilds, backups)")
    operator.add_argument("user")
    revoke = sub.add_parser("revoke", help="remove a user; reload the servers to disconnect it")
    revoke.add_argument("user")
    sub.add_parser("ls", help="list the users and their roles")
    node = sub.add_parser("node-config", help="print one cluster node's nats-server config")
    node.add_argument("name")
    node.add_argument("--listen", default="0.0.0.0:4222")
    node.add_argument("--cluster", default="0.0.0.0:6222")
    node.add_argument("--routes", nargs="*", default=[], help="the other nodes, e.g. nats-route://nats-2:6222")
    node.add_argument("--store-dir", default="/data")
    node.add_argument("--monitor", default="0.0.0.0:8222")


def run(args: argparse.Namespace) -> int:
    if args.nats_command == "node-config":
        print(
            render_node(
                args.name,
                client=args.listen,
                store_dir=args.store_dir,
                cluster=args.cluster,
                routes=args.routes,
                monitor=args.monitor,
                include=args.auth_conf.name,
            ),
            end="",
        )
        return 0
    store = CredentialStore(args.store)
    try:
        if args.nats_command == "issue-site":
            issued = store.issue_site(args.site)
        elif args.nats_command == "issue-service":
            issued = store.issue_service(args.user, args.services)
        elif args.nats_command == "issue-operator":
            issued = store.issue_operator(args.user)
        elif args.nats_command == "revoke":
            store.revoke(args.user)
            issued = None
        else:
            for user in sorted(store.users.values(), key=lambda u: u.name):
                print(f"{user.name}\t{user.role}\t{user.site or ','.join(user.services)}")
            return 0
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    write_private(args.auth_conf, render_authorization(store.users.values()))
    reload = f"then reload every server: `nats-server --signal reload` (or SIGHUP) to apply {args.auth_conf}"
    if issued is None:
        print(f"revoked {args.user}; {reload}")
        return 0
    user, password = issued
    # Only the hash is stored: this is the one time anyone sees the password.
    print(f"# credentials for {user} (shown once); {reload}", file=sys.stderr)
    print(f"MEDPERF_NATS_USER={user}")
    print(f"MEDPERF_NATS_PASSWORD={password}")
    return 0
