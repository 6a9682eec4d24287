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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from ssl import SSLContext
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from roost.client.api import Client, Headers, StreamMember
from roost.client.codecs import Headers as DeliveredHeaders
from roost.client.codecs import Serializer
from roost.client.durations import Seconds
from roost.client.embedded import open as open_embedded
from roost.client.network import DEFAULT_PORT
from roost.client.network import connect as connect_network
from roost.client.producer import Producer
from roost.client.subscriber import Delivery
from roost.clock import Clock
from roost.core.groups import Membership
from roost.core.inspection import Peeked
from roost.core.model import DEFAULT_MAX_DELIVERIES, Message, SubscriptionSpec
from roost.core.policies import Overflow
from roost.core.publishing import Outgoing, Published
from roost.core.redrive import RedriveTask
from roost.core.retry import RetryPolicy
from roost.core.routing import BindingSpec, ExchangeKind, ExchangeSpec
from roost.core.stats import StreamStats, SubscriptionStats
from roost.errors import ConnectionClosed
from roost.receipt import Receipt
from roost.storage import TopicInfo

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")


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

    def run(self, coroutine: Awaitable[T]) -> T:
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


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _anext(iterator: AsyncIterator[T]) -> T:
    # Called on the loop's thread, so the loop sees the generator start and can close it.
    return await anext(iterator)


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


class SyncDelivery:
    """A ``Delivery`` whose ``ack``, ``nack``, ``reject`` and ``extend`` block."""

    __slots__ = ("_bridge", "delivery")

    def __init__(self, bridge: _Bridge, delivery: Delivery) -> None:
        self._bridge = bridge
        #: The async delivery this one settles through.
        self.delivery = delivery

    @property
    def topic(self) -> str:
        return self.delivery.topic

    @property
    def subscription(self) -> str:
        return self.delivery.subscription

    @property
    def message(self) -> Message:
        return self.delivery.message

    @property
    def partition(self) -> int:
        return self.delivery.partition

    @property
    def offset(self) -> int:
        return self.delivery.offset

    @property
    def key(self) -> bytes | None:
        return self.delivery.key

    @property
    def value(self) -> bytes:
        return self.delivery.value

    @property
    def headers(self) -> DeliveredHeaders:
        """(name, value) pairs, also readable by name: ``headers["trace-id"]``, ``.get``."""
        return self.delivery.headers

    @property
    def timestamp_ms(self) -> int:
        return self.delivery.timestamp_ms

    @property
    def delivery_count(self) -> int:
        return self.delivery.delivery_count

    @property
    def receipt(self) -> Receipt:
        return self.delivery.receipt

    def text(self) -> str:
        """The value as UTF-8 text (``UnicodeDecodeError`` if it is not)."""
        return self.delivery.text()

    def json(self) -> Any:
        """The value decoded from JSON (``ValueError`` if it is not JSON)."""
        return self.delivery.json()

    def decode(self, kind: type[T]) -> T:
        """The value (JSON) as ``kind`` (a msgspec Struct, dataclass, TypedDict or pydantic
        model); ``ValueError`` naming what did not fit."""
        return self.delivery.decode(kind)

    def ack(self) -> None:
        """Done: it will not be delivered again. ``LeaseExpired`` if the lease ran out."""
        self._bridge.run(self.delivery.ack())

    def nack(self, delay: Seconds | None = None, error: str | None = None) -> None:
        """Failed: deliver again after ``delay`` seconds (default: the retry policy), or move
        it to the dead-letter topic once it has been delivered ``max_deliveries`` times."""
        self._bridge.run(self.delivery.nack(delay, error))

    def reject(self, error: str | None = None) -> None:
        """Poison: move it to the dead-letter topic now, whatever its delivery count."""
        self._bridge.run(self.delivery.reject(error))

    def extend(self, seconds: Seconds) -> None:
        """Keep the lease for ``seconds`` more, from now."""
        self._bridge.run(self.delivery.extend(seconds))

    def settled(self, refused: Sequence[Receipt] = ()) -> None:
        """It was acked or nacked elsewhere (``SyncBroker.ack``): see ``Delivery.settled``."""
        self.delivery.settled(refused)

    def __repr__(self) -> str:
        return f"<sync {self.delivery!r}>"


class SyncStreamMember:
    """A ``StreamMember`` whose calls block; ``stream`` is a plain iterator."""

    def __init__(self, bridge: _Bridge, member: StreamMember) -> None:
        self._bridge = bridge
        self._target = member

    @property
    def member_id(self) -> str:
        return self._target.member_id

    @property
    def partitions(self) -> tuple[int, ...]:
        return self._target.partitions

    def heartbeat(self) -> Membership:
        """Tell the group this member is alive; its membership (assignment, generation)."""
        return self._bridge.run(self._target.heartbeat())

    def fetch(self, max_records: int = 500, wait: Seconds = 0.0) -> list[Message]:
        """Records from the member's partitions, waiting up to ``wait`` seconds for some."""
        return self._bridge.run(self._target.fetch(max_records, wait))

    def stream(self, max_records: int = 1000, wait: Seconds = 1.0) -> Iterator[list[Message]]:
        """Batches of records, forever, the next fetch on its way while a batch is used."""
        return _iterate(self._bridge, self._target.stream(max_records, wait), _same)

    def commit(self, offsets: dict[int, int] | None = None) -> None:
        """Commit ``offsets`` (partition -> next offset), or what was fetched so far."""
        self._bridge.run(self._target.commit(offsets))

    def seek(self, partition: int, to: int | Literal["earliest", "latest"]) -> int:
        """Read ``partition`` from ``to`` on; the offset it will read next."""
        return self._bridge.run(self._target.seek(partition, to))

    def seek_to_time(self, partition: int, timestamp_ms: int) -> int:
        """Read ``partition`` from its first record at or after ``timestamp_ms``."""
        return self._bridge.run(self._target.seek_to_time(partition, timestamp_ms))

    def leave(self) -> None:
        """Leave the group: its partitions go to the other members at once."""
        self._bridge.run(self._target.leave())

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


def _same(item: U) -> U:
    return item


def _iterate(bridge: _Bridge, iterable: AsyncIterable[U], wrap: Callable[[U], V]) -> Iterator[V]:
    """``iterable`` as a blocking iterator; closing it (``break``, the end of a ``for``) closes
    the async one on its loop (``consume`` puts back what it never handed out)."""
    iterator = aiter(iterable)
    try:
        while True:
            try:
                item = bridge.run(_anext(iterator))
            except StopAsyncIteration:
                return
            yield wrap(item)
    finally:
        closing = getattr(iterator, "aclose", None)
        if closing is not None and not bridge.closed:  # else ``stop`` closed it
            bridge.run(closing())


async def _nothing() -> None:
    pass


class _ClosedOnExit:
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
    """The client without ``await``: every method of ``roost.Client`` (checked against it by
    tests/unit/test_sync_api.py), blocking until its answer. Deliveries come back as
    ``SyncDelivery``, stream members as ``SyncStreamMember``; ``consume`` is a plain iterator.
    ``subscribe`` (an async context manager) has no blocking twin: ``consume`` is it."""

    def __init__(self, opener: Callable[[], Awaitable[Client]]) -> None:
        bridge = _Bridge()
        try:
            client = bridge.run(opener())
        except BaseException:
            bridge.stop(_nothing)
            raise
        self._bridge = bridge
        #: The async client every call goes through, on the bridge's loop.
        self._target = client

    @property
    def protocol_version(self) -> int:
        return self._target.protocol_version

    @property
    def blocked(self) -> str | None:
        """Why the broker has stopped reading publishers, or None (``Client.blocked``)."""
        return self._target.blocked

    def _delivery(self, delivery: Delivery) -> SyncDelivery:
        return SyncDelivery(self._bridge, delivery)

    # -- topics ---------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        *,
        partitions: int = 1,
        durability: Literal["always", "interval", "never"] = "always",
        retention: Seconds | None = None,
        retention_bytes: int | None = None,
        max_record_bytes: int = 1024 * 1024,
        max_backlog: int | None = None,
        max_backlog_bytes: int | None = None,
        overflow: Overflow = "reject",
        block_timeout: Seconds = 5.0,
        cleanup: Literal["delete", "compact", "compact,delete"] = "delete",
        tombstone_retention: Seconds | None = None,
        dead_letter_dropped: bool = False,
    ) -> TopicInfo:
        """As ``Client.create_topic``: a declare, ``TopicExists`` for other settings."""
        return self._bridge.run(self._target.create_topic(
            name, partitions=partitions, durability=durability, retention=retention,
            retention_bytes=retention_bytes, max_record_bytes=max_record_bytes,
            max_backlog=max_backlog, max_backlog_bytes=max_backlog_bytes, overflow=overflow,
            block_timeout=block_timeout, cleanup=cleanup, tombstone_retention=tombstone_retention,
            dead_letter_dropped=dead_letter_dropped,
        ))  # fmt: skip

    def delete_topic(self, name: str) -> None:
        self._bridge.run(self._target.delete_topic(name))

    def list_topics(self) -> list[str]:
        return self._bridge.run(self._target.list_topics())

    def describe_topic(self, name: str) -> TopicInfo:
        return self._bridge.run(self._target.describe_topic(name))

    # -- queues and subscriptions -----------------------------------------------------------

    def create_queue(
        self,
        name: str,
        *,
        fifo: bool = False,
        partitions: int = 1,
        visibility_timeout: Seconds = 30.0,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = "",
        delay: Seconds = 0.0,
        durability: Literal["always", "interval", "never"] = "always",
        max_backlog: int | None = None,
        overflow: Overflow = "reject",
        block_timeout: Seconds = 5.0,
        retention: Seconds | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        message_ttl: Seconds | None = None,
        dead_letter_dropped: bool = False,
    ) -> SubscriptionSpec:
        """As ``Client.create_queue``: a declare, ``ConfigConflict`` for other settings."""
        return self._bridge.run(self._target.create_queue(
            name, fifo=fifo, partitions=partitions, visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries, dead_letter=dead_letter, delay=delay,
            durability=durability, max_backlog=max_backlog, overflow=overflow,
            block_timeout=block_timeout, retention=retention, retry=retry,
            rate_limit=rate_limit, rate_burst=rate_burst, message_ttl=message_ttl,
            dead_letter_dropped=dead_letter_dropped,
        ))  # fmt: skip

    def delete_queue(self, name: str) -> None:
        self._bridge.run(self._target.delete_queue(name))

    def create_subscription(
        self,
        topic: str,
        name: str,
        *,
        mode: Literal["stream", "queue", "keyed"] = "queue",
        start: Literal["earliest", "latest"] = "latest",
        visibility_timeout: Seconds = 30.0,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = "",
        delay: Seconds = 0.0,
        retry: RetryPolicy | None = None,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        message_ttl: Seconds | None = None,
    ) -> SubscriptionSpec:
        """As ``Client.create_subscription``: a declare."""
        return self._bridge.run(self._target.create_subscription(
            topic, name, mode=mode, start=start, visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries, dead_letter=dead_letter, delay=delay, retry=retry,
            rate_limit=rate_limit, rate_burst=rate_burst, message_ttl=message_ttl,
        ))  # fmt: skip

    def delete_subscription(self, topic: str, name: str) -> None:
        self._bridge.run(self._target.delete_subscription(topic, name))

    def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionSpec]:
        return self._bridge.run(self._target.list_subscriptions(topic))

    def stats(self, topic: str, subscription: str | None = None) -> SubscriptionStats | StreamStats:
        return self._bridge.run(self._target.stats(topic, subscription))

    def queue_stats(self, topic: str, subscription: str | None = None) -> SubscriptionStats:
        """``stats`` of a `queue` or `keyed` subscription, typed as such."""
        return self._bridge.run(self._target.queue_stats(topic, subscription))

    def stream_stats(self, topic: str, group: str) -> StreamStats:
        """``stats`` of a `stream` subscription (a consumer group), typed as such."""
        return self._bridge.run(self._target.stream_stats(topic, group))

    def peek(
        self,
        topic: str,
        subscription: str | None = None,
        *,
        max_messages: int = 10,
        partition: int | None = None,
    ) -> list[Peeked]:
        """What a queue holds, without a lease or a delivery counted."""
        return self._bridge.run(
            self._target.peek(topic, subscription, max_messages=max_messages, partition=partition)
        )

    def purge(self, topic: str, subscription: str | None = None) -> int:
        return self._bridge.run(self._target.purge(topic, subscription))

    def redrive(
        self,
        dead_letter_topic: str,
        *,
        source_topic: str | None = None,
        key: bytes | None = None,
        error_contains: str | None = None,
        headers: dict[str, bytes] | None = None,
        rate: float = 100.0,
        to: str | None = None,
    ) -> int:
        """Move dead letters back (all, or those matching every filter); how many moved."""
        return self._bridge.run(self._target.redrive(
            dead_letter_topic, source_topic=source_topic, key=key,
            error_contains=error_contains, headers=headers, rate=rate, to=to,
        ))  # fmt: skip

    def start_redrive(
        self,
        dead_letter_topic: str,
        *,
        source_topic: str | None = None,
        key: bytes | None = None,
        error_contains: str | None = None,
        headers: dict[str, bytes] | None = None,
        rate: float = 100.0,
        to: str | None = None,
    ) -> RedriveTask:
        """``redrive`` as a task in the background; answered at once."""
        return self._bridge.run(self._target.start_redrive(
            dead_letter_topic, source_topic=source_topic, key=key,
            error_contains=error_contains, headers=headers, rate=rate, to=to,
        ))  # fmt: skip

    def redrive_tasks(self, dead_letter_topic: str | None = None) -> list[RedriveTask]:
        return self._bridge.run(self._target.redrive_tasks(dead_letter_topic))

    def cancel_redrive(self, dead_letter_topic: str, task_id: str) -> RedriveTask:
        return self._bridge.run(self._target.cancel_redrive(dead_letter_topic, task_id))

    # -- exchanges --------------------------------------------------------------------------

    def declare_exchange(
        self, name: str, kind: ExchangeKind, *, alternate: str | None = None
    ) -> ExchangeSpec:
        return self._bridge.run(self._target.declare_exchange(name, kind, alternate=alternate))

    def delete_exchange(self, name: str) -> None:
        self._bridge.run(self._target.delete_exchange(name))

    def list_exchanges(self) -> list[ExchangeSpec]:
        return self._bridge.run(self._target.list_exchanges())

    def bind(
        self,
        exchange: str,
        topic: str,
        *,
        key: str = "",
        headers: dict[str, bytes | None] | None = None,
        match: Literal["all", "any"] = "all",
        weight: int = 1,
    ) -> bool:
        return self._bridge.run(self._target.bind(
            exchange, topic, key=key, headers=headers, match=match, weight=weight
        ))  # fmt: skip

    def unbind(
        self,
        exchange: str,
        topic: str,
        *,
        key: str = "",
        headers: dict[str, bytes | None] | None = None,
        match: Literal["all", "any"] = "all",
        weight: int = 1,
    ) -> bool:
        return self._bridge.run(self._target.unbind(
            exchange, topic, key=key, headers=headers, match=match, weight=weight
        ))  # fmt: skip

    def list_bindings(self, exchange: str | None = None) -> list[BindingSpec]:
        return self._bridge.run(self._target.list_bindings(exchange))

    # -- publishing -------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        value: object,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        delay: Seconds | None = None,
        deliver_at_ms: int | None = None,
        dedup_id: str | None = None,
        serializer: Serializer | None = None,
        ttl: Seconds | None = None,
    ) -> Published:
        """As ``Client.publish``: returns once the message is durable."""
        return self._bridge.run(self._target.publish(
            topic, value, key=key, headers=headers, partition=partition, delay=delay,
            deliver_at_ms=deliver_at_ms, dedup_id=dedup_id, serializer=serializer, ttl=ttl,
        ))  # fmt: skip

    def publish_batch(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        *,
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> list[Published]:
        return self._bridge.run(self._target.publish_batch(
            topic, messages, producer_id=producer_id, sequence=sequence
        ))  # fmt: skip

    def publish_to_exchange(
        self,
        exchange: str,
        routing_key: str,
        value: object,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        serializer: Serializer | None = None,
    ) -> list[Published]:
        return self._bridge.run(self._target.publish_to_exchange(
            exchange, routing_key, value, key=key, headers=headers, serializer=serializer
        ))  # fmt: skip

    def producer(
        self,
        topic: str,
        *,
        linger: float = 0.005,
        max_batch: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        producer_id: str | None = None,
    ) -> SyncProducer:
        """A batching, idempotent ``Producer`` for ``topic`` whose ``send`` blocks until the
        message is durable. Threads sending at once share batches; a send retried across a
        reconnect is not stored twice."""
        producer = self._bridge.run(Producer.start(
            self._target, topic, linger=linger, max_batch=max_batch,
            max_batch_bytes=max_batch_bytes, producer_id=producer_id,
        ))  # fmt: skip
        return SyncProducer(self._bridge, producer)

    # -- consuming --------------------------------------------------------------------------

    def receive(
        self,
        topic: str,
        subscription: str | None = None,
        *,
        max_messages: int = 1,
        wait: Seconds = 0.0,
        visibility_timeout: Seconds | None = None,
    ) -> list[SyncDelivery]:
        """Up to ``max_messages``, leased; waits up to ``wait`` seconds for the first."""
        deliveries = self._bridge.run(self._target.receive(
            topic, subscription, max_messages=max_messages, wait=wait,
            visibility_timeout=visibility_timeout,
        ))  # fmt: skip
        return [self._delivery(delivery) for delivery in deliveries]

    def consume(
        self, topic: str, subscription: str | None = None, *, prefetch: int = 100
    ) -> Iterator[SyncDelivery]:
        """Deliveries, forever. Leaving the loop puts back what arrived and was never
        handed out."""
        deliveries = self._target.consume(topic, subscription, prefetch=prefetch)
        return _iterate(self._bridge, deliveries, self._delivery)

    def ack(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], *, wait: bool = True
    ) -> list[Receipt]:
        return self._bridge.run(self._target.ack(topic, subscription, receipts, wait=wait))

    def nack(
        self,
        topic: str,
        subscription: str,
        receipts: Sequence[Receipt],
        delay: Seconds | None = None,
        error: str | None = None,
        *,
        undelivered: bool = False,
        reject: bool = False,
    ) -> list[Receipt]:
        return self._bridge.run(self._target.nack(
            topic, subscription, receipts, delay, error, undelivered=undelivered, reject=reject
        ))  # fmt: skip

    def extend(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], seconds: Seconds
    ) -> list[Receipt]:
        return self._bridge.run(self._target.extend(topic, subscription, receipts, seconds))

    def join(
        self, topic: str, group: str, *, member_id: str | None = None, client: str = ""
    ) -> SyncStreamMember:
        """Join the `stream` subscription ``group`` on ``topic``."""
        member = self._bridge.run(
            self._target.join(topic, group, member_id=member_id, client=client)
        )
        return SyncStreamMember(self._bridge, member)

    def close(self) -> None:
        """Close the client, then stop its thread. Calls still waiting in other threads
        raise ``ConnectionClosed``, as does any call made after; closing twice does nothing."""
        self._bridge.stop(self._target.aclose)

    def __repr__(self) -> str:
        return f"<sync {self._target!r}>"


class SyncProducer(_ClosedOnExit):
    """``Producer`` without ``await``: ``send``, ``flush``; ``close`` sends what is pending."""

    def __init__(self, bridge: _Bridge, producer: Producer) -> None:
        self._bridge = bridge
        self._target = producer

    def send(
        self,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Published:
        """Blocks until the batch holding it is durable; its offset."""
        return self._bridge.run(
            self._target.send(value, key=key, headers=headers, partition=partition)
        )

    def flush(self) -> None:
        self._bridge.run(self._target.flush())

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
