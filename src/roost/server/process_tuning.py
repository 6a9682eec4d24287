"""What ``roost serve`` sets on its own process: the allocator, the garbage collector and the
open files limit.

Only the server's process, never a client's: these are choices a program makes for itself.

- **glibc's allocator** hands every block above 128 KiB to the kernel with mmap and back with
  munmap when it is freed, and trims the heap's free top likewise. A broker answering a replay
  reads, encodes and sends megabyte buffers one after another, so each one paid for 256 fresh,
  zeroed pages: page faults were two thirds of the broker's CPU on a replay. Keeping blocks up
  to 32 MiB (twice the largest frame) in the heap, and up to 64 MiB of free heap untrimmed,
  makes those buffers reuse memory already mapped. The cost is that much memory kept after a
  burst, never more.
- **The garbage collector** runs a young collection every 700 container allocations; the
  message path allocates lists and tuples that reference counting frees at once, so most of
  those runs find nothing. The young generation is made larger (50,000). What matters more
  is what a collection has to look at: every container the collector tracks, in the
  generations it collects. An idle queue is ~75 of them (its topic, logs, segments, indexes,
  pooled files, subscription), so at 100,000 queues a full collection walked 7.5 million
  objects (3.2 s, the event loop stopped) and the middle one 200-300 ms, each finding
  nothing: definitions live as long as the broker. So the broker keeps them out of sight:

  - ``tune_collector`` freezes (``gc.freeze``) what is alive before the broker starts;
  - recovery runs with the collector off (``collector_paused``: opening 100,000 queues made
    several full collections of a growing heap), then one full collection and a freeze
    (``freeze_survivors``): the definitions recovered are never looked at again;
  - after definition changes, once a burst of them ends (the metadata's version did not move
    for a whole second, as the host's storage watch sees it) or every
    ``FREEZE_AFTER_CHANGES`` versions during a long one, the same again
    (``DefinitionFreezer``). The full collection costs what was made since the last freeze,
    not what exists.

  The young generations then hold only what was made since the last freeze: messages,
  connections, recent definitions. What freezing costs: a cycle among frozen objects is never
  collected. So nothing a deleted definition leaves may need the collector: a deleted queue's
  topic, logs, segments and journal are freed by reference counting alone (the engine drops
  a deleted subscription's journal; a closed segment's pooled files no longer refer back to
  it; tests/unit/test_process_tuning.py checks it with the collector off). Garbage cycles
  made before a freeze are collected by the full collection just before it.
- **The open files limit** (RLIMIT_NOFILE): its soft value is often 1,024 while the hard one,
  which a process may raise its soft value to without privileges, is far higher. Each client
  connection takes a descriptor and storage keeps up to ``max_open_files`` more (see
  storage/fd_pool.py), so the soft limit is raised to the hard one at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("roost.serve")

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
#: Young-generation threshold (allocations); the older two keep CPython's defaults.
GC_YOUNG_THRESHOLD = 50_000
#: During a burst of definition changes that does not stop (a create every second, for ever),
#: what it made is frozen every this many metadata versions (a create is one). A faster burst
#: is frozen at every poll (once a second): the full collection before a freeze costs
#: ~0.7 us per container made since the last one (~75 per queue), as much as a young
#: collection of the same objects would.
FREEZE_AFTER_CHANGES = 250


class _Tuning:
    #: ``tune_collector`` ran: this process is a broker that chose its collector's policy.
    collector = False


def tune_allocator() -> bool:
    """Keep large freed blocks mapped (glibc only); True if the allocator took the settings."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: its allocator has its own policy
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    took: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    took = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and took
    if not took:
        log.warning("roost: the allocator refused mallopt; large buffers stay mmap'd")
    return took


def tune_collector() -> None:
    """Freeze what is alive now and collect the young generation less often; from now on
    ``collector_paused`` and ``freeze_survivors`` act (they do nothing in a process that did
    not ask for this: an embedded broker, a test)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    _Tuning.collector = True


def collector_tuned() -> bool:
    return _Tuning.collector


@contextmanager
def collector_paused() -> Iterator[None]:
    """No collection in the block (recovery: everything it makes lives on), then one full
    collection and a freeze of what survived."""
    if not _Tuning.collector or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        freeze_survivors()


def freeze_survivors() -> float:
    """Collect everything not frozen, then freeze what is left; the seconds it took (logged
    when it is long enough to be seen). Nothing in a process that did not tune its collector."""
    if not _Tuning.collector:
        return 0.0
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    took_s = time.perf_counter() - started
    # Not gc.get_freeze_count(): it walks every frozen object (~100 ms at 100,000 queues).
    log.log(
        logging.INFO if took_s >= 0.1 else logging.DEBUG,
        "roost: collected and froze what was alive in %.0f ms",
        took_s * 1000,
    )
    return took_s


class DefinitionFreezer:
    """Freezes what definition changes left alive once a burst of them is over.

    ``poll`` is called about once a second (the host's storage watch) with the metadata's
    version, which every committed definition change moves: a version that moved since the
    last freeze and then stood still for one whole poll means the burst ended; one that moved
    ``burst_changes`` or more means a burst long enough to freeze in the middle of. No timer
    per change, nothing done while the version stands still.
    """

    def __init__(
        self,
        version: int,
        freeze: Callable[[], object] = freeze_survivors,
        burst_changes: int = FREEZE_AFTER_CHANGES,
    ) -> None:
        self._freeze = freeze
        self.burst_changes = burst_changes
        self._frozen_at = version  # the version when the last freeze ran
        self._seen = version  # the version the last poll saw
        self.freezes = 0

    def poll(self, version: int) -> bool:
        """Freeze if a burst of changes ended or has run long; True if it froze."""
        settled = version == self._seen
        self._seen = version
        if version == self._frozen_at:
            return False
        if not settled and version - self._frozen_at < self.burst_changes:
            return False
        self._freeze()
        self._frozen_at = version
        self.freezes += 1
        return True


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``): what the
    thresholds above keep for reuse, once the broker is over its memory budget and needs it
    to be seen free. True if glibc released something."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; (soft before, soft now), both logged.

    A hard limit of "unlimited" is not a value the kernel takes for the soft one (it is capped
    by ``fs.nr_open``): then the soft limit goes as high as the kernel allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else _nr_open()
    raised = soft
    if soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            raised = wanted
        except (ValueError, OSError) as e:
            log.warning("roost: could not raise the open files limit from %d: %s", soft, e)
    log.info(
        "roost: open files limit %d (soft, was %d; hard %s)",
        raised, soft, "unlimited" if hard == resource.RLIM_INFINITY else hard,
    )  # fmt: skip
    return soft, raised


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20
