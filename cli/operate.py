"""Running the federation: ``serve``, ``agent``, ``demo``, ``rebuild-aggregator``, ``asyncapi``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING

from cli.output import UsageError
from cli.verbs import Verbs
from shared.settings import Settings

if TYPE_CHECKING:
    from cli.stack import Stack

SERVICES = ("registry", "approvals", "aggregator", "console", "ingress")


def add_commands(verbs: Verbs) -> None:
    demo = verbs.command("demo", _demo, "run the whole flow on real data: 3 hospitals x 3 models")
    demo.add_argument("--state-dir", type=Path, default=Path(".medperf/demo"), help="where the demo keeps its state")
    serve = verbs.command("serve", _serve, "run the central services (all by default) and the HTTP ingress")
    # No argparse `choices` here: with nargs="*" Python 3.11 checks the empty list against them and
    # refuses `medperf serve` with no argument. Checked in _serve instead.
    serve.add_argument("services", nargs="*", metavar="SERVICE", help=f"some of: {', '.join(SERVICES)} (default all)")
    verbs.command("agent", _agent, "run a site's executor agent (configured by MEDPERF_SITE_* variables)")
    rebuild = verbs.command(
        "rebuild-aggregator", _rebuild, "rebuild the leaderboards' read model from the JetStream history alone"
    )
    rebuild.add_argument("--database-url", required=True, help="an empty database to fill, e.g. sqlite:///rebuilt.db")
    docs = verbs.command("asyncapi", _asyncapi, "print the AsyncAPI document of a service, generated from its code")
    docs.add_argument("service", choices=["registry", "approvals", "aggregator", "console", "executor"])


def run_service(main: Coroutine[object, object, None]) -> None:
    # uvloop: the services spend much of their CPU in the event loop and socket I/O, where it is
    # leaner than asyncio's own loop (bench/registry.py).
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    run_service(run_demo(Settings(state_dir=args.state_dir)))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cli.admin import with_bootstrap
    from cli.stack import Stack

    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        raise UsageError(f"no service {', '.join(unknown)}: choose from {', '.join(SERVICES)}")
    stack = Stack(with_bootstrap(Settings()), services=tuple(args.services or SERVICES))
    run_service(_until_signal(stack))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from cli.stack import Stack
    from services.executor.settings import SiteSettings

    settings = Settings()
    if not settings.nats_url:
        raise UsageError("an agent joins an existing federation: set MEDPERF_NATS_URL (`medperf serve` prints it)")
    run_service(_until_signal(Stack(settings, services=(), sites=[SiteSettings()])))  # type: ignore[call-arg]
    return 0


async def _until_signal(stack: Stack) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with stack:
        if stack.ingress:
            print(f"running; HTTP ingress at {stack.ingress.url}")
            print(f"  people and the CLI: medperf profile set --url {stack.ingress.url}")
        else:
            print("running")
        if stack.services:
            # The embedded nats-server's URL when none was configured: agents must be told it.
            print("  site agents join with:")
            print(f"MEDPERF_NATS_URL={stack.settings.nats_url}", flush=True)
        await stop.wait()


def _rebuild(args: argparse.Namespace) -> int:
    from services.aggregator.rebuild import rebuild

    settings = Settings()
    if not settings.nats_url:
        raise UsageError("rebuilding reads the federation's history: set MEDPERF_NATS_URL")
    applied = asyncio.run(
        rebuild(settings.nats_url, args.database_url, user=settings.nats_user, password=settings.nats_password)
    )
    print(f"applied {applied} events; point the aggregator's MEDPERF_DATABASE_URL at {args.database_url}")
    return 0


def _asyncapi(args: argparse.Namespace) -> int:
    from faststream.specification import AsyncAPI

    settings = Settings(nats_url="nats://localhost:4222")
    if args.service == "executor":
        from services.executor.app import create_agent
        from services.executor.settings import SiteSettings

        host = create_agent(settings, SiteSettings(name="example-site", owner="example"))
    else:
        import importlib

        host = importlib.import_module(f"services.{args.service}.app").create_service(settings)
    document = AsyncAPI(host.specification(), title=f"medperf {args.service}", version="0.1.0")
    print(json.dumps(document.to_specification().to_jsonable(), indent=2))
    return 0
