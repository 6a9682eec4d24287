"""Group commit of metadata records: several commits' records share one ``fdatasync``.

A commit made inside ``MetadataStore.group_commit()`` writes its record (one ``pwrite``, on
the caller's thread) and applies it in memory, but returns before it is synced: it is
``Pending`` until a ``SyncJob`` that covers it has run (a thread's ``fdatasync`` of the
journal) and the store has been told how it ended (``MetadataStore.finish_sync``). While a
job runs, later commits write their records behind it; the next job covers them all. So the
records of commits arriving while a sync is in progress share the next one.

Rules (metadata.py keeps them):

- A pending commit is confirmed to nobody: its caller waits until ``durable`` (the server's
  ``DefinitionsSync``), and so does a publish confirm that could depend on it.
- A sync that fails fails every pending commit, those it covered and those written after it
  (the journal is cut back to the first of them, so theirs are gone too): each one's entries
  are put back as they were, newest first, its transaction's undos run, and its ``error`` is
  set. The store goes on taking commits unless cutting the journal back fails too.
- A commit that syncs itself (outside ``group_commit``) first waits for a job in progress,
  and its own ``fdatasync`` makes every pending record before it durable with it.
- A process crash loses nothing written: the records are in the OS. A power loss may lose or
  tear any record not yet synced, in any order (metadata_journal.py, the torn-tail rule).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from roost.errors import StorageFailure
from roost.storage.fs import LocalFS


class Pending:
    """One commit whose record is written and applied but not yet known to be durable."""

    __slots__ = ("before", "durable", "error", "in_tail", "position", "undo", "version")

    def __init__(
        self,
        version: int,
        position: int,
        before: list[tuple[str, str, Any]],
        undo: list[Callable[[], object]],
        in_tail: bool,
    ) -> None:
        self.version = version
        #: Where its record starts in the journal: a failed sync cuts the file back here.
        self.position = position
        #: (namespace, name, the stored value it replaced or None), in the order it put them.
        self.before = before
        #: Its transaction's undos (``Transaction.on_abort``), run if it is rolled back.
        self.undo = undo
        #: Its record was added to the tail of a snapshot job (taken out if rolled back).
        self.in_tail = in_tail
        self.durable = False
        self.error: StorageFailure | None = None

    @property
    def decided(self) -> bool:
        return self.durable or self.error is not None


class SyncJob:
    """One ``fdatasync`` of the journal, covering every pending commit up to ``last``; ``run``
    it once, on any thread. ``done`` once it ended; ``error`` is its ``OSError``, if any.
    ``finished``: the store has taken its outcome (``MetadataStore.finish_sync``)."""

    __slots__ = ("_claim", "_end", "_fd", "_fs", "elapsed_ns", "error", "finished", "last")

    def __init__(self, fs: LocalFS, fd: int, last: Pending) -> None:
        self._fs = fs
        self._fd = fd
        self.last = last
        self.error: OSError | None = None
        #: How long the sync itself took (0 until it ran).
        self.elapsed_ns = 0
        self.finished = False
        # Two plain locks, not an Event (a Condition and a lock, and a notify per job: 3% of
        # a create's CPU when each round is one create): whoever takes ``_claim`` runs it,
        # and ``_end`` is held until it ended.
        self._claim = threading.Lock()
        self._end = threading.Lock()
        self._end.acquire()

    @property
    def done(self) -> bool:
        return not self._end.locked()

    def run(self) -> None:
        """Sync; nothing if another thread runs it already (a commit that must sync itself
        runs a job nobody started yet, and waits for one somebody did)."""
        if not self._claim.acquire(blocking=False):
            return
        started_ns = time.perf_counter_ns()
        try:
            self._fs.fdatasync(self._fd)
        except OSError as e:
            self.error = e
        finally:
            self.elapsed_ns = time.perf_counter_ns() - started_ns
            self._end.release()

    def abandon(self) -> None:
        """Make sure it does not run after this (``error`` says so), or wait for the thread
        running it to end. Blocking only in that case."""
        if self._claim.acquire(blocking=False):
            self.error = OSError("not run: the store was closed first")
            self._end.release()
        else:
            with self._end:
                pass

    def wait(self) -> None:
        """Run it here if no thread has yet, and wait for it to end. Blocking."""
        self.run()
        if not self.done:
            with self._end:
                pass
