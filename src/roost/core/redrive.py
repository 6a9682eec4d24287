"""Redrive: move dead letters back to where they came from, all of them or a filtered subset.

A dead-letter topic is read by an internal queue subscription, ``roost-redrive``. A redrive
run leases dead letters a batch at a time. Each one that matches the filter is published again
to its source topic (its ``x-roost-source-topic`` header, or ``to``) without the ``x-roost-*``
headers, and acked once that copy is durable. Each one that does not match (or cannot be moved:
no source, a destination gone or full) stays leased until the run ends, then is released, so one
run looks at every dead letter once and a later run can look again. Copying before acking makes
a move at-least-once: a crash between the two moves that message twice, never zero times. The
rate is the host's to bound (``Host.redrive``).

Like SQS's message move tasks, a moved message starts over: a new offset, delivery count 0.
"""

from __future__ import annotations

import msgspec

from roost.core.model import DELIVER_AT_HEADER, Message, SubscriptionSpec
from roost.core.subscription import DLQ_HEADERS
from roost.errors import InvalidRequest
from roost.receipt import Receipt

REDRIVE_SUBSCRIPTION = "roost-redrive"
#: How long a redrive run holds the dead letters it skips (it releases them when it ends).
HOLD_MS = 3600 * 1000
_STRIPPED = {*DLQ_HEADERS, DELIVER_AT_HEADER}


class RedriveFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which dead letters to move; every field given must match (no fields: all)."""

    source_topic: str | None = None
    key: bytes | None = None
    error_contains: str | None = None
    #: Header name -> value the dead letter must carry.
    headers: dict[str, bytes] | None = None

    def matches(self, message: Message) -> bool:
        if self.source_topic is not None:
            # A letter that names no source is not from that source: it stays, unmatched.
            source = message.header("x-roost-source-topic")
            if source is None or source.decode(errors="replace") != self.source_topic:
                return False
        if self.key is not None and message.key != self.key:
            return False
        if self.error_contains is not None:
            error = (message.header("x-roost-last-error") or b"").decode(errors="replace")
            if self.error_contains not in error:
                return False
        return all(message.header(name) == value for name, value in (self.headers or {}).items())


class RedriveBatch(msgspec.Struct):
    """One batch of a run: the dead letters copied back (to ack once the copies are durable),
    those skipped (still held until the run ends), and why any could not be moved."""

    moved: list[Receipt]
    skipped: list[Receipt]
    errors: list[str]
    exhausted: bool


def redrive_spec(dead_letter_topic: str) -> SubscriptionSpec:
    return SubscriptionSpec(
        name=REDRIVE_SUBSCRIPTION, topic=dead_letter_topic, mode="queue", start="earliest",
        max_deliveries=None,
    )  # fmt: skip


def source_of(message: Message) -> str:
    source = message.header("x-roost-source-topic")
    if source is None:
        raise InvalidRequest(
            f"{message.topic}/{message.partition}@{message.offset} has no x-roost-source-topic "
            "header: it was not dead-lettered by Roost; redrive it with an explicit destination"
        )
    return source.decode()


def original_headers(message: Message) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value) for name, value in message.headers if name not in _STRIPPED)
