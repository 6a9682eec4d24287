"""Plain counters the asyncio layer keeps for ``/metrics``: ints and bucket counts, no locks and
no prometheus_client.

Rules, because these sit on hot paths:

- Writers touch them on the event loop only, and at most once per frame, connection or flush
  round, never per message: an integer increment on an object that already exists.
- ``admin/metrics.py`` reads them when Prometheus scrapes (also on the loop) and turns them
  into samples; nothing here knows Prometheus' names or formats.
- They count from process start and are never persisted: Prometheus handles the reset a
  restart causes.
"""

from __future__ import annotations

from bisect import bisect_left

from roost.server.memory import MemoryAlarm

#: Upper bounds (seconds) of the latency buckets: 50 µs (an fsync on a fast SSD) up to 2.5 s (a
#: disk in trouble). Prometheus' ``le`` is inclusive, so a value equal to a bound falls in it.
LATENCY_BOUNDS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class Histogram:
    """Counts per bucket and a sum: what a Prometheus histogram needs, at the cost of one
    bisect per observation. Observed once per flush round, not per message."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= it)`` for every bucket, ending with +Inf."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class FlushMeters:
    """What the group-commit flusher did (server/flusher.py), updated once per round."""

    __slots__ = (
        "append_latency", "records", "rounds_on_loop", "sync_duration", "syncs", "wal_writes",
    )  # fmt: skip

    def __init__(self) -> None:
        #: Rounds' writes to the shared write-ahead log (each one O_DSYNC write, also counted
        #: in ``syncs``).
        self.wal_writes = 0
        #: Write-and-sync system calls completed: O_DSYNC writes, fdatasyncs, directory fsyncs.
        self.syncs = 0
        #: Records made durable.
        self.records = 0
        #: Rounds small enough to run on the event loop itself (the rest went to the thread).
        self.rounds_on_loop = 0
        #: Per round: the seconds spent writing and syncing (in the thread, or on the loop).
        self.sync_duration = Histogram()
        #: Per round: seconds from the first append that asked for durability while no round
        #: covered it, until the round covering it was applied; the longest any confirm in the
        #: round waited on storage.
        self.append_latency = Histogram()


class ListenerStats:
    """One listener's connections and frames (server/native_server.py)."""

    __slots__ = (
        "accepted", "alarm", "connections", "evicted", "frames_received", "held",
        "protocol_errors", "refused", "timed_out",
    )  # fmt: skip

    def __init__(self) -> None:
        self.connections = 0  # open now
        self.accepted = 0
        #: Over max_connections, or from an address with too many connections held.
        self.refused = 0
        #: Held before their handshake: their address broke the protocol too often lately
        #: (server/protocol_strikes.py).
        self.held = 0
        self.frames_received = 0
        self.protocol_errors = 0  # connections ended by a ProtocolError
        #: Ended because the handshake (server/native_handshake.py), a frame or the heartbeat
        #: (server/watchdog.py) was overdue.
        self.timed_out = 0
        #: Closed to make room for a newcomer at max_connections: in their handshake, or silent.
        self.evicted = 0
        #: The memory alarm the listener heeds (server/memory.py), once it serves.
        self.alarm: MemoryAlarm | None = None
