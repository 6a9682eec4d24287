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
  those runs find nothing. Objects alive before the broker starts (modules, classes) are moved
  out of its sight with ``gc.freeze``, and the young generation is made larger.
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

log = logging.getLogger("roost.serve")

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
#: Young-generation threshold (allocations); the older two keep CPython's defaults.
GC_YOUNG_THRESHOLD = 50_000


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
    """Freeze what is alive now and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


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
