"""A ceiling on the descriptors storage keeps open: files are opened when used, and the least
recently used idle ones are closed to make room.

A segment holds its log file as two ``PooledFile`` handles (read-write, and the ``O_DSYNC`` one
the flusher writes through); ``pool.fd(handle)`` returns an open descriptor, opening the file
first if it is closed, and closing the least recently used idle files once more than
``max_open`` are open. Ten thousand idle queues then cost ``max_open`` descriptors, not twenty
thousand, and a queue used again gets its files back on its next read or write.

Rules kept here so callers need not remember them:

- A descriptor is used only on the thread that owns the pool (the event loop), right after
  ``fd`` returned it: nothing else runs in between that could close it. The flusher's thread
  uses descriptors its job captured on the loop; they stay open because their file is busy.
- A file is **busy** (its owner says so) while closing it could lose something: bytes written
  through it that no fsync has covered yet (a writeback error is reported to the descriptors
  open when it happens, so a descriptor opened afterwards would sync "successfully" and the
  broker would confirm what the disk dropped), or descriptors a flush job holds. Eviction skips
  busy files, so the pool may hold more than ``max_open`` for as long as they stay busy.
- Running out of descriptors when opening (EMFILE: the process limit, ENFILE: the system's,
  ENOMEM: kernel memory for one) closes idle files and tries once more; if it still fails, the
  open raises ``TooManyOpenFiles``: retriable, and not an ``OSError``, so no caller mistakes it
  for a disk that failed a write. Nothing was changed by the operation that asked.
"""

from __future__ import annotations

import errno
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable

from roost.errors import TooManyOpenFiles
from roost.storage.fs import LocalFS

#: What ``open`` fails with when descriptors, not the disk, ran out.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
#: The smallest ceiling a broker takes: a flush keeps a few files busy at once.
MIN_MAX_OPEN = 8

log = logging.getLogger("roost.storage")


class PooledFile:
    """One file as the pool sees it: its path, how to open it, and its descriptor (-1: closed).

    Hashed by identity: the pool keeps open handles in an ``OrderedDict`` in use order.
    """

    __slots__ = ("busy", "fd", "opener", "path")

    def __init__(self, path: str, opener: Callable[[str], int], busy: Callable[[], bool]) -> None:
        self.path = path
        self.opener = opener
        self.busy = busy
        self.fd = -1


class FdPool:
    def __init__(self, fs: LocalFS, max_open: int | None = None) -> None:
        """``max_open``: the ceiling (None: none, for tools and for a repair's own files)."""
        self.fs = fs
        self.max_open = max_open
        self._open: OrderedDict[PooledFile, None] = OrderedDict()  # least recently used first
        #: Counters for /metrics.
        self.opens = 0
        self.evictions = 0
        self.refused = 0  # opens that raised TooManyOpenFiles

    @property
    def open_count(self) -> int:
        return len(self._open)

    def fd(self, file: PooledFile) -> int:
        """An open descriptor for ``file``, opened (after closing idle ones) if need be.

        Raises ``TooManyOpenFiles`` when none can be had, or the ``OSError`` of any other
        failure to open (the file is gone, EIO...)."""
        if file.fd >= 0:
            self._open.move_to_end(file)
            return file.fd
        return self._open_file(file)

    def _open_file(self, file: PooledFile) -> int:
        if self.max_open is not None and len(self._open) >= self.max_open:
            self._evict(len(self._open) - self.max_open + 1)
        try:
            fd = file.opener(file.path)
        except OSError as e:
            if e.errno not in OUT_OF_DESCRIPTORS:
                raise
            # The process ran out before the pool's ceiling did (connections, a ceiling set
            # above the limit): what is idle here goes, so that this open can succeed.
            if not self._evict(max(1, len(self._open) // 8)):
                raise self._refuse(file, e) from e
            try:
                fd = file.opener(file.path)
            except OSError as again:
                if again.errno not in OUT_OF_DESCRIPTORS:
                    raise
                raise self._refuse(file, again) from again
        file.fd = fd
        self._open[file] = None
        self.opens += 1
        return fd

    def _refuse(self, file: PooledFile, error: OSError) -> TooManyOpenFiles:
        self.refused += 1
        reason = errno.errorcode.get(error.errno or 0, str(error.errno))
        return TooManyOpenFiles(file.path, f"{reason} ({error.strerror})", len(self._open))

    def make_room(self, count: int) -> int:
        """Close up to ``count`` idle files, for an open made elsewhere (a flush's directory);
        how many were closed."""
        return self._evict(count)

    def _evict(self, count: int) -> int:
        """Close up to ``count`` idle files, least recently used first; how many were closed.

        A busy file met on the way is moved to the recent end (it is in use), so that the next
        eviction does not look at it again first."""
        closed = 0
        for _ in range(len(self._open)):
            if closed >= count:
                break
            file = next(iter(self._open))
            if file.busy():
                self._open.move_to_end(file)
                continue
            self.close(file)
            closed += 1
        self.evictions += closed
        return closed

    def close(self, file: PooledFile) -> None:
        """Close ``file``'s descriptor if it is open (its owner is done with it, or eviction)."""
        fd = file.fd
        if fd < 0:
            return
        del self._open[file]
        file.fd = -1
        try:
            self.fs.close(fd)
        except OSError as e:
            # The descriptor is released all the same (Linux); nothing unsynced was on it.
            log.warning("closing %s: %s", file.path, e)

    def adopt(self, file: PooledFile, previous: FdPool) -> None:
        """Move ``file``, open or not, from ``previous`` into this pool (a repaired log's
        segments, opened by the repair's thread in a pool of their own)."""
        if file.fd < 0:
            return
        del previous._open[file]
        self._open[file] = None
        if self.max_open is not None and len(self._open) > self.max_open:
            self._evict(len(self._open) - self.max_open)


def default_max_open(soft_limit: int) -> int:
    """The ceiling for a process whose soft RLIMIT_NOFILE is ``soft_limit``: a quarter of it
    (at least 64) is left to connections, listeners and files opened for a moment (snapshots,
    metadata, index hints, directories)."""
    return max(MIN_MAX_OPEN, soft_limit - max(64, soft_limit // 4))


def soft_fd_limit() -> int:
    """This process's soft RLIMIT_NOFILE (an unlimited one counts as a million)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft
