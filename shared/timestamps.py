"""Times that come from outside (query strings, request bodies): with a zone, and within what a
datetime can hold once converted to UTC.

``0001-01-01T00:00:00+14:00`` is a valid ISO 8601 time, but in UTC it falls before year 1, so the
conversion that storage, comparisons and JetStream all make raises ``OverflowError`` (a 500, or a
service failing mid-command). A naive time cannot be compared with an aware one at all. Both are
refused where they enter, as a 422 that names the field, with one type for every such field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

EARLIEST = "0001-01-01T00:00:00Z"
LATEST = "9999-12-31T23:59:59Z"


def _zoned_and_in_range(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("timezone_missing", "give a time zone, e.g. 2026-01-31T09:00:00Z")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range", f"must lie between {EARLIEST} and {LATEST} once converted to UTC"
        ) from None
    return value  # as given: the same instant, the zone the caller wrote


#: A point in time given from outside: aware, and convertible to UTC.
Timestamp = Annotated[datetime, AfterValidator(_zoned_and_in_range)]
