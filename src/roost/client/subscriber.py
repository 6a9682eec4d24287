"""Consuming a subscription: deliveries the broker pushes, as far as the consumer's credit goes.

    async with broker.subscribe("emails", prefetch=100) as deliveries:
        async for delivery in deliveries:
            ...                                   # do the work
            await delivery.ack()

``prefetch`` is the credit: at most that many deliveries are out at once, pushed to this
process and not yet acked or nacked (RabbitMQ's ``basic.qos``). Over the network the server
pushes ``Deliveries`` frames for one ``Subscribe`` request and the client tops its credit up
with ``Credit`` frames as deliveries settle, one frame per turn of the event loop however many
settled in it: a busy consumer sends no request to be given work. In this process a
long-polling receive plays the server's part; there it costs no round trip.

Deliveries that arrived but were never handed out go back at once when the subscriber closes,
as a closing AMQP channel requeues its unacked deliveries, and without counting a delivery
(``nack(..., undelivered=True)``): short-lived subscribers never push a message nobody saw
towards its dead-letter topic. Those in the
consumer's hands stay leased to it until it settles them or their lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from roost.client import tracing
from roost.client.closing import ClosedOnExit
from roost.client.codecs import Headers, decode_into, decode_json
from roost.client.durations import Seconds
from roost.core.model import Message
from roost.errors import ConnectionClosed, ConnectionLost, LeaseExpired, RoostError, StorageClosed
from roost.protocols.native import messages as m
from roost.receipt import Receipt

T = TypeVar("T")

if TYPE_CHECKING:
    from roost.client.api import Client

#: How long one receive of a ``PollingStream`` waits for a message, in ms (the broker's most).
LONG_POLL_MS = 20_000
#: Messages one long poll of a ``PollingStream`` asks for at most (as a push frame holds).
POLL_BATCH = 256
#: Errors that mean the connection, not the subscription, went away.
CONNECTION_ERRORS = (ConnectionClosed, StorageClosed, ConnectionLost, ConnectionError)


def message_from_wire(topic: str, wire: m.Delivered) -> Message:
    return Message(
        topic, wire.partition, wire.offset, wire.timestamp_ms, wire.key, wire.value,
        tuple(wire.headers), wire.delivery_count,
    )  # fmt: skip


class PushStream(Protocol):
    """The deliveries of one ``Subscribe``, as a backend brings them."""

    async def next_batch(self) -> list[m.Delivered]:
        """What has arrived since the last call, waiting for at least one delivery."""
        ...

    def grant(self, messages: int) -> None:
        """This many more deliveries may come (that many were settled)."""
        ...

    @property
    def broken(self) -> bool:
        """The connection it came over is gone (with the leases of what it brought)."""
        ...

    async def close(self) -> list[m.Delivered]:
        """Stop the deliveries; returns those that arrived and were never taken."""
        ...


class PollingStream:
    """A push stream made of long-polling receives, for a backend where a request costs no
    round trip (the broker in this process)."""

    def __init__(
        self,
        call: Callable[[m.Request], Awaitable[m.Response]],
        request: m.Subscribe,
        stopping: Callable[[], bool],
    ) -> None:
        self._call = call
        self._topic = request.topic
        self._subscription = request.subscription
        self._credit = request.credit
        self._granted = asyncio.Event()
        self._stopping = stopping
        self._closed = False

    async def next_batch(self) -> list[m.Delivered]:
        while True:
            while self._credit <= 0 and not self._closed:
                self._granted.clear()
                await self._granted.wait()
            if self._closed or self._stopping():
                # A closing broker answers long polls at once, empty: asking again would spin.
                raise ConnectionClosed("the subscription")
            count = min(self._credit, POLL_BATCH)
            wire = await self._call(m.Receive(self._topic, self._subscription, count, LONG_POLL_MS))
            assert isinstance(wire, m.Messages)
            if wire.messages:
                self._credit -= len(wire.messages)
                return wire.messages

    def grant(self, messages: int) -> None:
        self._credit += messages
        self._granted.set()

    broken = False

    async def close(self) -> list[m.Delivered]:
        # A receive in flight still hands what it leases to its caller (``Subscriber._fill``
        # puts it back when it finds the subscriber closed).
        self._closed = True
        self._granted.set()
        return []


class AckCoalescer:
    """Acks asked for in one turn of the event loop, per subscription, sent as one request: a
    worker whose handlers finish together acks them all with one frame, and each ``ack()``
    still learns whether its own receipt was refused."""

    def __init__(
        self, send: Callable[[str, str, Sequence[Receipt]], Awaitable[list[Receipt]]]
    ) -> None:
        self._send = send
        self._gathering: dict[tuple[str, str], tuple[list[Receipt], asyncio.Future[Any]]] = {}
        self._sending: set[asyncio.Future[list[Receipt]]] = set()

    async def ack(self, topic: str, subscription: str, receipt: Receipt) -> bool:
        """Ack with whatever else is acked in this turn; True if the broker refused it."""
        key = (topic, subscription)
        gathering = self._gathering.get(key)
        if gathering is None:
            loop = asyncio.get_running_loop()
            gathering = self._gathering[key] = ([], loop.create_future())
            # Retrieved here too, so an error nobody awaits any more is not reported as lost.
            gathering[1].add_done_callback(lambda f: f.cancelled() or f.exception())
            loop.call_soon(self._flush, key)
        gathering[0].append(receipt)
        # Shielded: one acker cancelled must not cancel the request the others wait on.
        refused = await asyncio.shield(gathering[1])
        return receipt in refused

    def _flush(self, key: tuple[str, str]) -> None:
        receipts, answer = self._gathering.pop(key)
        sending = asyncio.ensure_future(self._send(key[0], key[1], receipts))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)
        sending.add_done_callback(lambda done: _pass_on(done, answer))


def _pass_on(done: asyncio.Future[Any], to: asyncio.Future[Any]) -> None:
    if to.done():
        return
    if done.cancelled():
        to.cancel()
    elif (error := done.exception()) is not None:
        to.set_exception(error)
    else:
        to.set_result(done.result())


class Delivery:
    """A received message, leased to you until you ack, nack, or the lease runs out."""

    # A pushed delivery keeps the wire struct it came in and makes its ``Message`` only when
    # asked: a consumer that reads the value and acks costs one object per message, not three.
    __slots__ = ("_client", "_on_settled", "_record", "subscription", "topic")

    def __init__(
        self,
        client: Client,
        subscription: str,
        message: Message | m.Delivered,
        on_settled: Callable[[int], None] | None = None,
        topic: str | None = None,
    ) -> None:
        self._client = client
        self.subscription = subscription
        self._record = message
        self.topic: str = message.topic if isinstance(message, Message) else topic or ""
        self._on_settled = on_settled

    @property
    def message(self) -> Message:
        record = self._record
        if not isinstance(record, Message):
            record = self._record = message_from_wire(self.topic, record)
        return record

    @property
    def partition(self) -> int:
        return self._record.partition

    @property
    def offset(self) -> int:
        return self._record.offset

    @property
    def key(self) -> bytes | None:
        return self._record.key

    @property
    def value(self) -> bytes:
        return self._record.value

    @property
    def headers(self) -> Headers:
        """(name, value) pairs, also readable by name: ``headers["trace-id"]``, ``.get``."""
        return Headers(self.message.headers)

    @property
    def timestamp_ms(self) -> int:
        return self._record.timestamp_ms

    @property
    def delivery_count(self) -> int:
        return self._record.delivery_count

    def text(self) -> str:
        """The value as UTF-8 text (``UnicodeDecodeError`` if it is not)."""
        return self._record.value.decode()

    def json(self) -> Any:
        """The value decoded from JSON (``ValueError`` if it is not JSON)."""
        return decode_json(self._record.value)

    def decode(self, kind: type[T]) -> T:
        """The value (JSON) as ``kind``: a msgspec Struct, a dataclass, a TypedDict or a
        pydantic model; ``ValueError`` naming what did not fit."""
        return decode_into(self._record.value, kind)

    @property
    def receipt(self) -> Receipt:
        record = self._record
        return Receipt(record.partition, record.offset, record.delivery_count)

    async def ack(self) -> None:
        """Done: it will not be delivered again. ``LeaseExpired`` if the lease ran out.

        Acks of one turn of the event loop travel together (see ``AckCoalescer``)."""
        try:
            refused = await self._client.acks.ack(self.topic, self.subscription, self.receipt)
        finally:
            # Asked for, so its credit comes back even if the answer does not: an ack that
            # failed leaves the lease to run out and the message to come again.
            self._give_back_credit()
        self.settled((self.receipt,) if refused else ())

    async def nack(self, delay: Seconds | None = None, error: str | None = None) -> None:
        """Failed: deliver again after ``delay`` seconds (default: the retry policy), or move
        it to the dead-letter topic once it has been delivered ``max_deliveries`` times."""
        try:
            refused = await self._client.nack(
                self.topic, self.subscription, [self.receipt], delay, error
            )
        finally:
            self._give_back_credit()
        self.settled(refused)

    async def reject(self, error: str | None = None) -> None:
        """Poison: move it to the dead-letter topic now, whatever its delivery count
        (``x-roost-death-reason: rejected``), as RabbitMQ's reject without requeue."""
        try:
            refused = await self._client.nack(
                self.topic, self.subscription, [self.receipt], None, error, reject=True
            )
        finally:
            self._give_back_credit()
        self.settled(refused)

    async def extend(self, seconds: Seconds) -> None:
        """Keep the lease for ``seconds`` more, from now."""
        if await self._client.extend(self.topic, self.subscription, [self.receipt], seconds):
            raise LeaseExpired(self.topic, self.subscription, self.offset)

    def settled(self, refused: Sequence[Receipt] = ()) -> None:
        """It was acked or nacked (here, in a ``Subscriber.ack`` batch, or with the broker's
        own ``ack(receipts)``): give its credit back; raise ``LeaseExpired`` if the broker
        refused it."""
        self._give_back_credit()
        if refused:
            raise LeaseExpired(self.topic, self.subscription, self.offset)

    def _give_back_credit(self) -> None:
        if self._on_settled is not None:
            self._on_settled(1)
            self._on_settled = None

    def __repr__(self) -> str:
        return (
            f"<Delivery {self.topic}/{self.partition}@{self.offset} "
            f"delivery {self.delivery_count}, {len(self.value)} bytes>"
        )


class Subscriber(ClosedOnExit):
    """The deliveries of one subscription, pushed as credit allows; see the module docstring.

    Iterate it for one delivery at a time, or take ``batch()`` for everything that has
    arrived, and settle many with one request through ``ack(deliveries)``.
    """

    def __init__(self, client: Client, topic: str, subscription: str, prefetch: int) -> None:
        self._client = client
        self.topic = topic
        self.subscription = subscription
        self.prefetch = prefetch
        #: Deliveries pushed to this process and not yet settled (handed out or not).
        self.unsettled = 0
        self._stream: PushStream | None = None
        self._arrived: deque[m.Delivered] = deque()
        self._closed = False
        # Settled while no stream was there to take the credit (a resubscribe in flight).
        self._ungranted = 0

    async def open(self) -> Subscriber:
        await self._subscribe()
        return self

    async def _subscribe(self) -> None:
        request = m.Subscribe(self.topic, self.subscription, self.prefetch - self.unsettled)
        self._ungranted = 0  # the request's credit counts every settlement up to now
        self._stream = await self._client.subscribe_stream(request)
        if self._ungranted:  # settled while it was on its way
            self._stream.grant(self._ungranted)
            self._ungranted = 0

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Delivery:
        if not self._arrived or self._stream is None or self._stream.broken:
            await self._fill()
        arrived = self._arrived.popleft()
        tracing.arrived(arrived.headers)  # the loop body continues this message's trace
        return self._delivery(arrived)

    async def batch(self, max_messages: int | None = None) -> list[Delivery]:
        """Every delivery that has arrived (at most ``max_messages``), waiting for one."""
        if not self._arrived or self._stream is None or self._stream.broken:
            await self._fill()
        count = len(self._arrived)
        if max_messages is not None:
            count = min(count, max_messages)
        arrived, client, name, settled = (
            self._arrived,
            self._client,
            self.subscription,
            self._settled,
        )
        topic = self.topic
        return [Delivery(client, name, arrived.popleft(), settled, topic) for _ in range(count)]

    async def ack(self, deliveries: Sequence[Delivery], *, wait: bool = True) -> list[Receipt]:
        """Ack many with one request; returns the receipts refused (their lease had expired).

        Their credit goes back as the ack is sent, not when it is answered: the broker can
        push again while the ack is on its way. ``wait=False`` sends the ack and waits for no
        answer (``Client.ack``): a refused receipt then shows only as its message delivered
        again. Such an ack and the ``Credit`` it frees leave in one write, ack first (one
        wake-up of the broker for both)."""
        receipts = [d.receipt for d in deliveries]
        if wait:
            # Right after the request is written, behind it: the broker settles before it
            # pushes again (a key of a fifo queue is free by then).
            asyncio.get_running_loop().call_soon(self._give_back_credit, deliveries)
        try:
            return await self._client.ack(self.topic, self.subscription, receipts, wait=wait)
        finally:
            self._give_back_credit(deliveries)  # once: a no-op for those given back already

    def _give_back_credit(self, deliveries: Sequence[Delivery]) -> None:
        """Each delivery's credit, back once: this subscriber's with one grant."""
        ours = 0
        settled = self._settled
        for delivery in deliveries:
            on_settled = delivery._on_settled
            if on_settled is None:
                continue
            delivery._on_settled = None
            if on_settled == settled:
                ours += 1
            else:
                on_settled(1)
        if ours:
            settled(ours)

    async def _fill(self) -> None:
        while True:
            if self._closed or self._stream is None:
                raise StopAsyncIteration
            if self._stream.broken:
                self._drop_arrived()
            if self._arrived:
                return
            try:
                batch = await self._stream.next_batch()
            except CONNECTION_ERRORS:
                if self._closed:
                    raise StopAsyncIteration from None
                # Subscribe again on a new connection (a backend that cannot reconnect
                # raises here).
                self._drop_arrived()
                self._stream = None
                await self._subscribe()
                continue
            if self._closed:  # closed by another task while this one waited
                await self._put_back(batch)
                raise StopAsyncIteration
            self.unsettled += len(batch)
            self._arrived.extend(batch)
            return

    def _drop_arrived(self) -> None:
        # What a lost connection brought and nobody took was leased to it: the broker
        # delivers it again when the lease runs out (or at once, if the broker restarted).
        self.unsettled -= len(self._arrived)
        self._arrived.clear()

    def _delivery(self, wire: m.Delivered) -> Delivery:
        return Delivery(self._client, self.subscription, wire, self._settled, self.topic)

    def _settled(self, count: int = 1) -> None:
        self.unsettled -= count
        if self._stream is not None:
            self._stream.grant(count)
        else:
            self._ungranted += count

    async def aclose(self) -> None:
        """Stop the deliveries and put back those that arrived and were never handed out."""
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        unhanded = list(self._arrived)
        self.unsettled -= len(unhanded)
        self._arrived.clear()
        try:
            if stream is not None:
                # Past a failed unsubscribe the pushes end with the connection anyway.
                with contextlib.suppress(RoostError, ConnectionError):
                    unhanded += await stream.close()
        finally:
            await self._put_back(unhanded)

    async def _put_back(self, unhanded: list[m.Delivered]) -> None:
        """Give back what arrived and was never handed out, uncounted: no handler saw it, so
        it must not come closer to ``max_deliveries`` (best effort: what is not put back comes
        again when its lease runs out)."""
        if unhanded:
            receipts = [Receipt(d.partition, d.offset, d.delivery_count) for d in unhanded]
            with contextlib.suppress(RoostError, ConnectionError):
                await self._client.nack(self.topic, self.subscription, receipts, undelivered=True)

    async def __aenter__(self) -> Subscriber:
        return await self.open()
