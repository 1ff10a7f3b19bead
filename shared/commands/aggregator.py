"""Queries and commands the aggregator answers: leaderboards, provenance and sharing policies."""

from __future__ import annotations

from pydantic import Field

from shared.commands.base import MAX_ID, Command, Id
from shared.events import SharingPolicy

#: Rows in one answer of a leaderboard query: 100 rows by 200 sites stay well under NATS's 1 MB.
MAX_LEADERBOARD_ROWS = 100
#: A screenful: a row of a board shows every site's value, ~6 kB of JSON at two hundred sites.
DEFAULT_LEADERBOARD_ROWS = 25
#: A policy preview answers four boards at once: 4 x 25 rows by two hundred sites is ~600 kB.
MAX_PREVIEW_ROWS = 25
DEFAULT_PREVIEW_ROWS = 10


# --- aggregator queries -----------------------------------------------------------------------


class GetLeaderboard(Command):
    """The board as the asking user may see it under the benchmark's sharing policy."""

    SERVICE, NAME = "aggregator", "leaderboard"
    benchmark_id: Id
    # A page of rows: a thousand models by two hundred sites is too much for one answer.
    limit: int = Field(default=DEFAULT_LEADERBOARD_ROWS, ge=1, le=MAX_LEADERBOARD_ROWS)
    offset: int = Field(default=0, ge=0, le=MAX_ID)


class GetProvenance(Command):
    """Where one model's results on a benchmark came from: per site, the dataset, container digests,
    dataset hash, signing key and time, and who approved each association and when. The committee
    and admins see every cell, the model's owner its model's, a data owner its own datasets'."""

    SERVICE, NAME = "aggregator", "provenance"
    benchmark_id: Id
    model_id: Id


class SetSharingPolicy(Command):
    """The committee (or an admin) sets what its benchmark shares; releasing an embargo is one."""

    SERVICE, NAME = "aggregator", "sharing_policy"
    benchmark_id: Id
    policy: SharingPolicy


class PreviewSharingPolicy(Command):
    """The committee (or an admin) sees what each audience would see of its board under ``policy``,
    side by side, before setting it; nothing is saved (``services.aggregator.preview``)."""

    SERVICE, NAME = "aggregator", "preview_sharing_policy"
    benchmark_id: Id
    policy: SharingPolicy
    # Four boards in one answer: a page of each, smaller than a leaderboard's to fit NATS's 1 MB.
    limit: int = Field(default=DEFAULT_PREVIEW_ROWS, ge=1, le=MAX_PREVIEW_ROWS)
    offset: int = Field(default=0, ge=0, le=MAX_ID)
