"""The client's side of the heartbeat: it PINGs the broker, and notices a broker gone silent.

From protocol version 5 the broker ends a client silent for twice ``heartbeat_ms`` (its
``WELCOME`` names the interval). The client keeps that promise, and holds the broker to the
same rule, as AMQP clients do: a broker that sent nothing at all (no byte of a ``PONG``, an
answer, a delivery) for **two intervals and a margin**, while the client PINGed it, counts as
gone: a host that vanished without a FIN, a process that is stopped, a network that drops
everything. Two intervals, because a live broker answers each PING within a round trip, so
one whole interval without a byte is already a PING missed; the margin (``MARGIN_MS``) is for
the round trip and for either process being slow to be scheduled.

Three rules keep a live broker from being taken for a dead one:

- the silence counts only once a PING sent in it has waited an interval and the margin: a
  client whose own event loop was blocked (a long computation, a debugger) sent no PING
  meanwhile, and the broker's answers may be waiting, unread, in its socket;
- while the broker says it is not reading this connection (``BLOCKED``: its memory alarm) its
  silence is not held against it: it may not have read the PINGs;
- while the client waits on so many requests that the broker may have stopped reading it
  until it answers some (``BROKER_MAX_IN_FLIGHT``), the broker may rightly say nothing for
  as long as an answer may take: a publish to a full topic of overflow ``block`` waits up to
  ``MAX_BLOCK_MS`` (60 s) for room. The limit grows by that much meanwhile.

``Pulse`` decides, from times it is given (ms on one monotonic clock); ``NetworkBackend``
sends the PINGs and ends the connection. ``Heartbeat`` is what ``roost.connect`` is told:
the interval, and the clock and the sleep it is timed with (tests pass ones they drive).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from roost.clock import Clock, SystemClock
from roost.core.policies import MAX_BLOCK_MS

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

#: Beyond two intervals, for the round trip and for scheduling: what silence a live broker
#: may show past a PING it was sent.
MARGIN_MS = 1_000
#: The broker stops reading a connection with this many requests (or bytes of them) being
#: answered, until half are (``server.native_server.MAX_IN_FLIGHT``, pinned by a test).
BROKER_MAX_IN_FLIGHT = 1_024
BROKER_MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024
#: The longest a live broker that stopped reading a connection (``BROKER_MAX_IN_FLIGHT``)
#: may say nothing on it: the longest an answer may rightly take (a blocked publish).
HELD_MS = MAX_BLOCK_MS
#: The broker's default ``heartbeat_ms``: how long a connection may take to open (TCP, TLS,
#: the handshake) is timed by it until a ``WELCOME`` names the broker's own.
DEFAULT_HEARTBEAT_MS = 10_000


def silence_limit_ms(interval_ms: int) -> int:
    """The silence after which a broker PINGed every ``interval_ms`` counts as gone."""
    return 2 * interval_ms + MARGIN_MS


@dataclass(frozen=True)
class Heartbeat:
    """How a client connection keeps its pulse.

    ``interval_s``: None, PING as often as the broker asks (its ``heartbeat_ms``) and judge
    its silence by that; a number of seconds, PING that often if it is more often than the
    broker asks (as AMQP clients negotiate: the lower wins; the broker would end a client
    that PINGs less often than it asks), and judge by that; 0, never judge the broker's
    silence (the PINGs it asks for are still sent) and wait for a connection to open as long
    as it takes."""

    interval_s: float | None = None
    clock: Clock = field(default_factory=SystemClock)
    sleep: Sleep = asyncio.sleep

    def __post_init__(self) -> None:
        if self.interval_s is not None and not 0 <= self.interval_s < math.inf:
            raise ValueError(
                f"heartbeat must be a finite number of seconds >= 0, not {self.interval_s}"
            )

    @property
    def judges(self) -> bool:
        return self.interval_s != 0

    def interval_ms(self, broker_ms: int) -> int:
        """How often to PING a broker whose ``WELCOME`` says ``broker_ms``."""
        if not self.interval_s:
            return broker_ms
        ours = max(1, round(self.interval_s * 1000))
        return min(ours, broker_ms) if broker_ms > 0 else ours

    @property
    def connect_timeout_ms(self) -> int | None:
        """How long opening a connection may take (None: as long as it takes): the silence
        limit of the interval the client would PING at with the broker's default."""
        if not self.judges:
            return None
        return silence_limit_ms(self.interval_ms(DEFAULT_HEARTBEAT_MS))

    async def within(self, work: Awaitable[T], timeout_ms: int | None, what: str) -> T:
        """``work``'s result, or ``TimeoutError`` (an ``OSError``, as the operating system's
        own connect timeout) naming ``what`` once ``timeout_ms`` passed on ``sleep``; the
        work is cancelled then."""
        if timeout_ms is None:
            return await work
        working = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self.sleep(timeout_ms / 1000))
        try:
            await asyncio.wait({working, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not working.done():
                working.cancel()
            await asyncio.gather(timer, working, return_exceptions=True)
        if working.cancelled() and not timer.cancelled():
            raise TimeoutError(f"{what}: no answer within {timeout_ms} ms (heartbeat)")
        return working.result()


class Pulse:
    """When to PING, and whether the broker is gone, on one connection (sans-IO)."""

    def __init__(self, interval_ms: int, judge: bool, now_ms: int) -> None:
        self.interval_ms = interval_ms
        #: The silence after which the broker is gone (None: it is never judged).
        self.limit_ms = silence_limit_ms(interval_ms) if judge else None
        self._heard_ms = now_ms
        self._pinged_ms = now_ms  # the WELCOME just came: the first PING is an interval away
        #: The first PING sent since the broker was last heard from (None: none is waiting).
        self._unanswered_ms: int | None = None

    def heard(self, at_ms: int) -> None:
        """The broker was heard from at ``at_ms`` (bytes arrived), or excused until then."""
        self._heard_ms = max(self._heard_ms, at_ms)
        if self._unanswered_ms is not None and self._unanswered_ms <= self._heard_ms:
            self._unanswered_ms = None

    def ping_due(self, now_ms: int) -> bool:
        return now_ms - self._pinged_ms >= self.interval_ms

    def pinged(self, now_ms: int) -> None:
        self._pinged_ms = now_ms
        if self._unanswered_ms is None:
            self._unanswered_ms = now_ms

    def gone(self, now_ms: int, held: bool = False) -> str | None:
        """Why the broker counts as gone at ``now_ms``; None while it does not. ``held``:
        the broker may not be reading this connection (the limit grows by ``HELD_MS``)."""
        if self.limit_ms is None or self._unanswered_ms is None:
            return None
        silent_ms = now_ms - self._heard_ms
        if now_ms < self._gone_at(held):
            return None
        allowance = f" and {HELD_MS} ms for answers owed" if held else ""
        return (
            f"the broker sent nothing for {silent_ms} ms though PINGed every "
            f"{self.interval_ms} ms; the limit is twice that + {MARGIN_MS} ms{allowance}"
        )

    def wait_ms(self, now_ms: int, held: bool = False) -> int:
        """How long nothing can change: until the next PING is due, or the broker may be
        gone (at least 1 ms)."""
        until = self._pinged_ms + self.interval_ms
        if self.limit_ms is not None and self._unanswered_ms is not None:
            until = min(until, self._gone_at(held))
        return max(1, until - now_ms)

    def _gone_at(self, held: bool) -> int:
        assert self.limit_ms is not None and self._unanswered_ms is not None
        extra_ms = HELD_MS if held else 0
        return max(
            self._heard_ms + self.limit_ms + extra_ms,
            self._unanswered_ms + self._answer_ms + extra_ms,
        )

    @property
    def _answer_ms(self) -> int:
        """How long a PING may wait for a sign of life before its wait counts."""
        return self.interval_ms + MARGIN_MS
