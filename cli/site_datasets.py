"""``medperf dataset submit|withdraw|check``: the data owner's own datasets, at the site, through the
site agent's database (same ``MEDPERF_SITE_*`` variables as the agent, as ``cli/site.py``). The raw
data never leaves the machine; what would (hashes and statistics) is shown before anything is
registered, and registered only on the data owner's yes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cli.output import UsageError, view, waiting
from cli.verbs import Verbs

if TYPE_CHECKING:
    from rich.console import RenderableType

    from services.executor.settings import SiteSettings
    from services.executor.store import DatasetSubmission, SubmissionProgress
    from shared.db import UnitOfWork

T = TypeVar("T")
POLL = 0.2  # seconds between looks at the agent's progress

#: How the agent's stages read, in the order they happen.
STAGES = {
    "benchmark": "benchmark approved",
    "hash": "hash the raw data",
    "prepare": "prepare (the benchmark's data preparator)",
    "sanity_check": "sanity check",
    "statistics": "statistics",
    "hash_prepared": "hash the prepared data",
    "register": "register the hashes and statistics",
    "compatibility": "compatibility test (the reference model on this data)",
    "request": "ask to join the benchmark",
}


def add_commands(verbs: Verbs) -> None:
    submit = verbs.verb("dataset", "submit", run, "hand a dataset to this site's agent to prepare and register")
    submit.add_argument("--benchmark", "-b", required=True, help="the benchmark to join: its name or id")
    submit.add_argument("--data-path", "-d", required=True, type=Path, help="the raw data (a directory)")
    submit.add_argument("--labels-path", "-l", required=True, type=Path, help="its labels (a directory)")
    submit.add_argument("--name", "-n", required=True, help="the dataset's name")
    submit.add_argument("-y", "--yes", action="store_true", help="register without asking (consent in advance)")
    withdraw = verbs.verb("dataset", "withdraw", run, "stop new jobs for a dataset of this site")
    withdraw.add_argument("dataset", metavar="NAME|ID")
    check = verbs.verb("dataset", "check", run, "hash a prepared dataset again: does it match its registration?")
    check.add_argument("dataset", metavar="NAME|ID")


def run(args: argparse.Namespace) -> int:
    from services.executor.settings import SiteSettings  # not at the top: every command builds the parser

    return asyncio.run(_run(args, SiteSettings()))  # type: ignore[call-arg]


async def _run(args: argparse.Namespace, site: SiteSettings) -> int:
    from services.executor.operations import NotPossible
    from services.executor.store import TABLES, Base
    from shared.db import Database, UnitOfWork

    db = Database(site.database())
    await db.create_all(Base.metadata)

    def uow() -> UnitOfWork:
        return UnitOfWork(db, TABLES)

    try:
        if args.dataset_command == "submit":
            return await _submit(args, site, uow)
        if args.dataset_command == "withdraw":
            return await _withdraw(args, uow)
        return await _check(args, uow)
    except NotPossible as exc:
        raise UsageError(str(exc)) from exc
    finally:
        await db.dispose()


async def _submit(args: argparse.Namespace, site: SiteSettings, uow: Callable[[], UnitOfWork]) -> int:
    from pydantic import ValidationError

    from services.executor import datasets
    from services.executor.settings import LocalDataset

    for what, path in (("--data-path", args.data_path), ("--labels-path", args.labels_path)):
        if not path.is_dir():
            raise UsageError(f"{what} {path}: not a directory on this machine")
    try:
        local = LocalDataset(
            name=args.name,
            benchmark=args.benchmark,
            data_path=args.data_path.resolve(),
            labels_path=args.labels_path.resolve(),
        )
    except ValidationError as exc:
        raise UsageError(f"--name: {exc.errors()[0]['msg']}") from exc
    sub = await datasets.submit(uow(), local, consent=args.yes)
    again = (
        f"medperf dataset submit --benchmark {args.benchmark} --data-path {args.data_path} "
        f"--labels-path {args.labels_path} --name {args.name}"
    )
    print(f"submitted {args.name} for benchmark {args.benchmark} to site {site.name}'s agent")
    progress = _Progress()
    progress.say("waiting for the site's agent")
    try:
        return await _follow(sub.id, site, uow, progress, args.yes, again)
    finally:
        progress.pause()


async def _follow(
    sub_id: int, site: SiteSettings, uow: Callable[[], UnitOfWork], progress: _Progress, yes: bool, again: str
) -> int:
    from services.executor import datasets

    shown_leaving = False
    while True:
        sub = await datasets.submission(uow(), sub_id)
        progress.stages(sub, await datasets.progress(uow(), sub_id))
        if sub.status == "prepared" and sub.consent == "pending":
            progress.pause()
            answer = _consent(sub, site, yes)
            shown_leaving = True
            if answer is None:
                print(f"no terminal to ask for consent; nothing left the site. To decide, run: {again} [-y]")
                return 1
            sub = await datasets.decide(uow(), sub.id, answer)
            if not answer:
                print(f"declined: nothing left the site. To submit it later, run: {again}")
                return 1
        elif sub.status in ("prepared", "registering") and sub.consent == "given" and not shown_leaving:
            progress.pause()
            _show_leaving(sub, site)  # consent given in advance (-y): still shown
            shown_leaving = True
        elif sub.status == "waiting":
            progress.pause()
            print(f"{sub.detail}. Run `{again}` again then to follow it and give your consent")
            return 0
        elif sub.status == "failed":
            progress.pause()
            print(f"error: {sub.detail}", file=sys.stderr)
            print(f"nothing was registered after the failed step; fix the cause, then run: {again}")
            return 1
        elif sub.status == "requested":
            progress.pause()
            print(f"dataset {sub.dataset_id} ({sub.name}) asked to join benchmark {sub.benchmark}: {_said(sub)}")
            return 0
        elif sub.status == "declined":
            progress.pause()
            print(f"declined earlier: nothing left the site. To submit it again, run: {again}")
            return 1
        if sub.detail.startswith("will try again"):
            progress.say(sub.detail)
        await asyncio.sleep(POLL)


class _Progress:
    """One line per finished stage (as it finishes); below them, at a terminal, the running one live:
    a spinner, or a bar of the bytes read while data is hashed, and the last lines of the data
    preparator's report (verbatim: this runs on the site machine, where the report is)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.spinner import Spinner

        self.console = Console(highlight=False, soft_wrap=True)
        self.spinner = Spinner("dots")
        self.text = ""
        self.bar: tuple[int, int] | None = None
        self.lines: tuple[str, ...] = ()
        self.running = False
        self.shown: dict[str, str] = {}
        terminal = self.console.is_terminal  # (Live renders once as it is made: the above first)
        self.live = Live(console=self.console, get_renderable=self._render, transient=True) if terminal else None

    def say(self, text: str) -> None:
        if self.live is None:
            return
        self.text = text
        if not self.running:
            self.live.start()
            self.running = True

    def pause(self) -> None:
        if self.live is not None and self.running:
            self.live.stop()
            self.running = False

    def stages(self, sub: DatasetSubmission, progress: SubmissionProgress | None = None) -> None:
        for stage, state in sub.stages.items():
            label = STAGES.get(stage, stage)
            if state == "running":
                here = progress if progress is not None and progress.stage == stage else None
                self.bar = (here.done or 0, here.total) if here is not None and here.total else None
                self.lines = tuple(here.lines) if here is not None else ()
                self.say(f"{label} ...")
            elif self.shown.get(stage) != state:
                self.shown[stage] = state
                mark = "[green]✓[/green]" if state == "done" else "[red]✗[/red]"
                self.console.print(f"{mark} {label}")

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.filesize import decimal
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        head: RenderableType
        if self.bar is not None:
            done, total = self.bar
            head = Table.grid(padding=(0, 1))
            head.add_row(
                Text(self.text), ProgressBar(total=total, completed=done, width=30), f"{decimal(done)}/{decimal(total)}"
            )
        else:
            self.spinner.update(text=Text(self.text))
            head = self.spinner
        report = [Text(f"  {line}", style="dim", no_wrap=True, overflow="ellipsis") for line in self.lines]
        return Group(head, *report)


def _show_leaving(sub: DatasetSubmission, site: SiteSettings) -> None:
    from shared.events import flatten_statistics

    print("What leaves this site when it is registered (nothing else; the data stays here):")
    leaving: dict[str, Any] = {
        "name": sub.name,
        "site": site.name,
        "data_preparator_id": sub.data_preparator_id,
        "input_hash": sub.input_hash,
        "prepared_hash": sub.prepared_hash,
        # Nested statistics (MedPerf's labels_count: {...}) shown one line each, by dotted name.
        "statistics": flatten_statistics(sub.statistics),
    }
    view(leaving)
    print("Then the compatibility test's outcome (the reference model's metrics on this data) goes with the")
    print(f"request to join benchmark {sub.benchmark}.")


def _consent(sub: DatasetSubmission, site: SiteSettings, yes: bool) -> bool | None:
    """The data owner's answer: yes or no at the terminal; None when nobody is there to ask."""
    _show_leaving(sub, site)
    if yes:
        return True
    if not sys.stdin.isatty():  # consent is never assumed: -y says it in advance
        return None
    answer = input(f"Register {sub.name} and ask to join benchmark {sub.benchmark}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def _said(sub: DatasetSubmission) -> str:
    if sub.association == "APPROVED":
        return "APPROVED; its jobs start as models are approved"
    if sub.association == "PENDING":
        return "PENDING; the benchmark's committee decides (medperf association ls)"
    return sub.association


async def _withdraw(args: argparse.Namespace, uow: Callable[[], UnitOfWork]) -> int:
    """Here, the agent stops new jobs for the dataset; at the federation, its associations are
    rejected as the data owner, with the data owner's own credentials (the site's may not decide)."""
    from services.executor import datasets

    rows = await datasets.registered(uow(), args.dataset)
    asked = await datasets.withdraw(uow(), args.dataset)
    status = 0
    with waiting("waiting for the site's agent to withdraw it"):
        for request in asked:
            found = await _until(lambda r=request: datasets.withdrawal(uow(), r.id), lambda w: w.status != "requested")
            if found.status == "done":
                print(f"withdrew dataset {found.dataset_id} here: no new jobs start for it (running ones finish)")
            else:
                print(f"error: dataset {found.dataset_id}: {found.detail}", file=sys.stderr)
                status = 1
    for row in rows:
        status |= await asyncio.to_thread(_reject, row.benchmark_id, row.dataset_id)
    return status


def _reject(benchmark_id: int, dataset_id: int | None) -> int:
    from cli.client import ApiError
    from cli.output import connect

    by_hand = f"`medperf association reject -b {benchmark_id} -d {dataset_id}`"
    try:
        connect().decide_association(
            benchmark_id, "dataset", dataset_id, approve=False, reason="withdrawn by the data owner"
        )
    except ApiError as exc:
        if exc.status == 409:  # nothing pending or approved to reject
            return 0
        print(f"error: benchmark {benchmark_id} still lists it ({exc.message}); once that is fixed: {by_hand}")
        return 1
    print(f"rejected its association with benchmark {benchmark_id}")
    return 0


async def _check(args: argparse.Namespace, uow: Callable[[], UnitOfWork]) -> int:
    from services.executor import datasets

    with hashing_progress("reading every byte of the prepared data") as progress:
        checks = await datasets.check(uow(), args.dataset, progress)
    status = 0
    for check in checks:
        row = check.dataset
        what = f"dataset {row.dataset_id} ({row.name}, benchmark {row.benchmark_id})"
        if check.matches:
            print(f"{what}: matches what was registered ({row.prepared_hash[:16]}...)")
            continue
        status = 1
        found = f"now {check.found[:16]}..." if check.found else f"{row.prepared_path} is gone"
        found += f"; {check.changes}" if check.changes else ""
        print(
            f"{what}: CHANGED since registration (registered {row.prepared_hash[:16]}..., {found}); jobs on it "
            "fail as the data's fault. Withdraw it and submit it again under a new name"
        )
    return status


async def _until(read: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    while True:
        found = await read()
        if done(found):
            return found
        await asyncio.sleep(POLL)


@contextmanager
def hashing_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar of bytes read (at a terminal; nothing otherwise): hundreds of gigabytes take minutes."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    columns = (f"{label} ", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        # Called from the hashing threads; rich's updates take a lock.
        yield lambda done, total: bar.update(task, completed=done, total=total)
