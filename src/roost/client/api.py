"""The client API, one implementation for both ways of reaching a broker.

    async with roost.open("./data") as broker:              # in this process
    async with roost.connect("roost://host:7420") as broker:  # over the network
        await broker.create_queue("emails")
        await broker.publish("emails", b"hello", key=b"customer-7")
        for message in await broker.receive("emails", max_messages=10, wait=20):
            ...                                   # do the work
            await message.ack()

Every method builds a native-protocol request and hands it to a backend: ``LocalBackend`` runs
it against a host in this process, ``NetworkBackend`` sends it over a connection. So code moves
between the two by changing one line, and the embedded mode exercises exactly the mapping the
server uses. Times are seconds (floats) here, as Python users expect; the wire counts ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from roost.client import tracing
from roost.client.batches import decode_fetched
from roost.client.closing import ClosedOnExit
from roost.client.codecs import Serializer, encode, with_content_type
from roost.client.durations import Seconds, as_seconds
from roost.client.subscriber import (
    AckCoalescer,
    Delivery,
    PushStream,
    Subscriber,
    message_from_wire,
)
from roost.client.tracing import Pairs
from roost.core.groups import Membership
from roost.core.inspection import Peeked
from roost.core.model import DEFAULT_MAX_DELIVERIES, Message, SubscriptionSpec, check_delay
from roost.core.policies import Overflow
from roost.core.publishing import Outgoing, Published
from roost.core.rate_limits import check_rate_limit
from roost.core.redrive import RedriveTask
from roost.core.retry import DEFAULT_RETRY, RetryPolicy
from roost.core.routing import BindingSpec, ExchangeKind, ExchangeSpec
from roost.core.stats import StreamStats, SubscriptionStats
from roost.errors import (
    InvalidConfig,
    InvalidRequest,
    NotOwner,
    ProtocolError,
    RoostError,
    StaleGeneration,
    UnknownMember,
)
from roost.protocols.native import messages as m
from roost.receipt import Receipt
from roost.storage import TopicInfo
from roost.storage.validation import check_types

R = TypeVar("R", bound=m.Response)
#: A message's headers: (name, value) pairs (a name may repeat), or a mapping of them.
Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes]
#: The protocol version from which a nack can give messages back uncounted.
UNDELIVERED_VERSION = m.ADDED_IN[m.Nack]["undelivered"]
#: The protocol version from which a client may peek, purge, and give a queue a retry policy.
PEEK_VERSION = m.MESSAGE_ADDED_IN[m.Peek]
#: Topic settings ``cleanup`` and ``tombstone_retention_ms`` (compaction).
COMPACTION_VERSION = 8
QUEUE_RETRY_VERSION = PEEK_VERSION
REJECT_VERSION = m.ADDED_IN[m.Nack]["reject"]
REDRIVE_TASK_VERSION = m.MESSAGE_ADDED_IN[m.StartRedrive]
#: From this version a subscription's settings may carry a delivery rate limit.
RATE_LIMIT_VERSION = REDRIVE_TASK_VERSION
#: The protocol version from which messages may expire (a TTL per message or per queue).
TTL_VERSION = m.ADDED_IN[m.Out]["ttl_ms"]
T = TypeVar("T")


class Backend(Protocol):
    async def call(self, request: m.Request) -> m.Response: ...

    def tell(self, request: m.Ack) -> None:
        """Send an ``Ack(answer=False)`` and wait for nothing (version 3)."""
        ...

    async def subscribe(self, request: m.Subscribe) -> PushStream: ...

    @property
    def protocol_version(self) -> int:
        """The native protocol version spoken: which requests the other side knows."""
        ...

    async def aclose(self) -> None: ...


def _answered(request: m.Request, value: object, kind: type[T]) -> T:
    """``value``, a ``Described``'s, as ``request``'s answer struct, then as ``kind``; an
    answer that is not one is the broker breaking the protocol: ``ProtocolError``."""
    builtins = msgspec.to_builtins(value, builtin_types=(bytes,))
    try:
        answer = msgspec.convert(builtins, m.answer_type(request, builtins))
        return msgspec.convert(msgspec.to_builtins(answer, builtin_types=(bytes,)), kind)
    except msgspec.ValidationError as e:
        name = type(request).__name__
        raise ProtocolError("roost", f"the answer to {name} is not its struct: {e}") from None


def _rate_settings(rate_limit: float | None, rate_burst: int | None) -> dict[str, Any]:
    """A rate limit's settings fields, checked here as the broker checks them; none sent
    when there is none (an older broker refuses a field it does not know)."""
    if rate_limit is None and rate_burst is None:
        return {}
    check_rate_limit(rate_limit, rate_burst)
    return {"rate_limit_per_s": rate_limit, "rate_burst": rate_burst}


def _retry_settings(retry: RetryPolicy) -> m.RetrySettings:
    return m.RetrySettings(
        kind=retry.kind, base_ms=retry.base_ms, max_ms=retry.max_ms, jitter=retry.jitter
    )


#: The longest time the wire can carry in ms and Python's floats hold exactly (2**53 ms: ~285,000
#: years); the broker refuses far less (its own bounds), but it must be able to read the value.
MAX_WIRE_MS = 2**53


def seconds_to_ms(name: str, value: Seconds) -> int:
    """``value`` as ms for the wire: a finite, non-negative duration, or ``InvalidConfig``
    naming the argument as the caller wrote it (nan, inf and 1e20 used to fail deep inside
    the encoder, or close the connection)."""
    seconds = as_seconds(name, value)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise InvalidConfig(name, seconds, "a finite number of seconds, >= 0")
    ms = round(seconds * 1000)
    if ms > MAX_WIRE_MS:
        raise InvalidConfig(name, seconds, f"at most {MAX_WIRE_MS // 1000} seconds")
    return ms


def _ms(seconds: Seconds | None, name: str) -> int | None:
    return None if seconds is None else seconds_to_ms(name, seconds)


def _delay_ms(seconds: Seconds | None) -> int | None:
    """A delay in seconds as the broker takes it: ms, within the bound every delay has (so a
    value the wire could not even carry is refused here with the same error)."""
    if seconds is None:
        return None
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return check_delay(seconds)  # type: ignore[arg-type]  # refused, naming the bound
    return check_delay(round(seconds * 1000))


def _pairs(headers: Headers) -> tuple[tuple[str, bytes], ...]:
    """Headers as (name, value) pairs, from pairs or a mapping."""
    if isinstance(headers, Mapping):
        return tuple(headers.items())
    return tuple(headers)


def _out(message: Outgoing, traced: Callable[[Pairs], Pairs]) -> m.Out:
    check_types(message.value, message.key, message.headers)
    return m.Out(
        message.value, message.key, list(traced(tuple(message.headers))), message.partition,
        message.deliver_at_ms, message.delay_ms, message.dedup_id, message.ttl_ms,
    )  # fmt: skip


#: A fetch's answer: stored batches (protocol version 2) or decoded records (version 1).
FetchAnswer = m.Batches | m.Records


class StreamMember:
    """One member of a consumer group: fetch in order, commit, seek.

    member = await broker.join("clicks", "analytics")
    records = await member.fetch(max_records=500, wait=5)
    await member.commit()          # everything fetched so far

    async with member.stream(max_records=1000) as batches:   # the next fetch always in flight
        async for batch in batches:
            ...
            await member.commit()  # everything handed out so far
    """

    def __init__(self, client: Client, topic: str, group: str, membership: Membership) -> None:
        self._client = client
        self.topic = topic
        self.group = group
        self.membership = membership
        #: partition -> the offset after the last record handed out: what ``commit`` commits.
        self._fetched: dict[int, int] = {}
        self._stream: StreamReader | None = None

    @property
    def member_id(self) -> str:
        return self.membership.member_id

    @property
    def partitions(self) -> tuple[int, ...]:
        return self.membership.partitions

    async def heartbeat(self) -> Membership:
        """Stay in the group; learn a new assignment (a rebalance) if there was one."""
        wire = await self._client.call(
            m.Heartbeat(self.topic, self.group, self.member_id, self.membership.generation),
            m.Membership,
        )
        return self._apply(wire)

    async def fetch(self, max_records: int = 500, wait: Seconds = 0.0) -> list[Message]:
        """The next records of this member's partitions (waiting up to ``wait`` seconds).

        A fetch is also a heartbeat: the answer carries the member's current assignment.
        """
        self._check_not_streaming("fetch")
        answer = await self._request_fetch(max_records, wait)
        self._apply(answer.membership)
        try:
            return self._hand_out(answer)
        except RoostError:
            await self._rewind([answer])
            raise

    def stream(self, max_records: int = 1000, wait: Seconds = 1.0) -> StreamReader:
        """Batches of the next records, forever, with the next fetch always in flight.

        ``async with member.stream() as batches: async for batch in batches: ...``. Each batch
        is what one ``fetch(max_records, wait)`` would return (empty answers are not handed
        out); the fetch after it is sent before the batch is handed out, so the broker reads
        while you work. ``commit()`` commits what was handed out, never what is in flight.
        While a stream is open, do not ``fetch`` or ``seek`` on this member: close the stream
        first (``aclose``, or leave the ``async with``); closing waits for the fetch in flight
        (``wait`` seconds at most) and moves the positions back to where the handed-out
        records end.
        """
        self._check_not_streaming("stream")
        if type(max_records) is not int or max_records < 1:
            raise InvalidConfig("max_records", max_records, "a positive int")
        self._stream = StreamReader(self, max_records, wait)
        return self._stream

    def _check_not_streaming(self, what: str) -> None:
        if self._stream is not None:
            raise InvalidRequest(f"{what} while this member's stream() is open: close it first")

    async def _request_fetch(self, max_records: int, wait: Seconds) -> FetchAnswer:
        args = (self.topic, self.group, self.member_id, self.membership.generation,
                max_records, seconds_to_ms("wait", wait))  # fmt: skip
        if self._client.protocol_version >= 2:
            return await self._client.call(m.FetchBatches(*args), m.Batches)
        return await self._client.call(m.Fetch(*args), m.Records)

    def _hand_out(self, answer: FetchAnswer) -> list[Message]:
        """The records of ``answer``, now counted as fetched (decoded whole before any is).

        A partition lost to a rebalance during a long poll is not committed from here: its
        new owner reads those records again (at-least-once).
        """
        owned = self.membership.partitions
        if isinstance(answer, m.Records):
            records = [message_from_wire(self.topic, record) for record in answer.records]
            for record in records:
                if record.partition in owned:
                    self._fetched[record.partition] = record.offset + 1
            return records
        records = []
        for fetched in answer.partitions:
            records += decode_fetched(self.topic, fetched)
        for fetched in answer.partitions:
            if fetched.partition in owned:
                self._fetched[fetched.partition] = fetched.next_offset
        return records

    async def _rewind(self, answers: Sequence[FetchAnswer]) -> None:
        """Put the positions back before the records of ``answers``, which were not handed
        out: the broker moved past them when it answered. A partition no longer owned needs
        nothing: its next owner starts from the commit."""
        first: dict[int, int] = {}
        for answer in answers:
            starts = (
                [(f.partition, f.first_offset) for f in answer.partitions]
                if isinstance(answer, m.Batches)
                else [(r.partition, r.offset) for r in answer.records]
            )
            for partition, offset in starts:
                first[partition] = min(offset, first.get(partition, offset))
        for partition, offset in sorted(first.items()):
            if partition in self.membership.partitions:
                with contextlib.suppress(StaleGeneration, NotOwner, UnknownMember):
                    await self._seek(partition, offset)

    def _apply(self, wire: m.Membership) -> Membership:
        membership = _membership(wire)
        if membership.generation != self.membership.generation:
            self._fetched = {p: o for p, o in self._fetched.items() if p in membership.partitions}
        self.membership = membership
        return membership

    async def commit(self, offsets: dict[int, int] | None = None) -> None:
        """Commit ``offsets`` (partition -> next offset to read), or everything fetched."""
        offsets = dict(self._fetched) if offsets is None else offsets
        await self._client.call(
            m.Commit(self.topic, self.group, self.member_id, self.membership.generation, offsets),
            m.Done,
        )

    async def seek(self, partition: int, to: int | Literal["earliest", "latest"]) -> int:
        """Read ``partition`` next from ``to``; returns the offset. Commit to make it stick."""
        self._check_not_streaming("seek")
        return await self._seek(partition, to)

    async def _seek(self, partition: int, to: int | Literal["earliest", "latest"]) -> int:
        wire = await self._client.call(
            m.Seek(self.topic, self.group, self.member_id, self.membership.generation,
                   partition, to),
            m.Position,
        )  # fmt: skip
        return wire.offset

    async def seek_to_time(self, partition: int, timestamp_ms: int) -> int:
        """Read ``partition`` next from its first record at or after ``timestamp_ms``."""
        self._check_not_streaming("seek_to_time")
        wire = await self._client.call(
            m.SeekToTime(self.topic, self.group, self.member_id, self.membership.generation,
                         partition, timestamp_ms),
            m.Position,
        )  # fmt: skip
        return wire.offset

    async def leave(self) -> None:
        """Leave the group now (rather than at the session timeout): a rebalance follows."""
        await self._client.call(m.Leave(self.topic, self.group, self.member_id), m.Done)


class StreamReader(ClosedOnExit):
    """``StreamMember.stream``: fetch N + 1 is on its way while fetch N's records are used.

    How it works: an answer is awaited, its assignment applied, the next fetch sent (it reaches
    the socket before this returns), and only then are the answer's records decoded and handed
    out, counted as fetched for ``commit``. The broker keeps each partition's position, so
    the fetch in flight reads on from where the last answer ended; a rebalance shows in the
    next answer's assignment, and a partition lost is dropped from what ``commit`` sends (a
    commit that races the rebalance is refused by the broker: ``StaleGeneration``).
    """

    def __init__(self, member: StreamMember, max_records: int, wait: Seconds) -> None:
        self._member = member
        self._max_records = max_records
        self._wait = wait
        self._next: asyncio.Task[FetchAnswer] | None = None
        self._closed = False

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> list[Message]:
        member = self._member
        while not self._closed:
            task = self._next or self._send()
            try:
                answer = await task
            finally:
                self._next = None
            member._apply(answer.membership)
            self._next = self._send()
            await asyncio.sleep(0)  # one step: the fetch is written before we hand out
            try:
                records = member._hand_out(answer)
            except RoostError:
                await self._close([answer])
                raise
            if records:
                return records
        raise StopAsyncIteration

    def _send(self) -> asyncio.Task[FetchAnswer]:
        return asyncio.ensure_future(self._member._request_fetch(self._max_records, self._wait))

    async def aclose(self) -> None:
        """Stop: wait for the fetch in flight and give its records back (positions move back
        to where the handed-out records end). The member may ``fetch`` and ``seek`` again."""
        await self._close([])

    async def _close(self, unused: list[FetchAnswer]) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._next = self._next, None
        try:
            if task is not None:
                try:
                    answer = await task
                except RoostError:
                    pass  # nothing was fetched, or the connection is gone with its state
                else:
                    self._member._apply(answer.membership)
                    unused.append(answer)
            await self._member._rewind(unused)
        finally:
            self._member._stream = None


def _membership(wire: m.Membership) -> Membership:
    return Membership(
        wire.member_id, wire.generation, tuple(wire.partitions), wire.session_timeout_ms
    )


class Client(ClosedOnExit):
    """A broker, in this process or across the network; see the module docstring."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.acks = AckCoalescer(self.ack)
        #: How ``publish`` sends a value that is neither bytes nor str (roost.client.codecs):
        #: None refuses it; "json" sends it as JSON. A call's ``serializer`` overrides it.
        self.serializer: Serializer | None = None

    @property
    def protocol_version(self) -> int:
        return self._backend.protocol_version

    @property
    def blocked(self) -> str | None:
        """Why the broker has stopped reading publishers (RabbitMQ's ``connection.blocked``:
        it is over its memory budget), or None. While it says so, ``publish`` waits before
        sending; consuming and acking go on. Always None embedded, and with a broker older
        than protocol version 5."""
        reason: str | None = getattr(self._backend, "blocked", None)
        return reason

    async def call(self, request: m.Request, expected: type[R]) -> R:
        response = await self._backend.call(request)
        if not isinstance(response, expected):
            raise TypeError(f"{type(request).__name__} answered {type(response).__name__}")
        return response

    async def _value(self, request: m.Request, kind: type[T]) -> T:
        """The answer of a definition request, checked as the wire's answer struct for it
        (``messages.ANSWERS``), then as the API's type ``kind``."""
        return _answered(request, (await self.call(request, m.Described)).value, kind)

    # -- topics ---------------------------------------------------------------------------

    async def create_topic(
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
        """A topic of ``partitions`` logs. ``retention`` (seconds) and ``retention_bytes``
        delete old segments; without them a topic keeps everything. ``max_backlog`` (messages)
        and ``max_backlog_bytes`` bound what subscriptions have not consumed yet; past them a
        publish is refused (``overflow="reject"``: ``BacklogFull``), waits up to
        ``block_timeout`` seconds for room (``"block"``), or drops the oldest
        (``"drop_oldest"``; with ``dead_letter_dropped``, protocol version 8, a copy of each
        to every subscription's dead-letter topic, ``x-roost-death-reason: overflow``).
        ``cleanup="compact"`` keeps the latest record per key (every
        record then needs a key; an empty value is a tombstone, kept ``tombstone_retention``
        seconds, a day by default); ``"compact,delete"`` also applies retention. Compaction
        needs a broker speaking protocol version 8."""
        config = m.TopicSettings(partitions=partitions, durability=durability,
                  retention_ms=_ms(retention, "retention"), retention_bytes=retention_bytes,
                  max_record_bytes=max_record_bytes)  # fmt: skip
        if cleanup != "delete" or tombstone_retention is not None:
            self._needs_version(COMPACTION_VERSION, "cleanup (compaction)")
            config.cleanup = cleanup
            if tombstone_retention is not None:
                config.tombstone_retention_ms = seconds_to_ms(
                    "tombstone_retention", tombstone_retention
                )
        policy = m.BacklogPolicy(
            max_backlog_messages=max_backlog, max_backlog_bytes=max_backlog_bytes,
            overflow=overflow, block_timeout_ms=seconds_to_ms("block_timeout", block_timeout),
            dead_letter_dropped=self._dead_letter_dropped(dead_letter_dropped),
        )  # fmt: skip
        return await self._value(m.CreateTopic(name, config, policy), TopicInfo)

    def _dead_letter_dropped(self, wanted: bool) -> bool | msgspec.UnsetType:
        """The setting as sent: not at all unless wanted (an older broker refuses the
        field), and then only to a broker that knows it."""
        if not wanted:
            return msgspec.UNSET
        self._needs_version(TTL_VERSION, "dead_letter_dropped=True")
        return True

    async def list_topics(self) -> list[str]:
        return await self._value(m.ListTopics(), list[str])

    async def describe_topic(self, name: str) -> TopicInfo:
        return await self._value(m.DescribeTopic(name), TopicInfo)

    async def delete_topic(self, name: str) -> None:
        await self.call(m.DeleteTopic(name), m.Done)

    # -- queues and subscriptions ---------------------------------------------------------

    async def create_queue(
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
        """A topic plus one subscription of the same name. ``fifo``: per key in order, one in
        flight per key. Dead letters go to ``<name>.dlq`` unless ``dead_letter`` names another
        topic (or is None, with ``max_deliveries=None``: retry forever). Consumed messages are
        deleted; ``retention`` (seconds) also deletes unconsumed ones older than that, as
        SQS's retention period does. ``retry`` says when a failed delivery comes again (a
        broker older than protocol version 7 cannot take it: ``ProtocolError``).
        ``message_ttl`` (seconds, RabbitMQ's ``x-message-ttl``): a message not delivered
        that long after its publish expires: it goes to the dead-letter topic with
        ``x-roost-death-reason: expired`` (protocol version 8). ``dead_letter_dropped``:
        ``overflow="drop_oldest"`` copies what it drops there (``overflow``; version 8)."""
        if retry is not None:
            self._needs_version(QUEUE_RETRY_VERSION, "create_queue(retry=...)")
        if rate_limit is not None or rate_burst is not None:
            self._needs_version(RATE_LIMIT_VERSION, "create_queue(rate_limit=...)")
        if message_ttl is not None:
            self._needs_version(TTL_VERSION, "create_queue(message_ttl=...)")
        options = m.QueueSettings(
            fifo=fifo, partitions=partitions,
            visibility_timeout_ms=seconds_to_ms("visibility_timeout", visibility_timeout),
            max_deliveries=max_deliveries, dead_letter=dead_letter,
            delay_ms=seconds_to_ms("delay", delay), durability=durability,
            retention_ms=_ms(retention, "retention"),
            policy=m.BacklogPolicy(max_backlog_messages=max_backlog, overflow=overflow,
                                   block_timeout_ms=seconds_to_ms("block_timeout", block_timeout),
                                   retain_until_consumed=True,
                                   dead_letter_dropped=self._dead_letter_dropped(
                                       dead_letter_dropped)),
            retry=msgspec.UNSET if retry is None else _retry_settings(retry),
            **_rate_settings(rate_limit, rate_burst),
            message_ttl_ms=msgspec.UNSET if message_ttl is None
            else seconds_to_ms("message_ttl", message_ttl),
        )  # fmt: skip
        return await self._value(m.CreateQueue(name, options), SubscriptionSpec)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages (its dead-letter topic stays)."""
        await self.call(m.DeleteQueue(name), m.Done)

    async def create_subscription(
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
        """Read ``topic`` as ``name``: every subscription of a topic sees every message.

        A `queue` or `keyed` subscription dead-letters a message after ``max_deliveries``, to
        ``<topic>.<name>.dlq`` (made if missing) unless ``dead_letter`` names another topic;
        ``dead_letter=None`` needs ``max_deliveries=None``: retrying forever is said, not
        defaulted. ``message_ttl`` (seconds; protocol version 8): as ``create_queue``'s.
        """
        if message_ttl is not None:
            self._needs_version(TTL_VERSION, "create_subscription(message_ttl=...)")
        if mode == "stream":
            dead_letter, max_deliveries = None, None
        elif dead_letter == "":
            dead_letter = f"{topic}.{name}.dlq"
            if dead_letter not in await self.list_topics():
                await self.create_topic(dead_letter)
        spec = m.SubscriptionSettings(
            name=name, topic=topic, mode=mode, start=start,
            visibility_timeout_ms=seconds_to_ms("visibility_timeout", visibility_timeout),
            max_deliveries=max_deliveries, dead_letter=dead_letter,
            delay_ms=seconds_to_ms("delay", delay), retry=_retry_settings(retry or DEFAULT_RETRY),
            **_rate_settings(rate_limit, rate_burst),
            message_ttl_ms=msgspec.UNSET if message_ttl is None
            else seconds_to_ms("message_ttl", message_ttl),
        )  # fmt: skip
        if rate_limit is not None or rate_burst is not None:
            self._needs_version(RATE_LIMIT_VERSION, "create_subscription(rate_limit=...)")
        return await self._value(m.CreateSubscription(spec), SubscriptionSpec)

    async def peek(
        self,
        topic: str,
        subscription: str | None = None,
        *,
        max_messages: int = 10,
        partition: int | None = None,
    ) -> list[Peeked]:
        """Up to ``max_messages`` messages the subscription has not finished with, lowest
        offsets first, each with its state (pending, leased until, delayed until): nothing is
        leased and no delivery is counted. ``subscription`` defaults to the topic's name: the
        queue of that name."""
        self._needs_version(PEEK_VERSION, "peek")
        wire = await self.call(
            m.Peek(topic, subscription or topic, max_messages, partition), m.Peeked
        )
        return [
            Peeked(message_from_wire(topic, p.message), p.state, p.until_ms)  # type: ignore[arg-type]
            for p in wire.messages
        ]

    async def purge(self, topic: str, subscription: str | None = None) -> int:
        """Finish every confirmed message of the subscription, leased and delayed ones too (as
        SQS's ``PurgeQueue``); a `stream` subscription commits at the end of every partition.
        Returns how many messages it skipped. A lease held now is refused at its ack."""
        self._needs_version(PEEK_VERSION, "purge")
        return (await self.call(m.Purge(topic, subscription or topic), m.Purged)).count

    def _needs_version(self, version: int, what: str) -> None:
        if self.protocol_version < version:
            raise ProtocolError(
                "roost",
                f"{what} needs a broker speaking protocol version {version}; this one speaks "
                f"{self.protocol_version}",
            )

    async def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionSpec]:
        return await self._value(m.ListSubscriptions(topic), list[SubscriptionSpec])

    async def delete_subscription(self, topic: str, name: str) -> None:
        await self.call(m.DeleteSubscription(topic, name), m.Done)

    # -- exchanges ------------------------------------------------------------------------

    async def declare_exchange(
        self, name: str, kind: ExchangeKind, *, alternate: str | None = None
    ) -> ExchangeSpec:
        return await self._value(m.DeclareExchange(name, kind, alternate), ExchangeSpec)

    async def delete_exchange(self, name: str) -> None:
        await self.call(m.DeleteExchange(name), m.Done)

    async def list_exchanges(self) -> list[ExchangeSpec]:
        return await self._value(m.ListExchanges(), list[ExchangeSpec])

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
        binding = m.Binding(exchange=exchange, topic=topic, key=key, headers=headers, match=match,
                            weight=weight)  # fmt: skip
        return await self._value(m.Bind(binding), bool)

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
        binding = m.Binding(exchange=exchange, topic=topic, key=key, headers=headers, match=match,
                            weight=weight)  # fmt: skip
        return await self._value(m.Unbind(binding), bool)

    async def list_bindings(self, exchange: str | None = None) -> list[BindingSpec]:
        return await self._value(m.ListBindings(exchange), list[BindingSpec])

    # -- publish --------------------------------------------------------------------------

    async def publish(
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
        """Publish one message; returns where it landed once it is durable. ``value``: bytes,
        ``str`` (sent as UTF-8), or with a ``serializer`` (this call's, else the client's)
        anything it can encode (roost.client.codecs). A ``dedup_id`` seen on this topic within
        its dedup window (5 minutes by default) is confirmed with the first placement and not
        appended again. ``ttl`` (seconds; protocol version 8): not delivered that long after
        this publish, it expires (to the dead-letter topic, ``x-roost-death-reason:
        expired``); with a ``delay`` it must be longer than the delay."""
        data, pairs = self._encoded(value, headers, serializer)
        message = Outgoing(
            value=data, key=key, headers=pairs, partition=partition,
            delay_ms=_ms(delay, "delay"), deliver_at_ms=deliver_at_ms, dedup_id=dedup_id,
            ttl_ms=_ms(ttl, "ttl"),
        )  # fmt: skip
        [published] = await self.publish_batch(topic, [message])
        return published

    def _encoded(
        self, value: object, headers: Headers, serializer: Serializer | None
    ) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
        data, content_type = encode(value, serializer or self.serializer)
        return data, with_content_type(_pairs(headers), content_type)

    async def publish_batch(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        *,
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> list[Published]:
        """Publish many messages in one go (one append per partition), results in order.

        An idempotent producer passes its id and the sequence of the first message (its
        messages to a partition are numbered 0, 1, 2, ...; a batch goes to one partition): a
        retry of a batch is confirmed with the offsets it got the first time.
        """
        with tracing.sending(topic, len(messages)) as traced:
            outs = [_out(msg, traced) for msg in messages]
            if self.protocol_version < TTL_VERSION and any(o.ttl_ms is not None for o in outs):
                self._needs_version(TTL_VERSION, "a message's ttl")
            request = m.Publish(topic, outs, producer_id, sequence)
            return _unfold(await self.call(request, m.PublishedAt))

    async def publish_to_exchange(
        self,
        exchange: str,
        routing_key: str,
        value: object,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        serializer: Serializer | None = None,
    ) -> list[Published]:
        """Publish through an exchange: one entry per topic the message was routed to.
        ``value`` as ``publish`` takes it."""
        data, pairs = self._encoded(value, headers, serializer)
        check_types(data, key, pairs)
        with tracing.sending(exchange) as traced:
            message = m.Out(data, key, list(traced(pairs)))
            request = m.PublishToExchange(exchange, routing_key, [message])
            return _unfold(await self.call(request, m.PublishedAt))

    # -- consume --------------------------------------------------------------------------

    async def receive(
        self,
        topic: str,
        subscription: str | None = None,
        *,
        max_messages: int = 1,
        wait: Seconds = 0.0,
        visibility_timeout: Seconds | None = None,
    ) -> list[Delivery]:
        """Lease up to ``max_messages``; wait up to ``wait`` seconds (20 at most) for one.

        ``subscription`` defaults to the topic's name: the queue of that name.
        """
        name = subscription or topic
        return [
            Delivery(self, name, message)
            for message in await self._receive(topic, name, max_messages, wait, visibility_timeout)
        ]

    async def _receive(
        self, topic: str, name: str, count: int, wait: Seconds, visibility: Seconds | None
    ) -> list[Message]:
        request = m.Receive(
            topic, name, count, seconds_to_ms("wait", wait), _ms(visibility, "visibility_timeout")
        )
        wire = await self.call(request, m.Messages)
        return [message_from_wire(topic, message) for message in wire.messages]

    def subscribe(
        self, topic: str, subscription: str | None = None, *, prefetch: int = 100
    ) -> Subscriber:
        """Deliveries pushed as ``prefetch`` allows: ``async with broker.subscribe(...) as d``.

        ``prefetch`` is the credit: at most that many deliveries are out, unacked, at once;
        when they all are, the broker pushes more only as they are acked or nacked.
        ``subscription`` defaults to the topic's name: the queue of that name.
        """
        if type(prefetch) is not int or prefetch < 1:
            raise InvalidConfig("prefetch", prefetch, "a positive int")
        return Subscriber(self, topic, subscription or topic, prefetch)

    async def subscribe_stream(self, request: m.Subscribe) -> PushStream:
        return await self._backend.subscribe(request)

    async def consume(
        self, topic: str, subscription: str | None = None, *, prefetch: int = 100
    ) -> AsyncIterator[Delivery]:
        """Deliveries, forever: ``subscribe`` one at a time. Closing the iterator (``break``,
        ``aclose``) puts back what arrived and was never handed out."""
        async with self.subscribe(topic, subscription, prefetch=prefetch) as deliveries:
            async for delivery in deliveries:
                yield delivery

    async def ack(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], *, wait: bool = True
    ) -> list[Receipt]:
        """Ack many at once; returns the receipts refused (their lease had expired).

        With ``wait=False`` the ack is sent and nothing comes back (as AMQP's ``basic.ack``):
        no round trip, and a refused receipt shows only as its message delivered again.
        Returns ``[]`` then. A broker older than protocol version 3 answers anyway, and the
        answer is waited for."""
        if not wait and self.protocol_version >= 3:
            self._backend.tell(m.Ack(topic, subscription, list(receipts), answer=False))
            return []
        wire = await self.call(m.Ack(topic, subscription, list(receipts)), m.Refused)
        return wire.receipts

    async def nack(
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
        """Give messages back, again after ``delay`` (default: the retry policy). With
        ``undelivered`` they never reached a handler: ready again at once, the delivery not
        counted (a broker older than protocol version 6 counts it: a plain nack). With
        ``reject`` they go straight to the dead-letter topic, their ``x-roost-death-reason``
        ``rejected`` (RabbitMQ's reject without requeue; needs protocol version 7)."""
        if undelivered and self.protocol_version < UNDELIVERED_VERSION:
            undelivered = False
        if reject:
            self._needs_version(REJECT_VERSION, "nack(reject=True)")
        request = m.Nack(
            topic, subscription, list(receipts), _delay_ms(delay), error, undelivered, reject
        )
        wire = await self.call(request, m.Refused)
        return wire.receipts

    async def extend(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], seconds: Seconds
    ) -> list[Receipt]:
        request = m.Extend(topic, subscription, list(receipts), seconds_to_ms("seconds", seconds))
        wire = await self.call(request, m.Refused)
        return wire.receipts

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
        where = m.RedriveWhere(source_topic=source_topic, key=key, error_contains=error_contains,
                               headers=headers)  # fmt: skip
        wire = await self.call(m.Redrive(dead_letter_topic, where, rate, to), m.Moved)
        return wire.count

    async def start_redrive(
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
        """``redrive`` as a task in the background (SQS's ``StartMessageMoveTask``): answered
        at once; ``redrive_tasks`` follows its progress, ``cancel_redrive`` stops it, and a
        broker restart resumes it. One runs per dead-letter topic at a time."""
        self._needs_version(REDRIVE_TASK_VERSION, "start_redrive")
        where = m.RedriveWhere(source_topic=source_topic, key=key, error_contains=error_contains,
                               headers=headers)  # fmt: skip
        request = m.StartRedrive(dead_letter_topic, where, rate, to)
        return await self._value(request, RedriveTask)

    async def redrive_tasks(self, dead_letter_topic: str | None = None) -> list[RedriveTask]:
        """Redrive tasks, newest first: state, moved so far, how many were waiting."""
        self._needs_version(REDRIVE_TASK_VERSION, "redrive_tasks")
        return await self._value(m.ListRedrives(dead_letter_topic), list[RedriveTask])

    async def cancel_redrive(self, dead_letter_topic: str, task_id: str) -> RedriveTask:
        """Stop a running redrive task; what it moved stays moved."""
        self._needs_version(REDRIVE_TASK_VERSION, "cancel_redrive")
        return await self._value(m.CancelRedrive(dead_letter_topic, task_id), RedriveTask)

    async def join(
        self, topic: str, group: str, *, member_id: str | None = None, client: str = ""
    ) -> StreamMember:
        """Join the `stream` subscription ``group`` on ``topic``; the broker assigns partitions.

        Heartbeat (any call on the member counts) within the session timeout, or the member is
        removed and its partitions go to the others.
        """
        wire = await self.call(m.Join(topic, group, member_id, client), m.Membership)
        return StreamMember(self, topic, group, _membership(wire))

    async def stats(
        self, topic: str, subscription: str | None = None
    ) -> SubscriptionStats | StreamStats:
        request = m.Stats(topic, subscription or topic)
        value = msgspec.to_builtins((await self.call(request, m.Described)).value)
        kind = (
            StreamStats
            if m.answer_type(request, value) is m.StreamStatsAnswer
            else SubscriptionStats
        )
        return _answered(request, value, kind)  # type: ignore[return-value]

    async def queue_stats(self, topic: str, subscription: str | None = None) -> SubscriptionStats:
        """``stats`` of a `queue` or `keyed` subscription (of a queue: just its name), typed
        as such: ``depth``, ``delayed``, ``in_flight``, ``oldest_age_ms``, ``dead_letters``.
        ``InvalidRequest`` if it is a `stream` subscription (``stream_stats`` is for those)."""
        stats = await self.stats(topic, subscription)
        if not isinstance(stats, SubscriptionStats):
            raise InvalidRequest(
                f"{topic}/{stats.subscription} is a stream subscription: use stream_stats"
            )
        return stats

    async def stream_stats(self, topic: str, group: str) -> StreamStats:
        """``stats`` of a `stream` subscription (a consumer group), typed as such: ``lag``,
        ``members``, per partition the committed offset. ``InvalidRequest`` if it is a
        `queue` or `keyed` one (``queue_stats`` is for those)."""
        stats = await self.stats(topic, group)
        if not isinstance(stats, StreamStats):
            raise InvalidRequest(f"{topic}/{group} is a {stats.mode} subscription: use queue_stats")
        return stats

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._backend.aclose()


class Opening:
    """A client being opened (``roost.open``, ``roost.connect``): await it for the client, or
    use it as an async context manager that closes the client on the way out."""

    def __init__(self, open_client: Callable[[], Awaitable[Client]]) -> None:
        self._open = open_client
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()


def _unfold(wire: m.PublishedAt) -> list[Published]:
    return [
        Published(topic, partition, first + i)
        for topic, partition, first, count in wire.runs
        for i in range(count)
    ]
