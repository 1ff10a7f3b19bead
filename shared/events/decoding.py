"""What consumers decode: any event, by its type; and what they park when they give up on a message."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, TypeAdapter

from shared.events.aggregator import SharingPolicyChanged
from shared.events.approvals import (
    AssociationApproved,
    AssociationPriorityChanged,
    AssociationRejected,
    AssociationRequested,
    AutoApprovalChanged,
    BenchmarkApproved,
    BenchmarkRejected,
)
from shared.events.envelope import Event, utcnow
from shared.events.registry import (
    BenchmarkSubmitted,
    ContainerRegistered,
    DatasetRegistered,
    EntityDeleted,
    EntityEdited,
    ModelRegistered,
    SiteKeyRegistered,
    SiteKeyRevoked,
    TokenIssued,
    TokenRevoked,
    UserCreated,
)
from shared.events.sites import (
    CompatibilityTested,
    JobCancelled,
    JobFailed,
    JobLogReleased,
    JobProgress,
    JobQueued,
    JobStarted,
    JobSucceeded,
    ResultReported,
)

AnyEvent = Annotated[
    ContainerRegistered
    | ModelRegistered
    | BenchmarkSubmitted
    | DatasetRegistered
    | EntityEdited
    | EntityDeleted
    | UserCreated
    | TokenIssued
    | TokenRevoked
    | SiteKeyRegistered
    | SiteKeyRevoked
    | BenchmarkApproved
    | BenchmarkRejected
    | AssociationRequested
    | AssociationApproved
    | AssociationRejected
    | AutoApprovalChanged
    | AssociationPriorityChanged
    | ResultReported
    | CompatibilityTested
    | SharingPolicyChanged
    | JobQueued
    | JobStarted
    | JobSucceeded
    | JobFailed
    | JobCancelled
    | JobLogReleased
    | JobProgress,
    Field(discriminator="type"),
]
EVENTS: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def parse_event(data: bytes | str) -> Event:
    """Decode any event from its JSON form; raises ``pydantic.ValidationError`` if malformed."""
    return EVENTS.validate_json(data)


class DeadLetter(BaseModel):
    """A message a consumer gave up on, parked on ``medperf.deadletter.<service>`` for the console."""

    service: str
    consumer: str
    subject: str
    reason: str
    deliveries: int
    payload: str = Field(description="the original body, as text (truncated to 64 KiB)")
    stream_sequence: int | None = None
    dead_lettered_at: datetime = Field(default_factory=utcnow)
