"""The broker's memory budget (``max_memory``) and the alarm that blocks publishers past it.

RabbitMQ's memory alarm, for the native protocol: the listener samples what the process holds
(``anonymous_rss_bytes``: its resident anonymous memory; file pages the kernel can drop are not
counted) on a timer and hands it to ``MemoryAlarm.observe``. Over the budget, the alarm is
*blocked*: connections that publish stop being read and are told why (a ``BLOCKED`` frame);
consumers are still read, so their acks let memory drain. Once usage falls below
``RESUME_FRACTION`` of the budget (a margin, so the alarm does not flap at the line) it is
unblocked and publishers are read again.

The budget is given as bytes (``536870912``, ``512MiB``, ``2GB``), as a fraction of the
machine's memory (``0.4``: RabbitMQ's default ``vm_memory_high_watermark``), or ``0``/``off``
for none. The machine's memory is the smaller of physical RAM and the cgroup's limit, so a
container's budget is a fraction of what the container may use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from roost.errors import InvalidConfig

#: The default budget, as a fraction of the machine's memory (RabbitMQ's default watermark).
DEFAULT_MAX_MEMORY = "0.4"
#: Below this fraction of the budget a blocked alarm is lifted.
RESUME_FRACTION = 0.9
_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def budget_bytes(setting: str | int | float, machine_bytes: int | None = None) -> int | None:
    """The budget ``setting`` names, in bytes; None for no budget (``0``, ``off``). A number
    of at most 1 is a fraction of ``machine_bytes`` (``machine_memory_bytes()`` by default).
    Raises ``InvalidConfig`` for anything else, naming the forms it takes."""
    text = str(setting).strip().lower()
    if text in ("0", "off", "none", ""):
        return None
    found = _SIZE.match(text)
    if found is None or found.group(2) not in _UNITS:
        raise InvalidConfig(
            "max_memory", str(setting), "give bytes (536870912, 512MiB, 2GB), a fraction of "
            "the machine's memory (0.4), or 0 for none",
        )  # fmt: skip
    number, unit = float(found.group(1)), found.group(2)
    if not unit and number <= 1:
        total = machine_memory_bytes() if machine_bytes is None else machine_bytes
        return max(1, int(number * total))
    return int(number * _UNITS[unit])


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit if it is smaller (in a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            limit = path.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def anonymous_rss_bytes() -> int:
    """The process's resident anonymous memory (``RssAnon`` of /proc/self/status): what its
    buffers and objects hold, without file pages the kernel may drop. 0 where there is no
    /proc (the alarm then never fires: documented in docs/operations.md)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mib(size_bytes: int) -> str:
    return f"{size_bytes / 1024**2:.0f} MiB"


class MemoryAlarm:
    """Blocked while usage is over ``budget_bytes`` (None: never), until it falls below
    ``RESUME_FRACTION`` of it. ``observe`` takes each sample and says whether the state
    changed; the caller tells the connections."""

    def __init__(self, budget_bytes: int | None) -> None:
        self.budget_bytes = budget_bytes
        self.resume_bytes = None if budget_bytes is None else int(budget_bytes * RESUME_FRACTION)
        self.blocked = False
        #: Why it is blocked, in words for the operator and the client (None: it is not).
        self.reason: str | None = None
        self.used_bytes = 0
        #: Times it blocked since the start: a metric worth alerting on.
        self.alarms = 0

    def over(self, used_bytes: int) -> bool:
        """``used_bytes`` would block (or keep blocked) the alarm."""
        if self.budget_bytes is None or self.resume_bytes is None:
            return False
        return used_bytes > (self.resume_bytes if self.blocked else self.budget_bytes)

    def observe(self, used_bytes: int) -> bool:
        """Take a sample; True if it blocked or unblocked the alarm."""
        self.used_bytes = used_bytes
        over = self.over(used_bytes)
        if over == self.blocked:
            return False
        self.blocked = over
        if over:
            self.alarms += 1
            assert self.budget_bytes is not None and self.resume_bytes is not None
            self.reason = (
                f"memory alarm: the broker holds {mib(used_bytes)}, over its budget of "
                f"{mib(self.budget_bytes)} (max_memory); publishing connections are not read "
                f"until it falls below {mib(self.resume_bytes)}"
            )
        else:
            self.reason = None
        return True
