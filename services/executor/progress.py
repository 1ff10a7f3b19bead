"""How far a running task got, free of messaging: what the workflow observes (bytes hashed, a data
preparator's report file), the watcher that samples it while the task runs, and the rate limit that
decides what may leave the site as an event (``services.executor.live`` sends it).

A hashing thread or a container cannot be asked how far it is; they are sampled instead: the
hashing threads leave their latest count in a ``Meter``, the preparator writes its report file, and
``watching`` looks at either every ``every`` seconds while the task runs, and once more at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from shared.events import ReportSummary

log = logging.getLogger("medperf.site.progress")

#: At most one progress event per job this often (seconds), besides one at each stage change and
#: one at the end of a counted stage: a 200 GB hash or a chatty preparator cannot flood the broker.
PROGRESS_SECONDS = 5.0
#: How often a running task is sampled. Samples go to the site's own database (the data owner's
#: ``medperf dataset submit`` shows them) and, rate-limited, out as events.
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class Progress:
    """One observation of a job's progress."""

    stage: str
    done: int | None = None
    total: int | None = None
    message: str = ""
    report: ReportSummary | None = None
    #: The preparator's report's last lines, verbatim. Per-case output: only the site's own database
    #: (and the data owner's terminal) sees them; events carry ``report`` alone.
    lines: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """A counted stage that reached its total."""
        return self.total is not None and self.done is not None and self.done >= self.total


Sink = Callable[[Progress], Awaitable[None]]


class Throttle:
    """Which observations of one job may be published: the first of each stage, the one that ends a
    counted stage, and otherwise one per ``every`` seconds (the rest are dropped, not delayed: a
    later one says more). ``clock`` is injectable so that the rule is tested without waiting."""

    def __init__(self, every: float = PROGRESS_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._stage: str | None = None
        self._sent_at: float | None = None
        self._ended = False

    def allows(self, progress: Progress) -> bool:
        now = self.clock()
        if progress.stage != self._stage:
            self._stage, self._ended = progress.stage, False
        elif progress.finished and not self._ended:
            pass  # the end of a counted stage: a bar that stopped at 97% would mislead
        elif self._sent_at is not None and now - self._sent_at < self.every:
            return False
        self._sent_at = now
        self._ended = self._ended or progress.finished
        return True


class Meter:
    """The latest ``(bytes done, bytes total)`` of a hash, left by its threads (``hashing.Progress``)."""

    def __init__(self) -> None:
        self.latest: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        self.latest = (done, total)  # one assignment: the sampling side never sees half of it

    def sample(self, stage: str) -> Progress | None:
        latest = self.latest
        return None if latest is None else Progress(stage, done=latest[0], total=latest[1])


async def tell(sink: Sink | None, progress: Progress) -> None:
    """Give ``progress`` to ``sink``; progress is a courtesy, so its failure never fails the task."""
    if sink is None:
        return
    try:
        await sink(progress)
    except Exception:  # the database or broker hiccupped; the next sample follows
        log.warning("progress of %s not recorded", progress.stage, exc_info=True)


@contextlib.asynccontextmanager
async def watching(
    sink: Sink | None, sample: Callable[[], Progress | None], every: float = SAMPLE_SECONDS, *, blocking: bool = False
) -> AsyncIterator[None]:
    """While the body runs, ``sample()`` every ``every`` seconds and tell ``sink`` what changed; then
    once more after it. ``blocking``: ``sample`` reads files, so it runs on a thread."""
    if sink is None:
        yield
        return
    last: list[Progress | None] = [None]

    async def look() -> None:
        found = await asyncio.to_thread(sample) if blocking else sample()
        if found is not None and found != last[0]:
            last[0] = found
            await tell(sink, found)

    async def tick() -> None:
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await look()

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    with contextlib.suppress(Exception):  # after a success only: a failed task's end is its failure
        await look()


def stage_teller(
    on_stage: Callable[[str], Awaitable[None]] | None, sink: Sink | None
) -> Callable[[str], Awaitable[None]]:
    """One call that tells a stage's start both to the data owner's stage list and as progress."""

    async def stage(name: str, message: str = "") -> None:
        if on_stage is not None:
            await on_stage(name)
        await tell(sink, Progress(name, message=message))

    return stage
