"""Events of the aggregator: what a benchmark's committee shares of its results, and with whom."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events.envelope import Event
from shared.timestamps import Timestamp

Visibility = Literal["committee", "participants", "public"]
Granularity = Literal["aggregate", "sites", "matrix"]


class SharingPolicy(BaseModel):
    """What a benchmark's committee shares of its results, and with whom. The committee, a model's
    owner (its own model) and a data owner (its own site) always see theirs, whatever this says."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    visibility: Visibility = Field(
        default="participants", description="who else sees the board: the committee only, those associated, anyone"
    )
    granularity: Granularity = Field(
        default="matrix",
        description="aggregate: one number per model; sites: per-site values as 'Site A', 'Site B'; "
        "matrix: the full model x dataset table with names",
    )
    min_sites: int = Field(
        default=1, ge=1, le=10_000, description="a model's aggregate shows once this many sites reported"
    )
    min_cases: int = Field(
        default=0, ge=0, description="datasets with fewer cases (statistics 'cases') are left out of per-site views"
    )
    ranking: Literal["primary", "mean_rank"] = Field(
        default="primary",
        description="primary: by the primary metric combined across sites as declared; mean_rank: by each "
        "model's mean rank across the sites (ties: more sites, then the better primary value, then the older model)",
    )
    released: bool = Field(default=True, description="false: held (embargo) until the committee releases")
    embargo_until: Timestamp | None = Field(default=None, description="held until this time, then shown at once")

    def embargoed(self, now: datetime) -> bool:
        return not self.released or (self.embargo_until is not None and now < self.embargo_until)


class SharingPolicyChanged(Event):
    """A committee changed what its benchmark shares; it applies to what is shown from then on."""

    OWNER = "aggregator"
    type: Literal["sharing_policy.changed"] = "sharing_policy.changed"
    benchmark_id: int
    old: SharingPolicy
    new: SharingPolicy
