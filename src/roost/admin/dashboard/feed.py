"""The dashboard's live feed: one snapshot per interval, shared by every browser watching.

    feed = Feed(host.door(TRUSTED).readings, tick=lambda: asyncio.sleep(1.0))
    async for event in feed.events():   # bytes: server-sent events, one snapshot each
        ...
    await feed.aclose()                 # ends every stream, stops the task

Rules:

- One task reads the broker once per interval, however many browsers listen: N browsers cost
  one ``read_broker`` and one JSON encoding per interval, not N.
- The task runs only while someone listens. The first listener starts it and gets a snapshot
  at once; when the last one leaves, it is cancelled. A restarted feed has no previous
  reading, so its first rates are unknown rather than averaged over the idle time.
- A listener joining a running feed gets the latest event at once, then every new one.
- Each listener has a queue of ``QUEUED_EVENTS``; a browser that does not keep up loses the
  oldest. Every snapshot is complete, so it loses chart points, nothing more.
- The reading runs on the event loop, synchronously, as every admin handler does: the core
  has no locks.
- A reading that fails is a bug: it is logged with its traceback and every stream ends. The
  browsers' EventSource reconnects after ``RETRY_MS``, which starts the feed again.
- ``tick`` is what waits between two readings (``asyncio.sleep`` in the server); tests pass
  one they drive, so nothing waits for time to pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

import msgspec

from roost.admin.dashboard.snapshot import snapshot
from roost.core.readings import Reading

log = logging.getLogger("roost.admin")

#: Events waiting for one slow browser before the oldest is dropped.
QUEUED_EVENTS = 8
#: How long a browser waits before reconnecting after a stream ended.
RETRY_MS = 2_000
#: The first bytes of every stream: the reconnect delay (a server-sent event field).
PREAMBLE = b"retry: %d\n\n" % RETRY_MS

_Queue = asyncio.Queue[bytes | None]  # None: the stream ends


class Feed:
    def __init__(self, read: Callable[[], Reading], tick: Callable[[], Awaitable[None]]) -> None:
        self._read = read
        self._tick = tick
        self._listeners: set[_Queue] = set()
        self._task: asyncio.Task[None] | None = None
        #: Cancelled tasks not yet finished; ``aclose`` waits for them.
        self._stopping: set[asyncio.Task[None]] = set()
        self._latest: bytes | None = None
        self._closed = False

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def events(self) -> AsyncGenerator[bytes, None]:
        """The stream one browser reads: ``PREAMBLE``, then a snapshot per interval, until
        the browser leaves (the generator is closed) or the feed closes."""
        if self._closed:
            return
        queue: _Queue = asyncio.Queue(QUEUED_EVENTS)
        self._listeners.add(queue)
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="roost-dashboard-feed")
        elif self._latest is not None:
            queue.put_nowait(self._latest)
        try:
            yield PREAMBLE
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._listeners.discard(queue)
            if not self._listeners:
                self._stop()

    async def aclose(self) -> None:
        """End every stream (each browser's response finishes) and stop the task."""
        self._closed = True
        self._end_streams()
        self._stop()
        if self._stopping:
            await asyncio.wait(self._stopping)

    async def _run(self) -> None:
        previous: Reading | None = None
        while True:
            try:
                current = self._read()
                event = encode(snapshot(previous, current))
            except Exception:
                log.exception("the dashboard feed could not read the broker; its streams end")
                self._end_streams()
                return
            previous, self._latest = current, event
            for queue in self._listeners:
                _offer(queue, event)
            await self._tick()

    def _stop(self) -> None:
        task, self._task, self._latest = self._task, None, None
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _end_streams(self) -> None:
        for queue in self._listeners:
            _offer(queue, None)


def encode(value: object) -> bytes:
    """One server-sent event whose data is ``value`` as JSON (one line: msgspec's JSON never
    holds a raw newline)."""
    return b"data: " + msgspec.json.encode(value) + b"\n\n"


def _offer(queue: _Queue, event: bytes | None) -> None:
    if queue.full():
        queue.get_nowait()  # the oldest goes: the newest snapshot says everything it did
    queue.put_nowait(event)
