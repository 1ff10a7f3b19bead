"""What every command shares: the request (``Command``), the answer (``Outcome``), and the ids and
site names commands take."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.limits import rows_that_fit

#: Ids and counters are stored in 32-bit integer columns (PostgreSQL INTEGER); a larger number
#: can only be a mistake, so every command refuses it before it reaches a database.
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
SiteName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


#: ``unavailable``: retrying can succeed (a service or the database is busy or restarting);
#: ``internal``: a fault of the service's own, which a retry would only repeat (its log says more);
#: ``too_large``: the request, the event it would record or the answer is past a limit (shared.limits).
RefusalCode = Literal[
    "invalid", "unauthenticated", "forbidden", "not_found", "conflict", "too_large", "unavailable", "internal"
]


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    SERVICE: ClassVar[str]
    NAME: ClassVar[str]

    actor: str = Field(min_length=1, description="the authenticated user on whose behalf this is asked")
    is_admin: bool = False

    @classmethod
    def subject(cls) -> str:
        return f"medperf.cmd.{cls.SERVICE}.{cls.NAME}"

    def destination(self) -> str:
        """The subject this command is sent on: its type's (a site's command adds the site)."""
        return self.subject()

    def not_answering(self) -> str:
        """What the caller is told when no one answers (503): retrying can succeed."""
        return f"the {self.SERVICE} service did not answer; try again shortly"


class Outcome(BaseModel):
    """The answer to any command or query."""

    ok: bool
    id: int | None = None
    data: Any = None
    reason: str | None = None
    code: RefusalCode | None = None
    next_offset: int | None = Field(default=None, description="a page with more rows after it: ask from this offset")

    @classmethod
    def accepted(cls, id: int | None = None, data: Any = None, next_offset: int | None = None) -> Outcome:
        return cls(ok=True, id=id, data=data, next_offset=next_offset)

    @classmethod
    def page(cls, rows: list[Any], offset: int = 0, more: bool = False) -> Outcome:
        """As many of ``rows`` as one answer can carry (``shared.limits.rows_that_fit``), and where
        the next page starts when some were cut or ``more`` follow them."""
        kept = rows_that_fit(rows)
        follows = kept < len(rows) or more
        return cls.accepted(data=rows[:kept], next_offset=offset + kept if follows else None)

    @classmethod
    def refused(cls, code: RefusalCode, reason: str) -> Outcome:
        return cls(ok=False, code=code, reason=reason)
