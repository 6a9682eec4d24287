"""The native protocol's listener and connections: sockets in, codec, session, sockets out.

    server = await serve_native(host, "127.0.0.1", 7420)
    ...
    await close_native(server)

Each connection owns a ``FramedStream`` (socket and codec) and its request tasks. It starts
with the handshake (``native_handshake``: the version, then who the client is, which sets
``principal``); after it, frames are dispatched as they arrive; requests run concurrently (a
long-polling receive does not hold up a publish behind it) and answer in whatever order they
finish, each with its correlation id. A ``Subscribe`` makes the connection watch the topic on
the host and push ``Deliveries`` while the client has credit, whenever there is news (see
``_push``). Any ``ProtocolError`` ends that connection only, after a ``FAILURE`` frame if one
can still be sent; a ``RoostError`` from the core answers its request with a ``FAILURE``
carrying the error's stable code; anything else is logged as a bug and answered
``internal``. Closing a connection cancels its tasks; leases it held expire.

What one connection may make the broker hold is bounded (docs/operations.md, "Memory and
connection bounds"): pushes wait while the socket's send buffer is full; reading stops while
more than ``framed.MAX_UNSENT_BYTES`` wait to be sent or ``MAX_IN_FLIGHT`` requests (or
``MAX_IN_FLIGHT_BYTES`` of them) are being answered; the listener's ``Watchdog`` ends
connections whose frame or heartbeat is overdue and blocks publishers while the broker is
over its memory budget (``BLOCKED``, version 5). A full listener makes room by evicting a
connection still in its handshake, or the longest silent one, before it refuses a newcomer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import Any

from roost.clock import Clock, SystemClock
from roost.core.model import Message
from roost.errors import ProtocolError, RoostError, Unavailable
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind, NativeCodec, State, encode
from roost.server.access import NOBODY, Principal
from roost.server.address_strikes import peer_address
from roost.server.exposure import is_loopback
from roost.server.framed import KERNEL_UNSENT_SMALL_BYTES, MEMORY, FramedStream
from roost.server.host import Host
from roost.server.log_limit import LogLimit
from roost.server.memory import (
    DEFAULT_MAX_MEMORY,
    MemoryAlarm,
    anonymous_rss_bytes,
    budget_bytes,
)
from roost.server.meters import ListenerStats
from roost.server.native_auth import UserConnections
from roost.server.native_handshake import Handshake, HandshakePolicy, Sleep
from roost.server.native_session import (
    HANDLERS,
    ack_unanswered,
    confirm,
    delivered,
    publish_now,
    runs,
)
from roost.server.protocol_strikes import Tarpit
from roost.server.tls import peer_principal
from roost.server.watchdog import Timeouts, Watchdog, overdue

log = logging.getLogger("roost.native")
#: The protocol version from which a ``Failure`` carries the error's details.
DETAILS_VERSION = m.ADDED_IN[m.Failure]["details"]
#: How long a shutdown waits for requests in flight (a publish's fsync) before closing.
SHUTDOWN_GRACE_S = 5.0
#: Still answered while a shutdown finishes a connection: they settle what it was handed
#: (nothing then comes back as a redelivery) and cost the broker nothing to wait for.
SETTLING_REQUESTS = (m.Ack, m.Nack, m.Unsubscribe)
#: A delivery's encoded size beyond its key, value and headers, rounded up.
MESSAGE_OVERHEAD_BYTES = 64
#: A push of at least this many bytes of values leaves as its header and its payload in one
#: ``writelines``, not joined: joining copies the payload once more.
UNJOINED_BYTES = 64 * 1024
#: Deliveries pushed per frame at most.
PUSH_BATCH = 256
#: Credit a client can hold for one subscribe: more is a client bug, not a reason to grow.
MAX_CREDIT = 1_000_000
#: Bytes of values one push leases at most (one message at least), judged by the last one.
PUSH_BYTES = 1024 * 1024
#: Requests of one connection being answered at once, past which it is not read (resumed at
#: half): a client pipelining without reading its answers holds this many at most.
MAX_IN_FLIGHT = 1_024
#: The same bound in bytes (their frames' sizes): past it, a connection is not read until
#: half of them are answered. A thousand publishes of 100 KiB must not be a thousand held.
MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024
#: The hold on reading while too many requests are in flight.
IN_FLIGHT = "in flight"
#: The protocol version from which a client sends a PING every ``heartbeat_ms`` (so silence
#: may end the connection) and is told of the memory alarm.
HEARTBEAT_VERSION = 5
#: While the memory alarm is on, a frame still arriving past this many bytes holds reading.
PARTIAL_HOLD_BYTES = 64 * 1024
#: Requests that make a connection a publisher: blocked by the memory alarm.
PUBLISHES = (m.Publish, m.PublishToExchange)
#: The kinds of close the log counts instead of writing each (``log_limit``; the counters
#: in ``ListenerStats`` count every one).
PROTOCOL_ERROR_CLOSES = "connections closed for a protocol error"
OVERDUE_CLOSES = "connections closed for an overdue frame or heartbeat"
EVICTION_CLOSES = "connections closed to make room at max_connections"


class _Push:
    """One ``Subscribe``: the credit the client has given, and what it is for."""

    def __init__(self, correlation: int, request: m.Subscribe) -> None:
        self.correlation = correlation
        self.topic = request.topic
        self.subscription = request.subscription
        self.credit = min(max(0, request.credit), MAX_CREDIT)
        self.poke: Callable[[], None] = lambda: None  # set by the connection
        #: The mean value size of the last batch pushed: how many the next may lease.
        self.message_bytes = 0

    def batch(self) -> int:
        """How many to lease next: the credit, at most ``PUSH_BATCH``, and at most
        ``PUSH_BYTES`` at the last batch's size (a push is written whole, whatever the
        socket's buffer: large messages go fewer at a time)."""
        by_size = PUSH_BYTES // self.message_bytes if self.message_bytes else PUSH_BATCH
        return min(self.credit, PUSH_BATCH, max(1, by_size))

    def grant(self, messages: int) -> None:
        self.credit = min(self.credit + max(0, messages), MAX_CREDIT)


class NativeConnection:
    def __init__(
        self,
        host: Host,
        stream: FramedStream,
        stats: ListenerStats | None = None,
        policy: HandshakePolicy | None = None,
        timeouts: Timeouts | None = None,
        alarm: MemoryAlarm | None = None,
        clock: Clock | None = None,
        closes: LogLimit | None = None,
    ) -> None:
        self._host = host
        self._timeouts = timeouts or Timeouts()
        self._alarm = alarm or MemoryAlarm(None)
        clock = clock or SystemClock()
        #: Why it was closed is logged through this, shared by the listener: a flood of
        #: closes is counted, not written out line by line.
        self._closes = closes or LogLimit(log, clock)
        #: When it connected (monotonic ms): a full listener evicts the oldest handshake.
        self.connected_ms = clock.monotonic_ms()
        #: Past its handshake: requests may come.
        self.open = False
        #: It has published: the memory alarm stops reading it.
        self.publisher = False
        #: Bytes its codec held when it closed (a frame cut short by a timeout, say).
        self.buffered_at_close = 0
        #: Who this connection acts for: nobody (who may do nothing) until its handshake
        #: authenticates it; every request goes through ``door``, which checks it
        #: (server/door.py).
        self.principal = NOBODY
        self._stats = stats or ListenerStats()
        self._policy = policy or HandshakePolicy()
        self._stream = stream
        self._codec = stream.codec
        stream.on_writable = self._push_all  # pushes that waited for the socket go on
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight_bytes = 0  # the frames' sizes of the requests in ``_tasks``
        self._pushes: dict[int, _Push] = {}
        #: Requests given a task that has not started yet: a publish must not overtake them.
        self._waiting_to_start = 0
        self._finishing = False
        #: Closed by the broker (``end``: overdue, evicted), not by the peer or an error.
        self._ended = False
        self.peer = stream.get_extra_info("peername")
        #: The user a verified client certificate names (mutual TLS; ``roost.server.tls``),
        #: looked up once, at connect: None without TLS, without a certificate, or when the
        #: certificate names no user. The handshake offers it as ``EXTERNAL``.
        self.tls_principal: Principal | None = peer_principal(
            host.identities, stream.get_extra_info("peercert")
        )

    @property
    def principal(self) -> Principal:
        return self._principal

    @principal.setter
    def principal(self, principal: Principal) -> None:
        self._principal = principal
        self.door = self._host.door(principal)

    async def finish(self, grace_s: float) -> None:
        """Shutting down: refuse new requests (``unavailable``, retriable), give the ones in
        flight ``grace_s`` to answer, then close; ``run`` then ends as on a hang-up. A peer
        that does not take what is still to be sent within ``grace_s`` more (a consumer
        that stopped reading) is cut off: a shutdown never waits on a client."""
        self._finishing = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)
        self._stream.close()
        try:
            await asyncio.wait_for(self._stream.wait_closed(), grace_s)
        except TimeoutError:
            self._stream.abort()

    async def run(self) -> None:
        try:
            handshake = Handshake(self._stream, self._host.identities, self._policy, self.peer,
                                  self.tls_principal, self._stats)  # fmt: skip
            principal = await handshake.run()
            if principal is not None:
                self.principal = principal
                self.open = True
                if self._alarm.blocked:
                    self.memory(self._alarm)
                await self._read_loop()
        except ProtocolError as e:
            # Closed by ``end`` inside a frame, the codec finds the frame cut short: that
            # close was counted and logged for its own reason, not as the peer's error.
            if not self._ended:
                self._stats.protocol_errors += 1
                self._host.protocol_strikes.strike(peer_address(self.peer))
                self._closes.log(PROTOCOL_ERROR_CLOSES, "closing %s: %s", self.peer, e)
                self._send_quietly(Frame(Kind.FAILURE, 0, m.Failure(e.code, str(e))))
        except ConnectionError:
            pass
        finally:
            for push in list(self._pushes.values()):
                self._stop_pushing(push)
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.buffered_at_close = self._codec.buffered
            self._codec.discard()  # a frame cut short: its bytes go now, not when this does
            self._stream.close()
            if self.principal is not NOBODY:  # only a handshake that got through was counted
                self._policy.users.leave(self.principal)
            with contextlib.suppress(ConnectionError):
                await self._stream.wait_closed()

    async def _read_loop(self) -> None:
        # Publishes read together are pushed together (``Host.holding_wakes``).
        await self._stream.dispatch(self._dispatch, self.door.holding_wakes)

    def _dispatch(self, frame: Frame) -> bool:
        """Act on one frame; False when the connection should end."""
        self._stats.frames_received += 1
        if (
            frame.kind is Kind.REQUEST
            and self._finishing
            and not isinstance(frame.message, SETTLING_REQUESTS)
        ):
            failure = m.Failure("unavailable", "the broker is shutting down", True)
            self._send(Frame(Kind.FAILURE, frame.correlation, failure))
        elif isinstance(frame.message, m.Ack) and not frame.message.answer:
            ack_unanswered(self.door, frame.message)
        elif type(frame.message) is m.Ack and self._stream.writable and not self._waiting_to_start:
            # Settled and answered in this turn, as a publish is: nothing in it waits. A
            # consumer of 1,000 queues acks each queue's pushes apart, so a task per ack
            # would cost per push what a batch of four queues pays once.
            self._ack_now(frame.correlation, frame.message)
        elif (
            type(frame.message) is m.Publish
            and self._stream.writable
            and not self._waiting_to_start
            and not self.door.blocked(frame.message.topic)
        ):
            # Nothing sent before it is still to start (a request before it in this read, a
            # publish waiting for room): it may go first.
            self._publish(frame.correlation, frame.message)
            self.publisher = True
            if self._alarm.blocked:
                self._block_publisher()
        elif frame.kind is Kind.REQUEST:
            request: m.Request = frame.message  # type: ignore[assignment]
            work = functools.partial(self._handle, frame.correlation, request)
            self._waiting_to_start += 1
            self._spawn(self._answer(frame.correlation, request, work), self._codec.frame_bytes)
            if isinstance(request, PUBLISHES):
                self.publisher = True
                if self._alarm.blocked:
                    self._block_publisher()
        elif frame.kind is Kind.CREDIT:
            push = self._pushes.get(frame.correlation)
            if push is not None:
                push.grant(frame.message.messages)  # type: ignore[attr-defined]
                push.poke()
        elif frame.kind is Kind.PING:
            self._send(Frame(Kind.PONG, frame.correlation, m.Empty()))
        elif frame.kind is Kind.GOODBYE:
            return False
        return True

    def _spawn(self, work: Any, size_bytes: int = 0) -> None:
        """Run ``work`` as a task; ``size_bytes``: what its request took on the wire."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        self._in_flight_bytes += size_bytes
        task.add_done_callback(functools.partial(self._done, size_bytes))
        if len(self._tasks) >= MAX_IN_FLIGHT or self._in_flight_bytes >= MAX_IN_FLIGHT_BYTES:
            self._stream.hold_reading(IN_FLIGHT)

    def _done(self, size_bytes: int, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight_bytes -= size_bytes
        if (
            len(self._tasks) <= MAX_IN_FLIGHT // 2
            and self._in_flight_bytes <= MAX_IN_FLIGHT_BYTES // 2
        ):
            self._stream.release_reading(IN_FLIGHT)

    # -- bounds: the watchdog's questions, eviction --------------------------------------

    @property
    def heartbeats(self) -> bool:
        """The client promised a PING every ``heartbeat_ms``: its silence may end it."""
        return (self._codec.version or 0) >= HEARTBEAT_VERSION

    def silent_ms(self, now_ms: int) -> int:
        return now_ms - self._stream.last_received_ms

    def check(self, now_ms: int) -> None:
        """End the connection if a frame or its heartbeat is overdue (``watchdog``)."""
        if not self.open or self._codec.state is State.CLOSED:
            return  # in its handshake (which has its own time limit), or being closed
        reason = overdue(
            now_ms, self._timeouts, last_received_ms=self._stream.last_received_ms,
            frame_started_ms=self._stream.frame_started_ms, heartbeats=self.heartbeats,
            holds=self._stream.holds,
        )  # fmt: skip
        if reason is not None:
            self._stats.timed_out += 1
            self._closes.log(OVERDUE_CLOSES, "closing %s: %s", self.peer, reason)
            self.end(ProtocolError("native", reason))

    def end(self, error: RoostError) -> None:
        """A last ``FAILURE`` saying why, then close: the run ends as on a hang-up."""
        self._ended = True
        self._send_quietly(
            Frame(Kind.FAILURE, 0, m.Failure(error.code, str(error), error.retriable))
        )
        self._stream.close()

    # -- the memory alarm -------------------------------------------------------------------

    def memory(self, alarm: MemoryAlarm) -> None:
        """The broker's memory alarm blocked or unblocked: say so to a client that knows the
        frames, and stop (or start again) reading it if it publishes."""
        stream = self._stream
        if alarm.blocked:
            stream.hold_partial_over = PARTIAL_HOLD_BYTES
            if stream.codec.buffered > PARTIAL_HOLD_BYTES:
                stream.hold_reading(MEMORY)
            if self.publisher:
                stream.hold_reading(MEMORY)
        else:
            stream.hold_partial_over = None
            stream.release_reading(MEMORY)
        if self.open and self.heartbeats:
            notice = (
                Frame(Kind.BLOCKED, 0, m.Blocked(alarm.reason or "memory alarm"))
                if alarm.blocked
                else Frame(Kind.UNBLOCKED, 0, m.Empty())
            )
            with contextlib.suppress(ProtocolError):  # said goodbye: it is being closed
                self._send(notice)

    def _block_publisher(self) -> None:
        """A publish arrived while the alarm is on: the frames after it wait for the end of it."""
        self._stream.hold_reading(MEMORY)

    async def _handle(self, correlation: int, request: m.Request) -> m.Response:
        if isinstance(request, m.Subscribe):
            return self._subscribe(correlation, request)
        if isinstance(request, m.Unsubscribe):
            return await self._unsubscribe(request)
        return await HANDLERS[type(request)](self.door, request)

    async def _answer(
        self,
        correlation: int,
        request: m.Request,
        work: Callable[[], Awaitable[m.Response]],
        queued: bool = True,
    ) -> None:
        """Answer ``request`` with what ``work()`` comes to, or the failure it raises.
        ``queued``: it was counted in ``_waiting_to_start`` (it has not begun yet)."""
        if queued:
            self._waiting_to_start -= 1
        try:
            response = await work()
        except Exception as e:
            await self._reply(_failure(correlation, request, e, self._codec.version))
            return
        try:
            await self._reply(Frame(Kind.RESPONSE, correlation, response))
        except ProtocolError as e:  # an answer larger than a frame may be: say so, go on
            await self._reply(Frame(Kind.FAILURE, correlation, m.Failure(e.code, str(e))))

    def _publish(self, correlation: int, request: m.Publish) -> None:
        """Append a publish in the turn it arrives, and answer it then too unless an fsync
        round must come first: no task and no turn of the loop between a message and its
        push. A publish that waits (for its round under `always`, for room in a full topic
        under overflow `block`) is finished by a task, as any request."""
        try:
            outcome = publish_now(self.door, request)
            if outcome is None:  # nothing appended: the task waits for room, then appends
                work = functools.partial(self._handle, correlation, request)
                self._waiting_to_start += 1  # what this connection publishes next waits too
                self._spawn(self._answer(correlation, request, work), self._codec.frame_bytes)
                return
            published = self.door.confirmed_now(outcome, {request.topic})
        except Exception as e:
            self._send(_failure(correlation, request, e, self._codec.version))
            return
        if published is None:  # appended: what is left is its fsync round, nothing to overtake
            work = functools.partial(confirm, self.door, outcome, request.topic)
            self._spawn(
                self._answer(correlation, request, work, queued=False), self._codec.frame_bytes
            )
        else:
            self._send(Frame(Kind.RESPONSE, correlation, runs(published)))

    def _ack_now(self, correlation: int, request: m.Ack) -> None:
        try:
            refused = self.door.ack(request.topic, request.subscription, request.receipts)
        except Exception as e:
            self._send(_failure(correlation, request, e, self._codec.version))
            return
        self._send(Frame(Kind.RESPONSE, correlation, m.Refused(refused)))

    async def _reply(self, frame: Frame) -> None:
        """Send and wait until the socket takes it: a client that reads slowly slows its own
        requests down instead of growing the server's buffers."""
        self._send(frame)
        await self._stream.drain()

    def _subscribe(self, correlation: int, request: m.Subscribe) -> m.Response:
        self.door.check_subscription(request.topic, request.subscription)  # fails now, if ever
        if correlation in self._pushes:
            raise ProtocolError("native", f"correlation id {correlation} already names a subscribe")
        push = _Push(correlation, request)
        push.poke = lambda: self._push(push)
        self._pushes[correlation] = push
        self.door.watch(push.topic, push.poke)
        # After the answer: what is already there goes out once the client knows the subscribe.
        asyncio.get_running_loop().call_soon(push.poke)
        return m.Done()

    async def _unsubscribe(self, request: m.Unsubscribe) -> m.Response:
        push = self._pushes.get(request.subscribe)
        if push is not None:
            self._stop_pushing(push)
        return m.Done()

    def _stop_pushing(self, push: _Push) -> None:
        self._pushes.pop(push.correlation, None)
        self.door.unwatch(push.topic, push.poke)

    def _push_all(self) -> None:
        for push in list(self._pushes.values()):
            push.poke()

    def _push(self, push: _Push) -> None:
        """Push what is ready, as far as the credit goes, now: called when the subscribe is
        answered, when credit comes, when the topic has news (``Host.watch``: a publish, a
        tick, a delete) and when the socket takes writes again. An error ends the pushes
        with a ``FAILURE`` on the subscribe's correlation id (the topic was deleted, say)."""
        while (
            push.credit > 0
            and self._pushes.get(push.correlation) is push
            and not self.door.stopping
            and self._stream.writable
            and self._codec.state is not State.CLOSED  # said goodbye: it is being closed
        ):
            asked = push.batch()
            try:
                messages = self.door.lease(push.topic, push.subscription, asked)
            except RoostError as e:
                self._stop_pushing(push)
                failure = failure_of(e, self._codec.version)
                self._send_quietly(Frame(Kind.FAILURE, push.correlation, failure))
                return
            except Exception as e:
                log.exception("pushing %s/%s failed", push.topic, push.subscription)
                self._stop_pushing(push)
                failure = m.Failure("internal", repr(e))
                self._send_quietly(Frame(Kind.FAILURE, push.correlation, failure))
                return
            if not messages:
                return
            push.credit -= len(messages)
            push.message_bytes = sum(len(message.value) for message in messages) // len(messages)
            budget = self._codec.max_frame_bytes // 2
            for part in _frame_sized(messages, budget):
                payload = m.Deliveries([delivered(message) for message in part])
                frame = Frame(Kind.DELIVERIES, push.correlation, payload)
                if push.message_bytes * len(part) >= UNJOINED_BYTES:
                    self._stream.write_parts(list(self._codec.send_parts(frame)))
                else:
                    self._send(frame)
            if len(messages) < asked:
                # Fewer than asked: nothing more is ready (or one lease scanned its most past
                # parked and delayed records; the next wake goes on). Asking again now would
                # cost a lease that finds nothing, per push: with 1,000 queues, per few
                # messages.
                return

    def _send(self, frame: Frame) -> None:
        self._stream.write(self._codec.send(frame))

    def _send_quietly(self, frame: Frame) -> None:
        with contextlib.suppress(Exception):
            self._stream.write(encode(frame))


def failure_of(error: RoostError, version: int | None) -> m.Failure:
    """A Roost error as a ``Failure``, with its details where the connection's version has
    them (4 on), so the client's error has the server's attributes."""
    details = error.details() if (version or 0) >= DETAILS_VERSION else {}
    return m.Failure(error.code, str(error), error.retriable, details)


def _failure(correlation: int, request: m.Request, error: Exception, version: int | None) -> Frame:
    """The ``FAILURE`` answering ``request``: a Roost error's stable code, or ``internal`` for
    anything else (a bug, logged)."""
    if isinstance(error, RoostError):
        return Frame(Kind.FAILURE, correlation, failure_of(error, version))
    log.error("request %s failed", type(request).__name__, exc_info=error)
    return Frame(Kind.FAILURE, correlation, m.Failure("internal", repr(error)))


def _frame_sized(messages: list[Message], budget: int) -> list[list[Message]]:
    """``messages`` cut into runs that fit in ``budget`` bytes each (one at least): 256 large
    messages leased together must not make a frame the limit refuses."""
    if sum(len(message.value) for message in messages) <= budget // 2:
        return [messages]  # the usual case, decided without per-message overhead sums
    parts: list[list[Message]] = [[]]
    size = 0
    for message in messages:
        cost = MESSAGE_OVERHEAD_BYTES + len(message.value) + len(message.key or b"")
        cost += sum(len(name) + len(value) + 8 for name, value in message.headers)
        if parts[-1] and size + cost > budget:
            parts.append([])
            size = 0
        parts[-1].append(message)
        size += cost
    return parts


class NativeListener:
    """A listening socket and its open connections, so a shutdown can finish them."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections: set[NativeConnection] = set()
        self.watchdog: Watchdog | None = None
        #: Where connections from an address that keeps breaking the protocol wait.
        self.tarpit: Tarpit | None = None
        #: Why connections were closed, rate-limited per kind (``log_limit``).
        self.closes: LogLimit | None = None
        self._watching: asyncio.Task[None] | None = None

    def watch(self, watchdog: Watchdog, sleep: Sleep) -> None:
        """Run ``watchdog`` over the connections until ``aclose``."""
        self.watchdog = watchdog
        self._watching = asyncio.ensure_future(watchdog.run(sleep))
        self._watching.add_done_callback(_watchdog_ended)

    def make_room(self, now_ms: int, idle_ms: int) -> NativeConnection | None:
        """The connection a full listener closes for a newcomer: the oldest still in its
        handshake, else the longest silent for ``idle_ms`` or more; None: refuse instead."""
        waiting = [c for c in self.connections if not c.open]
        if waiting:
            return min(waiting, key=lambda c: c.connected_ms)
        silent = max(self.connections, key=lambda c: c.silent_ms(now_ms), default=None)
        if silent is not None and silent.silent_ms(now_ms) >= idle_ms:
            return silent
        return None

    @property
    def sockets(self) -> tuple[Any, ...]:
        assert self.server is not None
        return tuple(self.server.sockets)

    async def aclose(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stop accepting; let each connection's requests in flight answer (``grace_s`` at
        most: a publish waiting for its fsync gets its confirm), then close them."""
        assert self.server is not None
        self.server.close()
        if self.tarpit is not None:
            self.tarpit.close()
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        await asyncio.gather(*(c.finish(grace_s) for c in list(self.connections)))
        await self.server.wait_closed()
        if self.closes is not None:
            self.closes.close()  # what the watchdog had not summed up yet


async def serve_native(
    host: Host,
    address: str,
    port: int,
    max_frame_bytes: int = 16 * 1024 * 1024,
    max_connections: int = 10_000,
    name: str = "native",
    *,
    ssl: _ssl.SSLContext | None = None,
    ssl_handshake_timeout_s: float = 10.0,
    allow_anonymous: bool = False,
    max_connections_per_user: int = 1_000,
    handshake_timeout_ms: int = 10_000,
    failed_auth_delay_s: float = 1.0,
    sleep: Sleep = asyncio.sleep,
    timeouts: Timeouts | None = None,
    max_memory: str | int | float = DEFAULT_MAX_MEMORY,
    sample_memory: Callable[[], int] = anonymous_rss_bytes,
    watchdog_sleep: Sleep = asyncio.sleep,
) -> NativeListener:
    """Listen for native-protocol clients on ``address:port``; with ``ssl`` (see
    ``roost.server.tls``), TLS only.

    Past ``max_connections`` a new connection gets a ``FAILURE`` naming the limit and is
    closed; the ones already open are not disturbed. Connections and frames are counted in
    ``host.listeners[name]`` (listeners of one name share it). With ``ssl``, a connection is
    handed over once its TLS handshake is done: one that fails it, or takes longer than
    ``ssl_handshake_timeout_s``, is closed and never counted.

    Authentication (``native_handshake``): with users defined, every connection must
    authenticate; with none, connections are served anonymously if the listener is bound to
    loopback only, or ``allow_anonymous``, and refused otherwise. A handshake must finish in
    ``handshake_timeout_ms``; a failed login is answered after ``failed_auth_delay_s``; one
    user may hold ``max_connections_per_user`` connections on this listener. ``sleep`` is
    how those waits are made (tests pass one they drive).

    Bounds (``watchdog``): ``timeouts`` (a frame's, the heartbeat's) and ``max_memory`` (the
    broker's budget: bytes, a fraction of the machine's memory, or 0 for none; see
    ``memory.budget_bytes``). A full listener first evicts a connection still in its
    handshake, or one silent for twice the heartbeat, with a ``FAILURE(unavailable)`` saying
    why. Connections are timed on ``host.clock``; ``sample_memory`` is how the watchdog
    measures memory, and ``watchdog_sleep`` how it waits between ticks (tests pass samples
    they choose and a sleep that never ends, and call ``listener.watchdog.tick()``).
    """
    listener = NativeListener()
    stats = host.listeners.setdefault(name, ListenerStats())
    clock = host.clock
    timeouts = timeouts or Timeouts()
    alarm = stats.alarm = MemoryAlarm(budget_bytes(max_memory))
    closes = listener.closes = LogLimit(log, clock)
    tarpit = listener.tarpit = Tarpit(host.protocol_strikes, stats, sleep)
    watchdog = Watchdog(listener.connections, alarm, timeouts, clock=clock, sample=sample_memory,
                        log_limit=closes)  # fmt: skip

    async def connected(stream: FramedStream) -> None:
        if not await tarpit.admit(stream, peer_address(stream.get_extra_info("peername"))):
            return
        if len(listener.connections) >= max_connections and not _made_room(stream):
            failure = m.Failure(
                "unavailable", f"too many connections (max_connections={max_connections})", True
            )
            stream.write(encode(Frame(Kind.FAILURE, 0, failure)))
            stream.close()
            stats.refused += 1
            return
        connection = NativeConnection(host, stream, stats, policy, timeouts, alarm, clock, closes)
        stream.on_large_frame = watchdog.memory_pressure
        listener.connections.add(connection)
        stats.accepted += 1
        stats.connections += 1
        try:
            await connection.run()
        finally:
            listener.connections.discard(connection)
            stats.connections -= 1
            watchdog.freed(connection.buffered_at_close)

    def _made_room(newcomer: FramedStream) -> bool:
        victim = listener.make_room(clock.monotonic_ms(), timeouts.idle_timeout_ms)
        if victim is None:
            return False
        why = "still in its handshake" if not victim.open else "silent"
        closes.log(EVICTION_CLOSES, "closing %s to make room for %s: %s while the listener "
                   "is at max_connections=%d", victim.peer, newcomer.get_extra_info("peername"),
                   why, max_connections)  # fmt: skip
        stats.evicted += 1
        victim.end(
            Unavailable(
                f"closed to make room for a new connection: this one was {why} while the "
                f"listener was at max_connections={max_connections}"
            )
        )
        listener.connections.discard(victim)  # its run ends in a later turn
        return True

    def accepted() -> FramedStream:
        codec = NativeCodec("server", max_frame_bytes)
        return FramedStream(codec, connected, clock, kernel_unsent_bytes=KERNEL_UNSENT_SMALL_BYTES)

    server = listener.server = await asyncio.get_running_loop().create_server(
        accepted,
        address,
        port,
        ssl=ssl,
        ssl_handshake_timeout=ssl_handshake_timeout_s if ssl is not None else None,
        start_serving=False,  # not before the policy knows where it listens
    )
    loopback = _loopback_only(server)
    policy = HandshakePolicy(
        anonymous=allow_anonymous or loopback, failed_auth_delay_s=failed_auth_delay_s,
        handshake_timeout_ms=handshake_timeout_ms,
        users=UserConnections(max_connections_per_user), sleep=sleep,
        failures=host.failed_logins, heartbeat_ms=timeouts.heartbeat_ms, closes=closes,
    )  # fmt: skip
    if not loopback and not host.identities.any_users:
        if allow_anonymous:
            log.warning("serving anonymously on %s, not only loopback (allow_anonymous, no "
                        "users): anyone who can reach it may do anything", address)  # fmt: skip
        else:
            log.warning("no users are defined: connections on %s are refused until one is "
                        "(roost user add), or allow_anonymous is set", address)  # fmt: skip
    listener.watch(watchdog, watchdog_sleep)
    await server.start_serving()
    return listener


def _watchdog_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("the native listener's watchdog failed: no timeouts or memory alarm until "
                  "a restart", exc_info=error)  # fmt: skip


def _loopback_only(server: asyncio.Server) -> bool:
    """Every socket of ``server`` is bound to a loopback address (127.0.0.0/8, ::1)."""
    try:
        addresses = [str(s.getsockname()[0]).split("%")[0] for s in server.sockets]
    except (IndexError, TypeError):  # not an IP socket
        return False
    return bool(addresses) and all(is_loopback(address) for address in addresses)


async def close_native(listener: NativeListener) -> None:
    await listener.aclose()
