"""Dead letters, read from and acted on in the DEADLETTER stream itself (the stream is their only
record): list them, publish one's payload to its original subject again, or discard it."""

from __future__ import annotations

import logging
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from shared.commands import DiscardDeadLetter, ListDeadLetters, Outcome, RetryDeadLetter
from shared.events import DeadLetter
from shared.messaging import MAX_PAYLOAD_KEPT
from shared.streams import DEADLETTER

log = logging.getLogger("medperf.console.deadletters")
ADMINS_ONLY = "only admins see and act on dead letters"


def view(sequence: int, letter: DeadLetter) -> dict[str, Any]:
    return {"sequence": sequence, **letter.model_dump(mode="json"), "retryable": retryable(letter)}


def retryable(letter: DeadLetter) -> bool:
    """A payload cut at the size kept would be republished broken: only whole ones are retried."""
    return len(letter.payload.encode()) < MAX_PAYLOAD_KEPT


async def list_letters(query: ListDeadLetters, js: JetStreamContext) -> Outcome:
    if not query.is_admin:
        return Outcome.refused("forbidden", ADMINS_ONLY)
    info = await js.stream_info(DEADLETTER.name)
    letters: list[dict[str, Any]] = []
    if info.state.messages == 0:  # an empty stream reports sequence 0, which cannot be read
        return Outcome.accepted(data=letters)
    for sequence in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        if len(letters) >= query.limit:
            break
        letter = await _letter(js, sequence)
        if letter is not None:
            letters.append(view(sequence, letter))
    return Outcome.page(letters)  # each keeps up to 64 KiB of its payload: a page may be cut


async def retry(cmd: RetryDeadLetter, js: JetStreamContext) -> Outcome:
    if not cmd.is_admin:
        return Outcome.refused("forbidden", ADMINS_ONLY)
    letter = await _letter(js, cmd.sequence)
    if letter is None:
        return Outcome.refused("not_found", f"no dead letter {cmd.sequence}; it may have been retried or discarded")
    if not retryable(letter):
        return Outcome.refused("conflict", "its payload was cut to 64 KiB when it was parked; discard it instead")
    # No Nats-Msg-Id: JetStream would drop a retry inside its duplicate window as the original
    # message; the consumers' inboxes dedupe by event id instead.
    ack = await js.publish(letter.subject, letter.payload.encode(), headers={"content-type": "application/json"})
    await js.delete_msg(DEADLETTER.name, cmd.sequence)
    log.info(
        "%s retried dead letter %d: %s again, as %s #%d", cmd.actor, cmd.sequence, letter.subject, ack.stream, ack.seq
    )
    return Outcome.accepted(cmd.sequence, {"subject": letter.subject, "stream": ack.stream, "stream_sequence": ack.seq})


async def discard(cmd: DiscardDeadLetter, js: JetStreamContext) -> Outcome:
    if not cmd.is_admin:
        return Outcome.refused("forbidden", ADMINS_ONLY)
    if await _letter(js, cmd.sequence) is None:
        return Outcome.refused("not_found", f"no dead letter {cmd.sequence}; it may have been retried or discarded")
    await js.delete_msg(DEADLETTER.name, cmd.sequence)
    log.info("%s discarded dead letter %d", cmd.actor, cmd.sequence)
    return Outcome.accepted(cmd.sequence)


async def _letter(js: JetStreamContext, sequence: int) -> DeadLetter | None:
    try:
        message = await js.get_msg(DEADLETTER.name, sequence)
    except NotFoundError:  # deleted (retried or discarded), or never existed
        return None
    try:
        return DeadLetter.model_validate_json(message.data or b"")
    except ValidationError:  # something else was published there by hand: not ours to act on
        return None
