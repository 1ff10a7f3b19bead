"""Reading back what JetStream holds: the tests check the system of record, not only the views."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg


async def stream_messages(js: JetStreamContext, stream: str) -> list[RawStreamMsg]:
    """Every message of ``stream``, in order. For streams that keep their whole history: a stream
    that deletes older messages (HEARTBEATS keeps one per agent) has gaps, where this fails."""
    state = (await js.stream_info(stream)).state
    if not state.messages:
        return []
    return [await js.get_msg(stream, sequence) for sequence in range(state.first_seq, state.last_seq + 1)]
