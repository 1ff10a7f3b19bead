"""The command tree: groups (``medperf benchmark``) and their verbs (``submit``, ``ls``), each verb
bound to the function that runs it (``set_defaults(run=...)``). A module adds a verb to a group,
its own or another's, with one ``verbs.verb(...)`` call."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

Run = Callable[[argparse.Namespace], int]


class Verbs:
    def __init__(self, commands: Any) -> None:
        self.commands = commands
        self._groups: dict[str, Any] = {}

    def group(self, name: str, help: str) -> Any:
        """The subparsers of ``medperf NAME`` (created on first use, shared after)."""
        if name not in self._groups:
            parser = self.commands.add_parser(name, help=help)
            self._groups[name] = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="VERB")
        return self._groups[name]

    def verb(
        self, group: str, name: str, run: Run, help: str, aliases: Iterable[str] = (), group_help: str = ""
    ) -> argparse.ArgumentParser:
        """``medperf GROUP NAME``; ``aliases`` also parse (MedPerf's underscore spellings)."""
        parser = self.group(group, group_help or f"{group}s").add_parser(
            name, help=help, aliases=list(aliases), description=help
        )
        parser.set_defaults(run=run)
        return parser

    def command(self, name: str, run: Run, help: str) -> argparse.ArgumentParser:
        """A top-level command without verbs (``medperf serve``)."""
        parser = self.commands.add_parser(name, help=help, description=help)
        parser.set_defaults(run=run)
        return parser
