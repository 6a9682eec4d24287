"""``roost.open(path)``: the whole broker in this process, behind the client's API.

    async with roost.open("./data") as broker:
        await broker.create_queue("emails")
        await broker.publish("emails", b"hello", key=b"customer-7")
        for message in await broker.receive("emails", max_messages=10, wait=20):
            ...                                   # do the work
            await message.ack()

Times are seconds (floats) here, as Python users expect; the core counts milliseconds. The
network client (``roost.connect``) will offer exactly these methods, so code moves between the
two by changing one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Literal

import msgspec

from roost.clock import Clock
from roost.core.groups import Membership
from roost.core.model import DEFAULT_MAX_DELIVERIES, Message, SubscriptionSpec
from roost.core.policies import Overflow, TopicPolicy
from roost.core.publishing import Outgoing, Published
from roost.core.redrive import RedriveFilter
from roost.core.retry import RetryPolicy
from roost.core.routing import BindingSpec, ExchangeKind, ExchangeSpec
from roost.core.stats import StreamStats, SubscriptionStats
from roost.core.streams import StreamSubscription
from roost.errors import InvalidConfig, LeaseExpired
from roost.server.host import Host
from roost.storage import TopicConfig, TopicInfo

__all__ = ["Delivery", "EmbeddedBroker", "Outgoing", "Published", "StreamMember", "open"]


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


class _Credit:
    """``consume``'s prefetch: deliveries handed out and not yet acked or nacked."""

    def __init__(self, prefetch: int) -> None:
        self.prefetch = prefetch
        self.unsettled = 0
        self._freed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.prefetch - self.unsettled

    def give_back(self) -> None:
        self.unsettled -= 1
        self._freed.set()

    async def wait_for_room(self) -> None:
        while self.free <= 0:
            self._freed.clear()
            await self._freed.wait()


class Delivery:
    """A received message, leased to you until you ack, nack, or the lease runs out."""

    __slots__ = ("_credit", "_host", "message", "subscription")

    def __init__(
        self, host: Host, subscription: str, message: Message, credit: _Credit | None = None
    ) -> None:
        self._host = host
        self.subscription = subscription
        self.message = message
        self._credit = credit

    def _settled(self) -> None:
        if self._credit is not None:
            self._credit.give_back()
            self._credit = None

    topic = property(lambda self: self.message.topic)
    partition = property(lambda self: self.message.partition)
    offset = property(lambda self: self.message.offset)
    key = property(lambda self: self.message.key)
    value = property(lambda self: self.message.value)
    headers = property(lambda self: self.message.headers)
    timestamp_ms = property(lambda self: self.message.timestamp_ms)
    delivery_count = property(lambda self: self.message.delivery_count)
    receipt = property(lambda self: self.message.receipt)

    async def ack(self) -> None:
        """Done: it will not be delivered again. ``LeaseExpired`` if the lease ran out."""
        refused = self._host.broker.ack(self.topic, self.subscription, [self.receipt])
        self._settled()
        self._host.settled(self.topic)
        self._refused(refused)

    async def nack(self, delay: float | None = None, error: str | None = None) -> None:
        """Failed: deliver again after ``delay`` seconds (default: the retry policy), or move
        it to the dead-letter topic once it has been delivered ``max_deliveries`` times."""
        refused = self._host.broker.nack(
            self.topic, self.subscription, [self.receipt], _ms(delay), error
        )
        self._host.wake_timer()
        self._settled()
        self._refused(refused)

    async def extend(self, seconds: float) -> None:
        """Keep the lease for ``seconds`` more, from now."""
        refused = self._host.broker.extend(
            self.topic, self.subscription, [self.receipt], round(seconds * 1000)
        )
        self._refused(refused)

    def _refused(self, refused: Sequence[object]) -> None:
        if refused:
            raise LeaseExpired(self.topic, self.subscription, self.offset)

    def __repr__(self) -> str:
        return (
            f"<Delivery {self.topic}/{self.partition}@{self.offset} "
            f"delivery {self.delivery_count}, {len(self.value)} bytes>"
        )


class StreamMember:
    """One member of a consumer group: fetch in order, commit, seek.

    member = await broker.join("clicks", "analytics")
    while True:
        records = await member.fetch(max_records=500, wait=5)
        ...
        await member.commit()          # everything fetched so far
    """

    def __init__(self, host: Host, topic: str, group: str, membership: Membership) -> None:
        self._host = host
        self.topic = topic
        self.group = group
        self.membership = membership
        self._fetched: dict[int, int] = {}

    @property
    def member_id(self) -> str:
        return self.membership.member_id

    @property
    def partitions(self) -> tuple[int, ...]:
        return self.membership.partitions

    def _stream(self) -> StreamSubscription:
        return self._host.broker.stream(self.topic, self.group)

    async def heartbeat(self) -> Membership:
        """Stay in the group; learn a new assignment (a rebalance) if there was one."""
        self._apply(self._stream().heartbeat(self.member_id, self.membership.generation))
        return self.membership

    def _apply(self, membership: Membership) -> None:
        if membership.generation != self.membership.generation:
            self._fetched = {p: o for p, o in self._fetched.items() if p in membership.partitions}
        self.membership = membership

    async def fetch(self, max_records: int = 500, wait: float = 0.0) -> list[Message]:
        """The next records of this member's partitions (waiting up to ``wait`` seconds)."""
        await self.heartbeat()
        records = await self._host.fetch(
            self.topic, self.group, self.member_id, self.membership.generation, max_records, wait
        )
        for record in records:
            self._fetched[record.partition] = record.offset + 1
        return records

    async def commit(self, offsets: dict[int, int] | None = None) -> None:
        """Commit ``offsets`` (partition -> next offset to read), or everything fetched."""
        offsets = dict(self._fetched) if offsets is None else offsets
        self._stream().commit(self.member_id, self.membership.generation, offsets)
        self._host.settled(self.topic)

    async def seek(self, partition: int, to: int | Literal["earliest", "latest"]) -> int:
        """Read ``partition`` next from ``to``; returns the offset. Commit to make it stick."""
        return self._stream().seek(self.member_id, self.membership.generation, partition, to)

    async def seek_to_time(self, partition: int, timestamp_ms: int) -> int:
        """Read ``partition`` next from its first record at or after ``timestamp_ms``."""
        stream = self._stream()
        return stream.seek_to_timestamp(
            self.member_id, self.membership.generation, partition, timestamp_ms
        )

    async def leave(self) -> None:
        """Leave the group now (rather than at the session timeout): a rebalance follows."""
        self._stream().leave(self.member_id)


class EmbeddedBroker:
    def __init__(self, host: Host) -> None:
        self._host = host

    # -- topics ---------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        *,
        partitions: int = 1,
        durability: Literal["always", "interval", "never"] = "always",
        retention: float | None = None,
        retention_bytes: int | None = None,
        max_record_bytes: int = 1024 * 1024,
        max_backlog: int | None = None,
        max_backlog_bytes: int | None = None,
        overflow: Overflow = "reject",
        block_timeout: float = 5.0,
    ) -> TopicInfo:
        """A topic of ``partitions`` logs. ``retention`` (seconds) and ``retention_bytes``
        delete old segments; without them a topic keeps everything. ``max_backlog`` (messages)
        and ``max_backlog_bytes`` bound what subscriptions have not consumed yet; past them a
        publish is refused (``overflow="reject"``: ``BacklogFull``), waits up to
        ``block_timeout`` seconds for room (``"block"``), or drops the oldest
        (``"drop_oldest"``)."""
        config = msgspec.convert(
            {"partitions": partitions, "durability": durability,
             "retention_ms": _ms(retention), "retention_bytes": retention_bytes,
             "max_record_bytes": max_record_bytes},
            TopicConfig,
        )  # fmt: skip
        policy = TopicPolicy(
            max_backlog_messages=max_backlog, max_backlog_bytes=max_backlog_bytes,
            overflow=overflow, block_timeout_ms=round(block_timeout * 1000),
        )  # fmt: skip
        return self._host.broker.create_topic(name, config, policy)

    async def list_topics(self) -> list[str]:
        return self._host.broker.list_topics()

    async def describe_topic(self, name: str) -> TopicInfo:
        return self._host.broker.describe_topic(name)

    async def delete_topic(self, name: str) -> None:
        self._host.broker.delete_topic(name)

    # -- queues and subscriptions ---------------------------------------------------------

    async def create_queue(
        self,
        name: str,
        *,
        fifo: bool = False,
        partitions: int = 1,
        visibility_timeout: float = 30.0,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = "",
        delay: float = 0.0,
        durability: Literal["always", "interval", "never"] = "always",
        max_backlog: int | None = None,
        overflow: Overflow = "reject",
        block_timeout: float = 5.0,
        retention: float | None = None,
    ) -> SubscriptionSpec:
        """A topic plus one subscription of the same name. ``fifo``: per key in order, one in
        flight per key. Dead letters go to ``<name>.dlq`` unless ``dead_letter`` names another
        topic (or is None, with ``max_deliveries=None``: retry forever). Consumed messages are
        deleted; ``retention`` (seconds) also deletes unconsumed ones older than that, as
        SQS's retention period does."""
        return self._host.broker.create_queue(
            name, fifo=fifo, partitions=partitions,
            visibility_timeout_ms=round(visibility_timeout * 1000),
            max_deliveries=max_deliveries, dead_letter=dead_letter,
            delay_ms=round(delay * 1000), durability=durability, retention_ms=_ms(retention),
            policy=TopicPolicy(
                max_backlog_messages=max_backlog, overflow=overflow,
                block_timeout_ms=round(block_timeout * 1000), retain_until_consumed=True,
            ),
        )  # fmt: skip

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages (its dead-letter topic stays)."""
        self._host.broker.delete_queue(name)

    async def create_subscription(
        self,
        topic: str,
        name: str,
        *,
        mode: Literal["stream", "queue", "keyed"] = "queue",
        start: Literal["earliest", "latest"] = "latest",
        visibility_timeout: float = 30.0,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = "",
        delay: float = 0.0,
        retry: RetryPolicy | None = None,
    ) -> SubscriptionSpec:
        """Read ``topic`` as ``name``: every subscription of a topic sees every message.

        A `queue` or `keyed` subscription dead-letters a message after ``max_deliveries``, to
        ``<topic>.<name>.dlq`` (made if missing) unless ``dead_letter`` names another topic;
        ``dead_letter=None`` needs ``max_deliveries=None``: retrying forever is said, not
        defaulted.
        """
        if mode == "stream":
            dead_letter, max_deliveries = None, None
        elif dead_letter == "":
            dead_letter = f"{topic}.{name}.dlq"
            if dead_letter not in await self.list_topics():
                await self.create_topic(dead_letter)
        spec = SubscriptionSpec(
            name=name, topic=topic, mode=mode, start=start,
            visibility_timeout_ms=round(visibility_timeout * 1000),
            max_deliveries=max_deliveries, dead_letter=dead_letter,
            delay_ms=round(delay * 1000), retry=retry or RetryPolicy(),
        )  # fmt: skip
        return self._host.broker.create_subscription(spec)

    async def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionSpec]:
        return self._host.broker.list_subscriptions(topic)

    async def delete_subscription(self, topic: str, name: str) -> None:
        self._host.broker.delete_subscription(topic, name)

    # -- exchanges ------------------------------------------------------------------------

    async def declare_exchange(
        self, name: str, kind: ExchangeKind, *, alternate: str | None = None
    ) -> ExchangeSpec:
        return self._host.broker.declare_exchange(ExchangeSpec(name, kind, alternate))

    async def delete_exchange(self, name: str) -> None:
        self._host.broker.delete_exchange(name)

    async def list_exchanges(self) -> list[ExchangeSpec]:
        return self._host.broker.list_exchanges()

    async def bind(
        self,
        exchange: str,
        topic: str,
        *,
        key: str = "",
        headers: dict[str, bytes | None] | None = None,
        match: Literal["all", "any"] = "all",
        weight: int = 1,
    ) -> bool:
        return self._host.broker.bind(BindingSpec(exchange, topic, key, headers, match, weight))

    async def unbind(
        self,
        exchange: str,
        topic: str,
        *,
        key: str = "",
        headers: dict[str, bytes | None] | None = None,
        match: Literal["all", "any"] = "all",
        weight: int = 1,
    ) -> bool:
        return self._host.broker.unbind(BindingSpec(exchange, topic, key, headers, match, weight))

    async def list_bindings(self, exchange: str | None = None) -> list[BindingSpec]:
        return self._host.broker.list_bindings(exchange)

    # -- publish --------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
        delay: float | None = None,
        deliver_at_ms: int | None = None,
        dedup_id: str | None = None,
    ) -> Published:
        """Publish one message; returns where it landed once it is durable. A ``dedup_id``
        seen on this topic within its dedup window (5 minutes by default) is confirmed with
        the first placement and not appended again."""
        message = Outgoing(
            value=value, key=key, headers=tuple(headers), partition=partition,
            delay_ms=_ms(delay), deliver_at_ms=deliver_at_ms, dedup_id=dedup_id,
        )  # fmt: skip
        [published] = await self._host.publish(topic, [message])
        return published

    async def publish_batch(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        *,
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> Sequence[Published]:
        """Publish many messages in one go (one append per partition), results in order.

        An idempotent producer passes its id and the sequence of the first message (its
        messages to a partition are numbered 0, 1, 2, ...; a batch goes to one partition): a
        retry of a batch is confirmed with the offsets it got the first time.
        """
        return await self._host.publish(topic, messages, producer_id, sequence)

    async def publish_to_exchange(
        self,
        exchange: str,
        routing_key: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Sequence[Published]:
        """Publish through an exchange: one entry per topic the message was routed to."""
        message = Outgoing(value=value, key=key, headers=tuple(headers))
        return await self._host.publish_to_exchange(exchange, routing_key, [message])

    # -- consume --------------------------------------------------------------------------

    async def receive(
        self,
        topic: str,
        subscription: str | None = None,
        *,
        max_messages: int = 1,
        wait: float = 0.0,
        visibility_timeout: float | None = None,
    ) -> list[Delivery]:
        """Lease up to ``max_messages``; wait up to ``wait`` seconds (20 at most) for one.

        ``subscription`` defaults to the topic's name: the queue of that name.
        """
        name = subscription or topic
        messages = await self._host.receive(
            topic, name, max_messages, wait, _ms(visibility_timeout)
        )
        return [Delivery(self._host, name, message) for message in messages]

    async def consume(
        self, topic: str, subscription: str | None = None, *, prefetch: int = 100
    ) -> AsyncIterator[Delivery]:
        """Deliveries, forever, long-polling when there are none.

        ``prefetch`` is the credit: at most that many deliveries are out, unacked, at once;
        when they all are, ``consume`` waits for an ``ack`` or ``nack`` before it leases more.
        """
        if type(prefetch) is not int or prefetch < 1:
            raise InvalidConfig("prefetch", prefetch, "a positive int")
        name = subscription or topic
        credit = _Credit(prefetch)
        unhanded: list[Message] = []
        try:
            while True:
                await credit.wait_for_room()
                unhanded = await self._host.receive(topic, name, credit.free, 20.0)
                credit.unsettled += len(unhanded)
                while unhanded:
                    yield Delivery(self._host, name, unhanded.pop(0), credit)
        finally:
            # Closed (break, aclose): what was leased but never handed out goes back at once,
            # as a closing channel requeues its unacked deliveries.
            if unhanded:
                self._host.broker.nack(topic, name, [m.receipt for m in unhanded], delay_ms=0)

    async def redrive(
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
        """Move dead letters back to their source topic (or to ``to``), at most ``rate`` a
        second: all of them, or those matching every filter given. Returns how many moved."""
        where = RedriveFilter(
            source_topic=source_topic, key=key, error_contains=error_contains, headers=headers
        )
        return await self._host.redrive(dead_letter_topic, where, rate, to)

    async def join(
        self, topic: str, group: str, *, member_id: str | None = None, client: str = ""
    ) -> StreamMember:
        """Join the `stream` subscription ``group`` on ``topic``; the broker assigns partitions.

        Heartbeat (any call on the member counts) within the session timeout, or the member is
        removed and its partitions go to the others.
        """
        membership = self._host.broker.stream(topic, group).join(member_id, client)
        return StreamMember(self._host, topic, group, membership)

    async def stats(
        self, topic: str, subscription: str | None = None
    ) -> SubscriptionStats | StreamStats:
        return self._host.broker.stats(topic, subscription or topic)

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._host.aclose()

    async def __aenter__(self) -> EmbeddedBroker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Opening:
    """``roost.open(path)``: awaitable, and an async context manager."""

    def __init__(self, path: str, clock: Clock | None) -> None:
        self._path = path
        self._clock = clock
        self._broker: EmbeddedBroker | None = None

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._open().__await__()

    async def _open(self) -> EmbeddedBroker:
        return EmbeddedBroker(await Host.start(self._path, self._clock))

    async def __aenter__(self) -> EmbeddedBroker:
        self._broker = await self._open()
        return self._broker

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._broker is not None:
            await self._broker.aclose()


def open(path: str, *, clock: Clock | None = None) -> _Opening:
    """Run a broker in this process on the data directory at ``path``.

    ``async with roost.open(path) as broker: ...`` or ``broker = await roost.open(path)``
    (then ``await broker.aclose()``).
    """
    return _Opening(path, clock)
