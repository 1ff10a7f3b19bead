"""``still_working`` keeps a long handler's message from being redelivered, and stops with it."""

from __future__ import annotations

import asyncio

from shared.messaging import still_working


class Message:
    def __init__(self) -> None:
        self.beats = 0

    async def in_progress(self) -> None:
        self.beats += 1


async def test_a_long_handler_reports_progress_every_third_of_the_ack_wait_until_it_ends() -> None:
    msg = Message()
    async with still_working(msg, ack_wait=0.3):
        await asyncio.sleep(0.35)  # longer than the ack wait itself
    beats = msg.beats
    assert beats >= 2  # at 0.1 and 0.2 s at least, however busy the machine
    await asyncio.sleep(0.25)
    assert msg.beats == beats  # nothing after the handler ended


async def test_progress_stops_when_the_handler_fails() -> None:
    msg = Message()
    try:
        async with still_working(msg, ack_wait=0.3):
            raise RuntimeError("the container failed")
    except RuntimeError:
        pass
    await asyncio.sleep(0.25)
    assert msg.beats == 0
