"""Log lines a flood would repeat thousands of times, rate-limited per kind.

A broker closing connections for broken frames, stalled frames or slow handshakes logs why,
with the peer: one line tells the operator what happened. A flood of such peers (a fuzzer
reconnecting a hundred times a second, 500 slowloris sockets timing out together) would make
the broker spend its CPU formatting and writing the same line thousands of times, and bury
everything else in the log. So each kind of line gets ``lines`` lines in full per interval
of ``interval_ms`` (from the first of them); past that, lines of that kind are only counted,
and one summary line says how many there were:

    closing ('127.0.0.1', 50312): roost protocol error: frame length 3918046 (limit 65536)
    ...                                                            (ten of these, in full)
    ... and 1,234 more like it in the last 10.0 s: connections closed for a protocol error

The summary is written when the next line of that kind comes after the interval, or by
``flush`` (the native listener's watchdog calls it every tick, and its shutdown once more),
so a flood that stops is still summed up. Counters and metrics are kept by the callers, per
event, whatever is logged: only the log is sampled.

The clock is injected (``roost.clock``): tests drive the interval without sleeping. Not
thread-safe: one event loop writes through it.
"""

from __future__ import annotations

import logging

from roost.clock import Clock, SystemClock

#: Lines of one kind logged in full per interval.
LINES_PER_INTERVAL = 10
INTERVAL_MS = 10_000


class _Window:
    __slots__ = ("logged", "started_ms", "suppressed")

    def __init__(self, started_ms: int) -> None:
        self.started_ms = started_ms
        self.logged = 0
        self.suppressed = 0


class LogLimit:
    """At most ``lines`` lines of each kind in each ``interval_ms``, then a count."""

    def __init__(
        self,
        logger: logging.Logger,
        clock: Clock | None = None,
        *,
        lines: int = LINES_PER_INTERVAL,
        interval_ms: int = INTERVAL_MS,
        level: int = logging.WARNING,
    ) -> None:
        if lines < 1 or interval_ms < 1:
            raise ValueError(f"lines ({lines}) and interval_ms ({interval_ms}) must be positive")
        self._logger = logger
        self._clock = clock or SystemClock()
        self.lines = lines
        self.interval_ms = interval_ms
        self.level = level
        self._windows: dict[str, _Window] = {}

    def log(self, kind: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``lines`` of ``kind`` were logged in this interval;
        ``kind`` names the lines a summary counts (a phrase: it is printed)."""
        if not self._logger.isEnabledFor(self.level):
            return
        now_ms = self._clock.monotonic_ms()
        window = self._windows.get(kind)
        if window is not None and now_ms - window.started_ms >= self.interval_ms:
            self._summarise(kind, window, now_ms)
            window = None
        if window is None:
            window = self._windows[kind] = _Window(now_ms)
        if window.logged < self.lines:
            window.logged += 1
            self._logger.log(self.level, message, *args)
        else:
            window.suppressed += 1

    def flush(self, now_ms: int | None = None) -> None:
        """Sum up every kind whose interval has ended by ``now_ms`` (the clock's now)."""
        if not self._windows:
            return
        now_ms = self._clock.monotonic_ms() if now_ms is None else now_ms
        for kind, window in list(self._windows.items()):
            if now_ms - window.started_ms >= self.interval_ms:
                self._summarise(kind, window, now_ms)

    def close(self) -> None:
        """Sum up every kind now, its interval ended or not (a shutdown)."""
        now_ms = self._clock.monotonic_ms()
        for kind, window in list(self._windows.items()):
            self._summarise(kind, window, now_ms)

    def _summarise(self, kind: str, window: _Window, now_ms: int) -> None:
        del self._windows[kind]
        if window.suppressed:
            self._logger.log(
                self.level, "... and %s more like it in the last %.1f s: %s",
                f"{window.suppressed:,}", (now_ms - window.started_ms) / 1000, kind,
            )  # fmt: skip
