"""The native listener's watchdog: one task and one tick for every connection's deadlines and
for the broker's memory budget, instead of a timer per connection.

Each tick (``tick_ms``, at most a quarter of the shortest timeout) it

1. samples the memory the process holds and feeds the ``MemoryAlarm``; when the alarm blocks
   or unblocks, every connection is told (``Watched.memory``); over the budget it first asks
   the allocator to give free memory back (``release``), once a second at most, and samples
   again: memory a flood freed must not keep publishers blocked. It also gives memory back
   once closed connections have let go of ``RELEASE_AFTER_FREED_BYTES`` of buffers (the
   allocator keeps freed blocks for reuse: see ``process_tuning``);
2. asks each open connection whether it is overdue (``overdue``) and ends those that are;
3. writes the summaries of rate-limited log lines whose interval has ended (``log_limit``).

Between ticks, a connection receiving a large frame calls ``memory_pressure`` on each read,
which samples memory too (10 ms apart at most): big frames arrive at loopback speed, and a
quarter of a second of them is far more than any margin over the budget.

Deadlines (docs/protocol.md, "Timeouts"):

- **frame**: a frame that has started to arrive must be whole within ``frame_timeout_ms``
  (slowloris; a header that declares 16 MiB and then nothing);
- **idle**: on a connection of version 5 or later, whose client promises a ``PING`` every
  ``heartbeat_ms``, nothing received for twice that ends it (a half-open socket, a peer that
  went away without a FIN). Older clients never promised a heartbeat, so their silence is not
  held against them; a full listener evicts the longest silent of them instead (see
  ``native_server``).

A connection whose reading the broker itself holds (the memory alarm, a peer not reading what
it is sent, too many requests in flight) is not timed for silence: the silence is ours. A
frame held by the memory alarm still is (see ``overdue``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from roost.clock import Clock, SystemClock
from roost.server.framed import MEMORY
from roost.server.log_limit import LogLimit
from roost.server.memory import MemoryAlarm, anonymous_rss_bytes
from roost.server.native_handshake import Sleep
from roost.server.process_tuning import release_free_memory

log = logging.getLogger("roost.native")
#: The longest tick: memory is sampled this often at least.
MAX_TICK_MS = 250
#: Memory is handed back to the system at most this often while over the budget.
RELEASE_EVERY_MS = 1_000
#: Between ticks, memory is sampled at most this often when a large frame is arriving.
PRESSURE_SAMPLE_MS = 10
#: Buffers of closed connections, in bytes, past which free memory is handed back at the next
#: tick whatever the budget: what a flood left behind is given back when it ends.
RELEASE_AFTER_FREED_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Timeouts:
    frame_timeout_ms: int = 30_000
    #: The interval a version-5 client promises a PING in (``WELCOME.heartbeat_ms``).
    heartbeat_ms: int = 10_000

    @property
    def idle_timeout_ms(self) -> int:
        return 2 * self.heartbeat_ms

    @property
    def tick_ms(self) -> int:
        return max(1, min(MAX_TICK_MS, self.frame_timeout_ms // 4, self.idle_timeout_ms // 4))


def overdue(
    now_ms: int,
    timeouts: Timeouts,
    *,
    last_received_ms: int,
    frame_started_ms: int | None,
    heartbeats: bool,
    holds: Collection[str] = (),
) -> str | None:
    """Why a connection with these times is overdue at ``now_ms``, or None if it is not.

    ``holds`` are the reasons the broker holds its reading. Silence is never held against
    a connection the broker does not read. A frame still arriving is: while the broker waits
    for the peer to read (``UNSENT``) or for its own answers (``IN_FLIGHT``) it is not timed,
    but while the memory alarm holds it, it is, or frames started and stalled by a flood
    would keep the alarm on, and every publisher blocked, forever."""
    frame_timed = not holds or all(hold == MEMORY for hold in holds)
    if (
        frame_timed
        and frame_started_ms is not None
        and now_ms - frame_started_ms >= timeouts.frame_timeout_ms
    ):
        return (
            f"a frame started {now_ms - frame_started_ms} ms ago is not whole "
            f"(frame_timeout_ms={timeouts.frame_timeout_ms})"
        )
    if not holds and heartbeats and now_ms - last_received_ms >= timeouts.idle_timeout_ms:
        return (
            f"nothing received for {now_ms - last_received_ms} ms (twice "
            f"heartbeat_ms={timeouts.heartbeat_ms})"
        )
    return None


class Watched(Protocol):
    """What the watchdog asks of a connection."""

    def check(self, now_ms: int) -> None:
        """End the connection if it is overdue at ``now_ms``."""

    def memory(self, alarm: MemoryAlarm) -> None:
        """The alarm blocked or unblocked: hold or release reading, tell the client."""


class Watchdog:
    def __init__(
        self,
        connections: Collection[Watched],
        alarm: MemoryAlarm,
        timeouts: Timeouts,
        *,
        clock: Clock | None = None,
        sample: Callable[[], int] = anonymous_rss_bytes,
        release: Callable[[], object] = release_free_memory,
        log_limit: LogLimit | None = None,
    ) -> None:
        self._connections = connections
        self.alarm = alarm
        self.timeouts = timeouts
        self._clock = clock or SystemClock()
        self._sample = sample
        self._release = release
        self._released_ms: int | None = None
        self._sampled_ms: int | None = None
        self._freed_bytes = 0
        self._log_limit = log_limit

    def memory_pressure(self) -> None:
        """A large frame is arriving: sample memory now (``PRESSURE_SAMPLE_MS`` apart at
        most), so a flood of big frames meets the budget within a few reads, not a tick."""
        now_ms = self._clock.monotonic_ms()
        if self._sampled_ms is None or now_ms - self._sampled_ms >= PRESSURE_SAMPLE_MS:
            self._watch_memory(now_ms)

    def freed(self, size_bytes: int) -> None:
        """A closed connection let go of buffers of ``size_bytes``."""
        self._freed_bytes += size_bytes

    async def run(self, sleep: Sleep = asyncio.sleep) -> None:
        """Tick until cancelled."""
        while True:
            await sleep(self.timeouts.tick_ms / 1000)
            self.tick()

    def tick(self) -> None:
        now_ms = self._clock.monotonic_ms()
        self._watch_memory(now_ms)
        for connection in list(self._connections):
            connection.check(now_ms)
        if self._log_limit is not None:
            self._log_limit.flush(now_ms)  # a flood that stopped is summed up

    def _watch_memory(self, now_ms: int) -> None:
        if self._freed_bytes >= RELEASE_AFTER_FREED_BYTES:
            self._freed_bytes = 0
            self._released_ms = now_ms
            self._release()
        if self.alarm.budget_bytes is None:
            return
        self._sampled_ms = now_ms
        used = self._sample()
        if self.alarm.over(used) and (
            self._released_ms is None or now_ms - self._released_ms >= RELEASE_EVERY_MS
        ):
            self._released_ms = now_ms
            self._release()
            used = self._sample()
        if self.alarm.observe(used):
            if self.alarm.blocked:
                log.warning("%s", self.alarm.reason)
            else:
                log.warning("memory alarm cleared: the broker holds %d bytes; publishers are "
                            "read again", used)  # fmt: skip
            for connection in list(self._connections):
                connection.memory(self.alarm)
