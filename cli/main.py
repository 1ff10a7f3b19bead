"""``medperf``: run the federation, a site agent or the demo; talk to the federation."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path

from cli import console as console_commands
from cli import nats as nats_commands
from cli import site as site_commands
from cli.client import ApiError, Client, save_credentials
from cli.render import leaderboard_table, provenance_table
from shared.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medperf", description="Federated benchmarking of medical AI over NATS.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the services do")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the whole flow on real data: 3 hospitals x 3 models")
    demo.add_argument("--state-dir", type=Path, default=Path(".medperf/demo"), help="where the demo keeps its state")

    serve = commands.add_parser("serve", help="run central services (all by default) in this process")
    serve.add_argument(
        "services",
        nargs="*",
        default=["registry", "approvals", "aggregator", "console", "ingress"],
        choices=["registry", "approvals", "aggregator", "console", "ingress"],
    )

    commands.add_parser("agent", help="run a site's executor agent (configured by MEDPERF_SITE_* variables)")

    board = commands.add_parser("leaderboard", help="print a benchmark's leaderboard")
    board.add_argument("benchmark_id", type=int)
    board.add_argument("--format", choices=["table", "json", "csv"], default="table", help="csv: every row")
    board.add_argument("--limit", type=int, default=100, help="rows per page (at most 100)")
    board.add_argument("--offset", type=int, default=0, help="rows to skip, in rank order")

    origin = commands.add_parser(
        "provenance", help="where a model's results on a benchmark came from, site by site (signed, approved)"
    )
    origin.add_argument("benchmark_id", type=int)
    origin.add_argument("model_id", type=int)
    origin.add_argument("--format", choices=["table", "json"], default="table")

    auth = commands.add_parser("auth", help="store credentials").add_subparsers(dest="auth", required=True)
    login = auth.add_parser("login", help="store the federation's URL and your API token")
    login.add_argument("--url", required=True)
    login.add_argument("--token", help="API token (prompted, hidden, if omitted)")
    synapse = auth.add_parser("synapse_login", help="store a Synapse personal access token for synapse: assets")
    synapse.add_argument("--token", help="personal access token (prompted, hidden, if omitted)")

    admin = commands.add_parser("admin", help="manage users and API tokens (admins only)").add_subparsers(
        dest="admin_command", required=True
    )
    create_user = admin.add_parser("create-user", help="create a user, who can then be issued tokens")
    create_user.add_argument("name")
    create_user.add_argument("--admin", action="store_true", help="give the user admin rights")
    issue = admin.add_parser("issue-token", help="issue an API token to a user; it is printed once, never again")
    issue.add_argument("user")
    issue.add_argument("--label", default="", help="what the token is for, e.g. the machine it lives on")
    revoke = admin.add_parser("revoke-token", help="revoke a token by its id; it stops working within 2 s")
    revoke.add_argument("token_id", type=int)

    container = commands.add_parser("container", help="containers").add_subparsers(
        dest="container_command", required=True
    )
    register = container.add_parser(
        "register", help="register a container from a JSON spec; hosted files without a sha256 are pinned here"
    )
    register.add_argument("name")
    register.add_argument("--spec", type=Path, required=True, help="the container spec (JSON)")
    register.add_argument("--state", choices=["DEVELOPMENT", "OPERATION"], default="DEVELOPMENT")

    rebuild = commands.add_parser(
        "rebuild-aggregator", help="rebuild the leaderboards' read model from the JetStream history alone"
    )
    rebuild.add_argument("--database-url", required=True, help="an empty database to fill, e.g. sqlite:///rebuilt.db")

    site_commands.add_commands(commands)
    console_commands.add_commands(commands)
    nats_commands.add_commands(commands)

    docs = commands.add_parser("asyncapi", help="print the AsyncAPI document of a service, generated from its code")
    docs.add_argument("service", choices=["registry", "approvals", "aggregator", "console", "executor"])

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return _dispatch(args)
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run_service(main: Coroutine[object, object, None]) -> None:
    # uvloop: the services spend much of their CPU in the event loop and socket I/O, where it is
    # leaner than asyncio's own loop (bench/registry.py).
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from cli.demo import run_demo

        settings = Settings(state_dir=args.state_dir)
        _run_service(run_demo(settings))
        return 0
    if args.command == "serve":
        from cli.stack import Stack

        _run_service(_run_until_signal(Stack(Settings(), services=tuple(args.services))))
        return 0
    if args.command == "agent":
        from cli.stack import Stack
        from services.executor.settings import SiteSettings

        settings = Settings()
        if not settings.nats_url:
            print("error: an agent joins an existing federation: set MEDPERF_NATS_URL", file=sys.stderr)
            return 2
        _run_service(_run_until_signal(Stack(settings, services=(), sites=[SiteSettings()])))  # type: ignore[call-arg]
        return 0
    if args.command == "leaderboard":
        client = Client.from_credentials()
        if args.format == "csv":
            print(client.leaderboard_csv(args.benchmark_id), end="")
        elif args.format == "json":
            print(json.dumps(client.leaderboard(args.benchmark_id, args.limit, args.offset), indent=2))
        else:
            print(leaderboard_table(client.leaderboard(args.benchmark_id, args.limit, args.offset)))
        return 0
    if args.command == "provenance":
        shown = Client.from_credentials().provenance(args.benchmark_id, args.model_id)
        print(json.dumps(shown, indent=2) if args.format == "json" else provenance_table(shown))
        return 0
    if args.command == "auth":
        token = args.token or getpass.getpass("token: ")
        if args.auth == "login":
            print(f"saved to {save_credentials(args.url, token)}")
        else:
            from services.executor.assets import save_synapse_token

            print(f"saved to {save_synapse_token(token, Settings().state_dir)}")
        return 0
    if args.command == "admin":
        return _admin(args, Client.from_credentials())
    if args.command == "container":
        from cli.register import register_container

        print(f"registered container {register_container(Client.from_credentials(), args.name, args.spec, args.state)}")
        return 0
    if args.command == "rebuild-aggregator":
        from services.aggregator.rebuild import rebuild

        settings = Settings()
        if not settings.nats_url:
            print("error: rebuilding reads the federation's history: set MEDPERF_NATS_URL", file=sys.stderr)
            return 2
        applied = asyncio.run(
            rebuild(settings.nats_url, args.database_url, user=settings.nats_user, password=settings.nats_password)
        )
        print(f"applied {applied} events; point the aggregator's MEDPERF_DATABASE_URL at {args.database_url}")
        return 0
    if args.command == "console":
        return console_commands.run(args, Client.from_credentials())
    if args.command in ("job", "result", "site"):
        return site_commands.run(args)
    if args.command == "nats":
        return nats_commands.run(args)
    if args.command == "asyncapi":
        print(json.dumps(_asyncapi(args.service), indent=2))
        return 0
    raise AssertionError(args.command)


def _admin(args: argparse.Namespace, client: Client) -> int:
    if args.admin_command == "create-user":
        created = client.create_user(args.name, admin=args.admin)
        print(f"created user {args.name}{' (admin)' if args.admin else ''} (id {created.get('id')})")
    elif args.admin_command == "issue-token":
        issued = client.issue_token(args.user, label=args.label)
        # The federation stores only the token's hash: this is the one time anyone sees it.
        print(f"token {issued['id']} for {args.user} (shown once; store it now, e.g. `medperf auth login`):")
        print(issued["token"])
    else:
        client.revoke_token(args.token_id)
        print(f"revoked token {args.token_id}; it stops working within 2 seconds")
    return 0


async def _run_until_signal(stack: object) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack:  # type: ignore[attr-defined]
        ingress = getattr(stack, "ingress", None)
        print(f"running; HTTP ingress at {ingress.url}" if ingress else "running", flush=True)
        await stop.wait()


def _asyncapi(service: str) -> dict:
    from faststream.specification import AsyncAPI

    settings = Settings(nats_url="nats://localhost:4222")
    if service == "executor":
        from services.executor.app import create_agent
        from services.executor.settings import SiteSettings

        host = create_agent(settings, SiteSettings(name="example-site", owner="example"))
    else:
        import importlib

        host = importlib.import_module(f"services.{service}.app").create_service(settings)
    return AsyncAPI(host.specification(), title=f"medperf {service}", version="0.1.0").to_specification().to_jsonable()


if __name__ == "__main__":
    sys.exit(main())
