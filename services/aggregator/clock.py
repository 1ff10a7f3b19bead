"""The aggregator's change clock (``store.Clock``): every transaction that changes what a board
shows advances it, so that in-memory boards know what to read again (``boards.Boards``)."""

from __future__ import annotations

from sqlalchemy import update

from services.aggregator.store import Clock
from shared.db import UnitOfWork, execute_prebuilt

#: The clock's statements, built once for ``execute_prebuilt``: every projected change runs them.
#: (Core columns: an ORM attribute would make them ORM statements, with the ORM's extra work.)
_clock = Clock.__table__.c
_CLOCK = update(Clock.__table__).where(_clock.id == 1)
_TICK = _CLOCK.values(tick=_clock.tick + 1).returning(_clock.tick)
_TICK_META = _CLOCK.values(tick=_clock.tick + 1, meta_tick=_clock.tick + 1).returning(_clock.tick)


async def advance_clock(uow: UnitOfWork, *, meta: bool = False) -> int:
    """Advance the clock once per transaction (holding its row lock until the commit); ``meta``:
    this transaction changes more than results, so in-memory boards must load afresh."""
    info = uow.session.info
    tick = info.get("tick")
    if tick is None:
        tick = (await execute_prebuilt(uow.session, _TICK_META if meta else _TICK, {})).scalar()
        info["meta"] = meta
        if tick is None:  # the first change this database sees
            tick = 1
            uow.session.add(Clock(id=1, tick=tick, meta_tick=tick))
            await uow.session.flush()
        info["tick"] = tick
    if meta and not info.get("meta"):
        await execute_prebuilt(uow.session, _CLOCK, {"meta_tick": tick})
        info["meta"] = True
    return tick
