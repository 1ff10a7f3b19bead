"""Queries and commands the console answers: sites, jobs, held results and dead letters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.commands.base import Command, Id

# --- console queries and commands ---------------------------------------------------------------


class ListSites(Command):
    """Admins only: every site agent heard of, its last heartbeat, its jobs, and whether it went silent."""

    SERVICE, NAME = "console", "sites"


class ListJobs(Command):
    """Jobs as the sites reported them, newest first, with why each failure happened: every job for
    admins; for others those of their sites, their models and their benchmarks, with log tails
    (which may quote patient data) only from their own sites."""

    SERVICE, NAME = "console", "jobs"
    site: str | None = Field(default=None, max_length=63)
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    benchmark_id: Id | None = None
    model_id: Id | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ListHeldResults(Command):
    """Results a site holds for its data owner to release: all for admins, a site owner's own otherwise."""

    SERVICE, NAME = "console", "held_results"


class ListDeadLetters(Command):
    """Admins only: the messages consumers gave up on, oldest first, with the reason."""

    SERVICE, NAME = "console", "dead_letters"
    limit: int = Field(default=100, ge=1, le=1000)


class RetryDeadLetter(Command):
    """Admins only: publish the parked message to its original subject again, then forget the letter.
    Safe: consumers that handled it already skip it by its event id."""

    SERVICE, NAME = "console", "retry_dead_letter"
    sequence: Id


class DiscardDeadLetter(Command):
    """Admins only: forget a parked message for good."""

    SERVICE, NAME = "console", "discard_dead_letter"
    sequence: Id
