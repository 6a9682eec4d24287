"""A synchronous face on the client, for scripts and WSGI apps.

    from roost import sync

    with sync.connect("roost://127.0.0.1:7420") as broker:
        broker.publish("emails", b"hello")
        for message in broker.receive("emails", max_messages=10, wait=5):
            message.ack()

The async client runs on an event loop in a background thread that this object owns; every
method submits the call there and waits for its result, so the API is exactly the async one
without ``await``. Deliveries and stream members come back wrapped the same way; ``consume``
is a plain iterator; ``producer`` gives a batching, idempotent producer whose ``send`` blocks.

One ``SyncBroker`` may be shared by threads (a WSGI server's workers): each call is handed to
its loop, where calls from several threads run at once (over the network they are pipelined on
one connection) and each thread waits for its own answer. ``close`` ends the calls still
waiting with ``ConnectionClosed`` and stops the thread; closing twice does nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterator
from ssl import SSLContext
from types import TracebackType
from typing import Any, Self

from roost.client.api import Client, StreamMember
from roost.client.embedded import open as open_embedded
from roost.client.network import DEFAULT_PORT
from roost.client.network import connect as connect_network
from roost.client.producer import Producer
from roost.client.subscriber import Delivery
from roost.clock import Clock
from roost.errors import ConnectionClosed


class _Bridge:
    """An event loop in a daemon thread, and a way to run coroutines on it and wait.

    Once ``stop`` has begun, ``run`` raises ``ConnectionClosed``, and so does every call still
    waiting on the loop when it stops: no thread is left blocked on a loop that is gone.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.closed = False
        self._lock = threading.Lock()  # orders submissions against ``stop``
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="roost-sync", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Awaitable[Any]) -> Any:
        with self._lock:
            if self.closed:
                if inspect.iscoroutine(coroutine):
                    coroutine.close()  # never started: no "never awaited" warning
                raise ConnectionClosed("the blocking client")
            future = asyncio.run_coroutine_threadsafe(_await(coroutine), self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self.closed:
                raise ConnectionClosed("the blocking client") from None
            raise

    def stop(self, last: Callable[[], Awaitable[None]]) -> None:
        """Close the async generators (``consume`` hands back what it leased), await
        ``last()`` (the client's ``aclose``), cancel whatever still runs, stop the thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            finishing = asyncio.run_coroutine_threadsafe(_finish(last), self.loop)
        try:
            finishing.result()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _anext(generator: Any) -> Any:
    # Called on the loop's thread, so the loop sees the generator start and can close it.
    return await generator.__anext__()


async def _finish(last: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.shutdown_asyncgens()
        await last()
    finally:
        rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)


class _Synced:
    """Wraps an object whose coroutine methods become blocking calls on the bridge."""

    def __init__(self, bridge: _Bridge, target: Any) -> None:
        self._bridge = bridge
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if inspect.isasyncgenfunction(attribute):
            return lambda *args, **kwargs: self._iterate(attribute(*args, **kwargs))
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return lambda *args, **kwargs: self._wrap(self._bridge.run(attribute(*args, **kwargs)))

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, Delivery | StreamMember):
            return _Synced(self._bridge, value)
        if isinstance(value, list) and value and isinstance(value[0], Delivery):
            return [_Synced(self._bridge, item) for item in value]
        return value

    def _iterate(self, generator: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    item = self._bridge.run(_anext(generator))
                except StopAsyncIteration:
                    return
                yield self._wrap(item)
        finally:
            if not self._bridge.closed:  # else ``stop`` closed it
                self._bridge.run(generator.aclose())

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


async def _nothing() -> None:
    pass


class _ClosedOnExit(_Synced):
    """``with thing:`` closes it on the way out, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SyncBroker(_ClosedOnExit):
    def __init__(self, opener: Callable[[], Awaitable[Client]]) -> None:
        bridge = _Bridge()
        try:
            client = bridge.run(opener())
        except BaseException:
            bridge.stop(_nothing)
            raise
        super().__init__(bridge, client)

    def producer(self, topic: str, **options: Any) -> SyncProducer:
        """A batching, idempotent ``Producer`` for ``topic`` (options as ``Producer.start``)
        whose ``send`` blocks until the message is durable. Threads sending at once share
        batches; a send retried across a reconnect is not stored twice."""
        producer = self._bridge.run(Producer.start(self._target, topic, **options))
        return SyncProducer(self._bridge, producer)

    def close(self) -> None:
        """Close the client, then stop its thread. Calls still waiting in other threads
        raise ``ConnectionClosed``, as does any call made after; closing twice does nothing."""
        self._bridge.stop(self._target.aclose)


class SyncProducer(_ClosedOnExit):
    """``Producer`` without ``await``: ``send``, ``flush``; ``close`` sends what is pending."""

    def close(self) -> None:
        self._bridge.run(self._target.aclose())


def connect(
    url: str = f"roost://127.0.0.1:{DEFAULT_PORT}",
    *,
    ssl: SSLContext | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    heartbeat: float | None = None,
) -> SyncBroker:
    """A blocking client of the broker at ``url`` (``roosts://``, the TLS options, the
    credentials and ``heartbeat`` as ``roost.connect``'s)."""
    opening = connect_network(
        url, ssl=ssl, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
        username=username, password=password, token=token, heartbeat=heartbeat,
    )  # fmt: skip
    return SyncBroker(opening._open)


def open(path: str, *, clock: Clock | None = None) -> SyncBroker:
    """A blocking client of a broker run in this process (on its own thread) at ``path``, on
    ``clock`` (default: the system's; a ``ManualClock`` in tests, see roost.testing)."""
    return SyncBroker(lambda: open_embedded(path, clock=clock)._open())
