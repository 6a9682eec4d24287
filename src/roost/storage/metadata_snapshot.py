"""Writing a metadata snapshot off the event loop.

A snapshot of 100,000 queues is ~100 MB of JSON: encoding, writing and syncing it inline
stopped the loop for seconds. So the store (metadata.py) hands a ``SnapshotJob`` a frozen view
of its document and runs it in a thread of its own while commits go on appending journal
records; the job only ever touches the snapshot's files, never the journal.

The frozen view is a shallow copy of each namespace: entries are never changed in place by
the store (a put replaces the value, a reader gets a deep copy), so the values can be shared
with the live document while the job reads them.

The job writes what ``msgspec.json.encode(_Document(...))`` would, byte for byte, but in
pieces of ``CHUNK_ENTRIES`` entries, each encoded and ``pwrite``-n before the next: the
encoder holds the GIL for the whole of one call, so one call over the whole document would
stop the loop as surely as doing it there. Between pieces the loop gets the GIL back (the
interpreter's switch interval, 5 ms), and the writes and syncs release it.

Steps (each through the ``fs`` seam, so crash tests see them):

1. the current snapshot, if any, is copied to ``metadata.json.prev`` (atomic replace);
2. the new one is written to ``metadata.json.tmp``, fsynced, renamed over ``metadata.json``,
   and the directory fsynced: from here a reopen reads it, and skips the journal's records at
   or below its version.

A crash before step 2's rename leaves the old snapshot and the whole journal; after it, the
new snapshot and a journal whose older records are skipped. Either opens to the same state.
The store then, on the loop, replaces the journal with the records committed since the view
was taken (see ``MetadataStore._finish_snapshot``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from roost.storage.fs import LocalFS

#: Entries encoded per piece: ~1 KB each for a queue's definitions, so ~0.5 MB and well under
#: a millisecond of the encoder holding the GIL.
CHUNK_ENTRIES = 500

_encode = msgspec.json.encode


def encode_pieces(
    format_version: int, version: int, namespaces: dict[str, dict[str, Any]]
) -> Iterator[bytes]:
    """The snapshot document's JSON in pieces: joined, exactly ``msgspec.json.encode`` of the
    ``_Document``."""
    yield b'{"format":%d,"version":%d,"namespaces":{' % (format_version, version)
    for i, (namespace, entries) in enumerate(namespaces.items()):
        yield (b"," if i else b"") + _encode(namespace) + b":{"
        names = list(entries)
        for start in range(0, len(names), CHUNK_ENTRIES):
            piece = _encode({name: entries[name] for name in names[start : start + CHUNK_ENTRIES]})
            yield (b"," if start else b"") + piece[1:-1]
        yield b"}"
    yield b"}}"


class SnapshotJob:
    """One snapshot of ``namespaces`` at ``version`` to write to ``path``; ``run`` it once, on
    any thread. ``done`` is set when it ended; then ``written`` says whether the snapshot is
    durable (``size``: its length in bytes) and ``error`` is what failed, if an ``OSError``."""

    def __init__(
        self,
        fs: LocalFS,
        path: str,
        format_version: int,
        version: int,
        namespaces: dict[str, dict[str, Any]],
        previous_suffix: str,
    ) -> None:
        self.fs = fs
        self.path = path
        self.format_version = format_version
        self.version = version
        self._namespaces = namespaces
        self._previous = path + previous_suffix
        #: Journal records committed after ``version`` while the job ran, in order (the store
        #: appends them; they are what the journal keeps once the snapshot is durable).
        self.tail: list[bytes] = []
        self.done = threading.Event()
        self.error: OSError | None = None
        self.written = False
        self.size = 0
        self._claimed = False
        self._claim_lock = threading.Lock()

    def run(self) -> None:
        """Write the snapshot; nothing if another thread runs it already (``close`` runs a
        job nobody started, and waits for one somebody did)."""
        with self._claim_lock:
            claimed, self._claimed = self._claimed, True
        if claimed:
            return
        try:
            if self.fs.exists(self.path):
                self.fs.replace_atomically(self._previous, self.fs.read_file(self.path))
            self.size = self._write()
            self.written = True
        except OSError as e:
            self.error = e
        finally:
            self._namespaces = {}  # the view is not kept alive once written
            self.done.set()

    def _write(self) -> int:
        temp = f"{self.path}.tmp"
        fd = self.fs.open_rw(temp)
        position = 0
        try:
            self.fs.truncate(fd, 0)
            for piece in encode_pieces(self.format_version, self.version, self._namespaces):
                self.fs.pwrite(fd, piece, position)
                position += len(piece)
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
        self.fs.rename(temp, self.path)
        self.fs.fsync_dir(os.path.dirname(self.path) or ".")
        return position


def in_a_thread(job: SnapshotJob) -> None:
    """The store's default way to run a job: a daemon thread of its own."""
    threading.Thread(target=job.run, name="roost-metadata-snapshot", daemon=True).start()


#: How a store runs its snapshot jobs (tests run them inline, or later, to place a crash).
Runner = Callable[[SnapshotJob], None]
