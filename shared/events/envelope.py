"""The envelope every event carries, and the kinds and statistics that events of every service share."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

AssociationKind = Literal["dataset", "model"]
EntityKind = Literal["container", "model", "benchmark", "dataset"]
EntityState = Literal["DEVELOPMENT", "OPERATION"]
ApprovalMode = Literal["NEVER", "ALWAYS", "ALLOWLIST"]
#: Whose fault a failure was, so that it reaches who can fix it: a model's owner, the benchmark's
#: committee (its metrics container, or its own registration: demo data, the data preparator's
#: hosted files), the site's data owner, or the site's infrastructure (engine, disk, network), the
#: only one retried.
FailureKind = Literal["model", "metrics", "benchmark", "data", "infrastructure"]


def utcnow() -> datetime:
    return datetime.now(UTC)


#: A dataset's statistics may nest, as MedPerf's do (``labels_count: {pneumonia: 3}``); they are
#: kept as written and shown flattened (``flatten_statistics``). Four levels at most, spelled out:
#: a recursive type would admit any depth, past what the ingress and consumers take.
_Leaf = float | int | str | bool | None
_Nested1 = _Leaf | list[_Leaf] | dict[str, _Leaf]
_Nested2 = _Leaf | list[_Nested1] | dict[str, _Nested1]
Statistic = _Leaf | list[_Nested2] | dict[str, _Nested2]
Statistics = dict[str, Statistic]
STATISTICS_DEPTH = 4


def _finite(values: dict[str, Any]) -> dict:
    # JSON has no NaN or infinity: pydantic would write null, and no consumer could read the event.
    for name, value in flatten_statistics(values).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}; only finite numbers can be recorded")
    return values


def flatten_statistics(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as one level of dotted keys: ``{"labels_count": {"a": 3}}`` is
    ``{"labels_count.a": 3}``; a list's items are numbered."""
    if isinstance(values, dict):
        items: Any = values.items()
    elif isinstance(values, list):
        items = enumerate(values)
    else:
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_statistics(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


class Event(BaseModel):
    """The envelope every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Service that owns the event's stream; the subject is ``medperf.<owner>.<type>``.
    OWNER: ClassVar[str]

    event_id: UUID = Field(default_factory=uuid4, description="unique; consumers dedupe on it")
    type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    actor: str = Field(min_length=1, description="user (or site agent) whose action this records")
    correlation_id: UUID | None = Field(default=None, description="the command or event that caused this one")

    @property
    def subject(self) -> str:
        return f"medperf.{self.OWNER}.{self.type}"

    @classmethod
    def subscription(cls) -> str:
        """The subject pattern that receives every event of this type."""
        return f"medperf.{cls.OWNER}.{cls.model_fields['type'].default}"
