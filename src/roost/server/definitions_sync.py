"""Group commit of definitions: creates arriving together share one metadata sync.

    sync = DefinitionsSync(engine.metadata)
    spec = await sync.durably(lambda: door.create_queue("q-1"))   # answered once durable
    await sync.durable()        # every definition committed so far is durable (or failed)

``durably`` runs a definition command inside the store's ``group_commit`` (storage/
metadata_group.py): its record is written and applied in this turn of the loop, and the
command returns before the record is synced. The caller awaits its durability here: one task
at a time syncs the journal (``MetadataStore.start_sync``), covering every record written
before the round began, so N clients creating at once pay about one ``fdatasync`` per round
instead of N.

Where a round runs, as the flusher's do (server/flusher.py, measured there): **on the loop**,
in the turn after the creates that made it due (the creates read in one turn all join it),
while the disk is quick: on 2 busy cores the hand-off to a thread and back costs more CPU and
latency than a small ``fdatasync``. **In a thread** while the disk is slow (a round on the
loop took ``SLOW_SYNC_NS`` or more, until a round is that quick again): the loop then goes on
serving, and the creates that arrive meanwhile wait for the next round, which covers them all.

A command that fails is answered only once what was pending before it is settled too: an
error such as "topic exists" may name a create that is not durable yet. A failed sync fails
every pending definition with ``StorageFailure`` (the store rolls them back); the next one
starts afresh.

A publish to a topic whose create is pending must not be confirmed first (a power loss would
keep the message and lose its topic): ``Host.confirm`` awaits that create (server/host.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from roost.errors import StorageFailure
from roost.storage.metadata import MetadataStore
from roost.storage.metadata_group import Pending

T = TypeVar("T")

#: A round on the loop that took this long means the disk is slow now: rounds go to a thread
#: until one is that quick again (the flusher's rule, server/flusher.py).
SLOW_SYNC_NS = 4_000_000


class DefinitionsSync:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        #: Commits awaited, each with the future of whoever awaits it.
        self._waiters: list[tuple[Pending, asyncio.Future[None]]] = []
        #: The task syncing rounds while anyone waits; None when nobody does.
        self._task: asyncio.Task[None] | None = None
        #: Syncs started by this (the tests count rounds with it).
        self.rounds = 0
        #: The last round took ``SLOW_SYNC_NS`` or more: rounds run in a thread meanwhile.
        self.disk_slow = False

    @property
    def pending(self) -> bool:
        """Some committed definition is not durable yet."""
        return self._store.pending is not None

    async def durably(self, define: Callable[[], T]) -> T:
        """``define()`` with its definitions group-committed; returns once they are durable.
        ``StorageFailure`` if their sync failed (they are undone)."""
        try:
            with self._store.group_commit():
                return define()
        finally:
            await self.durable()

    async def durable(self, pending: Pending | None = None) -> None:
        """Wait until ``pending`` (default: every definition committed so far) is durable;
        ``StorageFailure`` if the sync that covered it failed."""
        pending = pending or self._store.pending
        if pending is None or pending.durable:
            return
        if pending.error is not None:
            raise pending.error
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((pending, future))
        if self._task is None:
            self._task = asyncio.create_task(self._sync_rounds(), name="roost-definitions-sync")
        await future

    async def _sync_rounds(self) -> None:
        """Sync round after round while anyone waits, each covering what was written before
        it began; answer each waiter as its commit is decided."""
        try:
            while self._waiters:
                job = self._store.start_sync()
                if job is not None:
                    self.rounds += 1
                    try:
                        if self.disk_slow:
                            await asyncio.to_thread(job.run)
                        else:
                            job.run()
                    finally:
                        # Even when cancelled (a shutdown): the thread may still be syncing, so
                        # wait for it before the store goes on (``wait`` blocks until then).
                        job.wait()
                        self._store.finish_sync(job)
                    self.disk_slow = job.elapsed_ns >= SLOW_SYNC_NS
                self._answer_decided()
                if job is None and self._waiters:
                    # Nothing left to sync, yet someone waits: a commit that synced itself
                    # decided theirs (answered above), or the store failed: say so.
                    self._fail_waiters()
        finally:
            self._task = None
            self._fail_waiters()

    def _answer_decided(self) -> None:
        waiting: list[tuple[Pending, asyncio.Future[None]]] = []
        for pending, future in self._waiters:
            if not pending.decided:
                waiting.append((pending, future))
            elif not future.done():
                if pending.error is not None:
                    future.set_exception(pending.error)
                else:
                    future.set_result(None)
        self._waiters = waiting

    def _fail_waiters(self) -> None:
        """Anyone still waiting once no sync will come: told so, never left hanging."""
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(
                    StorageFailure(
                        f"syncing metadata journal {self._store.journal_path}",
                        self._store.failure or OSError("the broker is closing"),
                    )
                )

    async def aclose(self) -> None:
        """Let the rounds in progress end (the store's ``close`` syncs what is left)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
