"""The free-space watermark: publishes stop before the disk is full, and resume by themselves.

RabbitMQ's disk alarm is the model. Free space on the data directory's filesystem is read with
``statvfs`` (by the host's storage watch, in a thread: on a hung network filesystem it blocks)
about once a second. Below ``min_free_bytes`` every publish is refused with ``DiskFull``,
retriable, naming the free bytes and the watermark; acks, receives, commits, dead letters and
definition changes go on, and the space the watermark keeps is theirs (journal entries and
metadata are small). When space returns, the next reading lets publishes in again.

The default watermark is twice the largest ``segment_max_bytes`` of any topic plus 1 GiB:
a segment being written may still grow by one segment size before a roll, and the journals'
snapshots and segments need room while they compact. 0 turns the watermark off.

A reading is at most about a second old, so a burst may still reach ENOSPC: log.py makes that
fail only the operations it hit.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from roost.errors import DiskFull, InvalidConfig

#: The fixed part of the default watermark.
DEFAULT_HEADROOM_BYTES = 1024 * 1024 * 1024


def default_watermark(largest_segment_bytes: int) -> int:
    return 2 * largest_segment_bytes + DEFAULT_HEADROOM_BYTES


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on ``path``'s filesystem (blocking)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


class DiskWatermark:
    """Whether publishes may go on, by the last reading of free space.

    ``min_free_bytes`` None follows the default (``default_watermark`` of the largest segment
    size, which the host passes to each ``update``); 0 turns the watermark off.
    """

    def __init__(
        self,
        path: str,
        min_free_bytes: int | None = None,
        read_free_bytes: Callable[[str], int] = free_bytes,
    ) -> None:
        if min_free_bytes is not None and min_free_bytes < 0:
            raise InvalidConfig("min_free_bytes", min_free_bytes, "0 (off) or more bytes")
        self.path = path
        self.configured = min_free_bytes
        self.min_free_bytes = min_free_bytes or 0
        self._read = read_free_bytes
        #: The last reading; None before the first (or after it failed: no refusal on a guess).
        self.free_bytes: int | None = None
        #: Publishes are refused now. A plain attribute, set by ``update``: every publish
        #: reads it.
        self.low = False

    def read(self) -> int | None:
        """Read free space now (blocking: run it in a thread); None if it cannot be read."""
        try:
            return self._read(self.path)
        except OSError:
            return None

    def update(self, free: int | None, largest_segment_bytes: int) -> bool:
        """Adopt a reading (on the loop); True if publishes just stopped or resumed."""
        was_low = self.low
        self.free_bytes = free
        if self.configured is None:
            self.min_free_bytes = default_watermark(largest_segment_bytes)
        self.low = self.min_free_bytes > 0 and free is not None and free < self.min_free_bytes
        return self.low != was_low

    def check(self, what: str, name: str | None = None) -> None:
        """Raise ``DiskFull`` if ``what`` (a publish, to ``name``) must wait for space. On
        every publish: the message is only built for a refusal."""
        if self.low:
            what = what if name is None else f"{what} {name!r}"
            raise DiskFull(what, self.free_bytes, self.min_free_bytes)
