"""How the CLI shows things: ``ls`` as aligned tables (rich), ``view`` as YAML, ``--format json`` on
every read; y/N prompts, a spinner for long waits, and ``UsageError`` for one-line mistakes."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from cli.client import Client


class UsageError(Exception):
    """A mistake the user can fix; main prints the message as one line, no traceback."""


def add_format(parser: argparse.ArgumentParser, default: str = "table") -> None:
    choices = [default, "json"] if default != "json" else ["json"]
    parser.add_argument("--format", choices=choices, default=default, help="json: the API's answer, as is")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Rows as an aligned table on stdout; columns are keys of each row ('a.b' reads a nested key)."""
    from rich.console import Console
    from rich.table import Table

    shown = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        shown.add_column(column.rsplit(".", 1)[-1], overflow="fold")
    for row in rows:
        shown.add_row(*(_cell(_dig(row, c)) for c in columns))
    if not rows:
        print(f"{title}: none" if title else "none")
        return
    if title:
        print(title)  # its own line: as a rich title it wraps to the width of a narrow table
    Console(width=_width(), highlight=False, soft_wrap=False).print(shown)


def view(data: Any, fmt: str = "yaml") -> None:
    """One entity: YAML (readable, diffable) or JSON."""
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False).rstrip())


def listing(
    rows: list[dict[str, Any]], fmt: str, columns: Sequence[str], title: str | None = None, note: str | None = None
) -> int:
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        table(rows, columns, title)
        if note and rows:
            print(note)
    return 0


def confirm(question: str, yes: bool) -> None:
    """Ask y/N when a person is at the terminal; ``-y`` (or no terminal) answers yes."""
    if yes or not sys.stdin.isatty():
        return
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("cancelled; nothing was changed")


@contextlib.contextmanager
def waiting(what: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while ``what`` takes time (only on a terminal); yields a function that
    changes its text."""
    if not sys.stderr.isatty():
        yield lambda _text: None
        return
    from rich.console import Console

    with Console(stderr=True).status(what) as status:
        yield lambda text: status.update(text)


def connect() -> Client:
    """A client for the active profile that shows a spinner while the federation says "retry
    shortly" (a service catching up on events, or restarting)."""
    from cli.client import Client

    spinner: list[Any] = []

    def on_wait(why: str) -> None:
        if not sys.stderr.isatty():
            return
        if not why:  # the wait is over
            if spinner:
                spinner.pop().stop()
            return
        if not spinner:
            from rich.console import Console

            spinner.append(Console(stderr=True).status(""))
            spinner[0].start()
        spinner[0].update(f"waiting: {why}")

    return Client.from_credentials(on_wait=on_wait)


def _dig(row: dict[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _width() -> int:
    import shutil

    # Piped output is read by scripts and tests: wide enough never to wrap (rich assumes 80 columns).
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else 240
