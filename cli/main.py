"""``medperf``: run the federation, a site agent or the demo; talk to the federation.

Each module adds its commands to the tree (``add_commands(verbs)``) and binds each verb to the
function that runs it; main parses, runs, and turns every mistake into one line on stderr."""

from __future__ import annotations

import argparse
import logging
import sys

import httpx

from cli import admin, auth, benchmarks, entities, operate, profiles, site_datasets, testing
from cli import console as console_commands
from cli import nats as nats_commands
from cli import site as site_commands
from cli.client import ApiError, Client, Unreachable
from cli.output import UsageError
from cli.verbs import Verbs

#: The modules that add verbs, in the order `medperf --help` lists their groups.
MODULES = (operate, profiles, auth, admin, benchmarks, entities, testing, site_commands, site_datasets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medperf", description="Federated benchmarking of medical AI over NATS.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the services do")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbs = Verbs(commands)
    for module in MODULES:
        module.add_commands(verbs)
    console_commands.add_commands(commands)
    commands.choices["console"].set_defaults(run=lambda args: console_commands.run(args, Client.from_credentials()))
    nats_commands.add_commands(commands)
    commands.choices["nats"].set_defaults(run=nats_commands.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.run(args)
    except ApiError as exc:
        return _error(f"{exc.status}: {exc.message}" + _hint(exc.status))
    except Unreachable as exc:
        return _error(f"{exc}; is `medperf serve` running there? check `medperf profile view`")
    except httpx.HTTPError as exc:
        return _error(f"{exc}; check `medperf profile view`")
    except UsageError as exc:
        return _error(str(exc))
    except OSError as exc:  # a missing or unreadable file named on the command line
        return _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return 130


def _hint(status: int) -> str:
    if status == 401:
        return " (log in again: `medperf auth login`)"
    return ""


def _error(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
