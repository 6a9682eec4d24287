"""``roost.connect(url)``: the client API over the native protocol.

    async with roost.connect("roost://127.0.0.1:7420") as broker:
        await broker.publish("emails", b"hello")
    async with roost.connect("roosts://broker.example:7420") as broker:   # TLS
    async with roost.connect("roost://ada:s3cret@broker:7420") as broker:   # authenticated
        ...

One connection, many requests in flight (pipelined): each request gets a correlation id and a
future; a reader task resolves futures as answers arrive, in any order. A ``FAILURE`` answer
is raised as the Roost error its code names, so ``except UnknownTopic`` works the same
embedded or networked. Reconnecting is ``roost.client.reconnect``'s; batching, ``Producer``'s;
credentials and the client's side of authentication, ``roost.client.credentials``'.

From protocol version 5 the client keeps the broker's two promises: it sends a ``PING``
every ``heartbeat_ms`` the ``WELCOME`` names (the broker ends a version-5 connection silent
for twice that), and it heeds ``BLOCKED``: while the broker is over its memory budget it reads
no publishing connection, so publishes wait here, before they are sent, until ``UNBLOCKED``
(``blocked`` says why meanwhile); everything else goes on. It holds the broker to the same
rule (``roost.client.liveness``): a broker silent for two intervals and a margin though
PINGed is gone, and the connection fails as a lost one does: requests waiting for an answer
raise ``ConnectionLost`` (they may or may not have been done), subscriptions end, and a
reconnecting client opens a new connection. Opening a connection is timed the same way.

The client reads its socket all along, even while its own writes are backed up (the broker
is slow to read them): its answers come only for requests it sent, and its pushes only as far
as its credit goes, so what it reads is bounded; and a client that stopped reading while the
broker did too would wait on it forever, ``BLOCKED`` and the ``PONG`` unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl as _ssl
import sys
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec

from roost.client.api import Client, Opening
from roost.client.credentials import ClientAuthentication, Credentials
from roost.client.liveness import (
    BROKER_MAX_IN_FLIGHT,
    BROKER_MAX_IN_FLIGHT_BYTES,
    Heartbeat,
    Pulse,
    Sleep,
)
from roost.client.subscriber import PushStream
from roost.client.tls import SCHEMES, client_tls
from roost.clock import Clock, SystemClock
from roost.errors import (
    ConnectionClosed,
    ConnectionLost,
    InvalidRequest,
    ProtocolError,
    RoostError,
    error_from,
)
from roost.protocols.native import messages as m
from roost.protocols.native.codec import VERSIONS, Frame, Kind, NativeCodec, State
from roost.server.framed import FramedStream, open_framed

log = logging.getLogger("roost.client")
DEFAULT_PORT = 7420
#: The version from which the broker expects a heartbeat and may say it is blocked.
HEARTBEAT_VERSION = 5
#: Requests that wait while the broker says it is blocked.
PUBLISHES = (m.Publish, m.PublishToExchange)


def error_from_wire(failure: m.Failure) -> RoostError:
    """The Roost error a ``FAILURE`` frame names, with the server's sentence and details: the
    same class and attributes as the error raised in the broker (``e.topic`` works)."""
    return error_from(failure.code, failure.message, failure.details)


class Pushed:
    """The deliveries the server pushes for one ``Subscribe``, and the credit sent back."""

    def __init__(self, backend: NetworkBackend, correlation: int) -> None:
        self._backend = backend
        self._correlation = correlation
        self._batches: deque[list[m.Delivered]] = deque()
        self._arrived = asyncio.Event()
        self._error: BaseException | None = None
        self._granted = 0

    def put(self, messages: list[m.Delivered]) -> None:
        self._batches.append(messages)
        self._arrived.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._arrived.set()

    @property
    def broken(self) -> bool:
        return self._error is not None

    async def next_batch(self) -> list[m.Delivered]:
        while not self._batches or self._error is not None:
            # Failed: what is still queued came over a lost connection (its leases went with
            # it) or for a subscription that is gone; ``close`` returns it to be put back.
            if self._error is not None:
                raise self._error
            self._arrived.clear()
            await self._arrived.wait()
        batch = self._batches.popleft()
        while self._batches:
            batch += self._batches.popleft()
        return batch

    def grant(self, messages: int) -> None:
        # Settlements of one turn of the event loop share one CREDIT frame, written with that
        # turn's unanswered acks (``NetworkBackend.send_later``).
        if self._granted == 0:
            self._backend.send_later(self._take_credit)
        self._granted += messages

    def _take_credit(self) -> Frame | None:
        granted, self._granted = self._granted, 0
        if granted and self._error is None:
            return Frame(Kind.CREDIT, self._correlation, m.Credit(granted))
        return None

    async def close(self) -> list[m.Delivered]:
        if self._error is None and self._backend.protocol_version >= 2:
            # Answered after the last push of this subscribe: everything pushed is here then.
            # (A version-1 server has no Unsubscribe: its pushes end with the connection, and
            # what it pushes meanwhile comes back when the leases run out.)
            with contextlib.suppress(ConnectionClosed, ConnectionError):
                await self._backend.call(m.Unsubscribe(self._correlation))
        self._backend.forget(self._correlation)
        self._error = ConnectionClosed("the subscription")
        self._arrived.set()  # a task waiting in next_batch learns it is over
        unhanded = [delivery for batch in self._batches for delivery in batch]
        self._batches.clear()
        return unhanded


class NetworkBackend:
    def __init__(self, stream: FramedStream) -> None:
        self._stream = stream
        self._codec = stream.codec
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[m.Response]] = {}
        #: The size on the wire of each request in ``_pending``, and their sum: the broker
        #: stops reading a connection with too many of them (``broker_may_hold``).
        self._sizes: dict[int, int] = {}
        self._pending_bytes = 0
        self._streams: dict[int, Pushed] = {}
        self._reading: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None
        self._later: list[Callable[[], Frame | None]] = []
        #: The version the server chose in its WELCOME: which operations this connection has.
        self.protocol_version = min(VERSIONS)
        #: Who the broker authenticated this connection as; None when it asked for nothing.
        self.principal: str | None = None
        #: Why the broker is not reading publishers now (its ``BLOCKED`` frame); None: it is.
        self.blocked: str | None = None
        self._unblocked = asyncio.Event()
        self._unblocked.set()
        self._heartbeat_ms = 0
        #: When to PING and whether the broker is gone (version 5 on; None before, or never).
        self.pulse: Pulse | None = None
        #: Why the broker counts as gone, once it does (``_lose``).
        self._silence: str | None = None
        self._beating: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        credentials: Credentials | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> NetworkBackend:
        """A connection past its handshake, over TLS with ``ssl``: ``NotAuthenticated`` if the
        broker refuses the credentials (or needs some and none fit). A TLS failure raises
        ``ssl.SSLError`` (an ``OSError``): an untrusted server certificate from the TLS
        handshake, a client certificate the server refused from the protocol's
        (``_tls_refusal``). A broker that does not answer (a stopped process, a host gone)
        raises ``TimeoutError`` (an ``OSError`` too) once ``heartbeat.connect_timeout_ms``
        has passed (``roost.client.liveness``)."""
        heartbeat = heartbeat or Heartbeat()
        return await heartbeat.within(
            cls._open(host, port, credentials, ssl, heartbeat),
            heartbeat.connect_timeout_ms,
            f"connecting to the broker at {host}:{port}",
        )

    @classmethod
    async def _open(
        cls,
        host: str,
        port: int,
        credentials: Credentials | None,
        ssl: _ssl.SSLContext | None,
        heartbeat: Heartbeat,
    ) -> NetworkBackend:
        # The client never holds reading for its own unsent bytes (see the module's doc).
        stream = await open_framed(
            NativeCodec("client"), host, port, ssl=ssl, clock=heartbeat.clock,
            max_unsent_bytes=sys.maxsize,
        )  # fmt: skip
        backend = cls(stream)
        try:
            await backend._handshake(credentials)
        except BaseException as e:
            stream.close()
            with contextlib.suppress(Exception):
                await stream.wait_closed()
            if ssl is not None and isinstance(e, ConnectionClosed):
                raise _tls_refusal(stream) from e
            raise
        backend._reading = asyncio.create_task(backend._read_loop(), name="roost-client-reader")
        if backend.protocol_version >= HEARTBEAT_VERSION and backend._heartbeat_ms > 0:
            clock = heartbeat.clock
            interval_ms = heartbeat.interval_ms(backend._heartbeat_ms)
            backend.pulse = Pulse(interval_ms, heartbeat.judges, clock.monotonic_ms())
            backend._beating = asyncio.create_task(
                backend._beat(backend.pulse, clock, heartbeat.sleep), name="roost-client-heartbeat"
            )
        return backend

    async def _beat(self, pulse: Pulse, clock: Clock, sleep: Sleep) -> None:
        """A ``PING`` every interval while the connection lives; the connection ends as lost
        when ``pulse`` finds the broker gone (``roost.client.liveness``)."""
        while self._closed is None and self._codec.state is State.OPEN:
            now_ms = clock.monotonic_ms()
            pulse.heard(now_ms if self.blocked is not None else self._stream.last_received_ms)
            if pulse.gone(now_ms, self.broker_may_hold) is not None:
                # Two turns of the loop first: after a long stall of this process, bytes that
                # arrived meanwhile may still be waiting to be read (asyncio and uvloop poll
                # sockets at different points of a turn).
                for _ in range(2):
                    await asyncio.sleep(0)
                pulse.heard(self._stream.last_received_ms)
                if (reason := pulse.gone(clock.monotonic_ms(), self.broker_may_hold)) is not None:
                    self._lose(reason)
                    return
            if pulse.ping_due(now_ms):
                self.send(Frame(Kind.PING, 0, m.Empty()))
                pulse.pinged(now_ms)
            await sleep(pulse.wait_ms(now_ms, self.broker_may_hold) / 1000)

    @property
    def broker_may_hold(self) -> bool:
        """So many requests wait for answers that the broker may have stopped reading this
        connection until it answers some (``BROKER_MAX_IN_FLIGHT``, resumed at half):
        the PINGs may be unread, and an answer may rightly take as long as a blocked
        publish may wait (``roost.client.liveness``)."""
        return (
            len(self._pending) > BROKER_MAX_IN_FLIGHT // 2
            or self._pending_bytes > BROKER_MAX_IN_FLIGHT_BYTES // 2
        )

    def _lose(self, reason: str) -> None:
        """The broker is gone: fail everything waiting on it, as a lost connection does,
        and drop the socket (nothing more is sent on it: it might never be taken)."""
        log.warning("closing the connection to the broker: %s", reason)
        self._silence = reason
        self._fail_all(ConnectionLost(f"a subscription ({reason})"))
        self._stream.abort()

    async def _handshake(self, credentials: Credentials | None) -> None:
        hello = m.Hello(sorted(VERSIONS, reverse=True))
        self._stream.write(self._codec.send(Frame(Kind.HELLO, 0, hello)))
        welcome = await self._answer()
        assert isinstance(welcome, m.Welcome)
        self.protocol_version = welcome.version
        self._heartbeat_ms = welcome.heartbeat_ms
        if welcome.auth_required:
            await self._authenticate(ClientAuthentication(credentials, welcome.mechanisms))

    async def _authenticate(self, exchange: ClientAuthentication) -> None:
        """AUTH, and AUTH again for each AUTH_CHALLENGE, until AUTH_OK (the codec keeps the
        turns: anything else from the broker is a ProtocolError)."""
        auth = exchange.first()
        while True:
            self._stream.write(self._codec.send(Frame(Kind.AUTH, 0, auth)))
            answer = await self._answer()
            if isinstance(answer, m.AuthOk):
                exchange.ok(answer)
                self.principal = answer.principal
                return
            assert isinstance(answer, m.AuthChallenge)
            auth = exchange.challenge(answer.data)

    async def _answer(self) -> msgspec.Struct:
        """The broker's next handshake frame's message; a FAILURE raised as its error."""
        frame = await self._next_frame()
        if frame.kind is Kind.FAILURE:
            raise error_from_wire(frame.message)  # type: ignore[arg-type]
        return frame.message

    async def _next_frame(self) -> Frame:
        frame = await self._stream.next_frame()
        if frame is None:
            raise ConnectionClosed("the connection to the broker")
        return frame

    async def _read_loop(self) -> None:
        try:
            await self._stream.dispatch(self._on_frame)
            raise ConnectionClosed("the connection to the broker")
        except (ProtocolError, ConnectionClosed, ConnectionError) as e:
            self._fail_all(e)
        except asyncio.CancelledError:
            self._fail_all(ConnectionClosed("the connection to the broker"))
            raise

    def _on_frame(self, frame: Frame) -> bool:
        future = self._pending.pop(frame.correlation, None)
        if future is not None:
            self._pending_bytes -= self._sizes.pop(frame.correlation, 0)
        if future is None:
            if frame.kind is Kind.BLOCKED:
                self.blocked = frame.message.reason  # type: ignore[attr-defined]
                self._unblocked.clear()
            elif frame.kind is Kind.UNBLOCKED:
                self.blocked = None
                self._unblocked.set()
            else:
                self._to_stream(frame)
        elif future.done():
            pass
        elif frame.kind is Kind.FAILURE:
            future.set_exception(error_from_wire(frame.message))  # type: ignore[arg-type]
        elif frame.kind is Kind.RESPONSE:
            future.set_result(frame.message)  # type: ignore[arg-type]
        return True

    def _to_stream(self, frame: Frame) -> None:
        stream = self._streams.get(frame.correlation)
        if stream is None:
            return  # pushed before an unsubscribe was answered, and already handed back
        if frame.kind is Kind.DELIVERIES:
            stream.put(frame.message.messages)  # type: ignore[attr-defined]
        elif frame.kind is Kind.FAILURE:
            del self._streams[frame.correlation]
            stream.fail(error_from_wire(frame.message))  # type: ignore[arg-type]

    @property
    def alive(self) -> bool:
        return self._closed is None

    def _fail_all(self, error: BaseException) -> None:
        if self._closed is None:  # the first reason is the one to tell
            self._closed = error
        self._unblocked.set()  # a publish waiting for it learns the connection is gone
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._sizes.clear()
        self._pending_bytes = 0
        for stream in self._streams.values():
            stream.fail(error)
        self._streams.clear()

    async def call(self, request: m.Request) -> m.Response:
        return await self._request(next(self._ids), request)

    @property
    def _gone(self) -> bool:
        """Closed, or about to learn it: the codec saw the broker hang up before the reader
        task ran (a request then would fail in the codec as a protocol error, not as what it
        is: a closed connection)."""
        return self._closed is not None or self._codec.state is State.CLOSED

    async def _request(self, correlation: int, request: m.Request) -> m.Response:
        if self.blocked is not None and isinstance(request, PUBLISHES):
            await self._unblocked.wait()  # the broker would not read it before then anyway
        if self._gone:
            raise ConnectionClosed("the connection to the broker") from self._closed
        future: asyncio.Future[m.Response] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            size = self._sizes[correlation] = self.send(Frame(Kind.REQUEST, correlation, request))
        except (OverflowError, msgspec.EncodeError) as e:
            # A value the wire cannot carry (an int past 64 bits): the caller's mistake, said
            # as such; nothing was written, and the connection goes on.
            del self._pending[correlation]
            raise InvalidRequest(f"{type(request).__name__} cannot be sent: {e}") from None
        self._pending_bytes += size
        try:
            await self._stream.drain()
        except ConnectionError:
            if not future.done():
                self._pending.pop(correlation, None)
                self._pending_bytes -= self._sizes.pop(correlation, 0)
                future.cancel()
                raise
            # Failed with the connection already: its reason is the better one.
        try:
            return await future
        except ConnectionLost:
            if self._silence is None:
                raise  # not ours: a broker's answer with that code
            raise ConnectionLost(f"{type(request).__name__} ({self._silence})") from None

    def tell(self, request: m.Ack) -> None:
        if self._gone:
            raise ConnectionClosed("the connection to the broker") from self._closed
        frame = Frame(Kind.REQUEST, next(self._ids), request)
        self.send_later(lambda: frame)

    def send(self, frame: Frame) -> int:
        """Write ``frame`` (behind what waits for the end of the turn); its size in bytes."""
        data = self._codec.send(frame)
        if self._later:  # what waits for the end of the turn was asked for first: it goes first
            self._send_later(data)
        else:
            self._stream.write(data)
        return len(data)

    def send_later(self, make: Callable[[], Frame | None]) -> None:
        """Send the frame ``make`` returns (if any) once this turn of the event loop is done,
        in one write with the others of the turn, in the order they were asked for (a frame
        sent at once meanwhile takes them along, ahead of itself).

        For frames nobody waits on: a consumer's unanswered ``Ack`` and the ``Credit`` it frees
        then cost the broker one wake-up and one read, not two."""
        if not self._later:
            asyncio.get_running_loop().call_soon(self._send_later)
        self._later.append(make)

    def _send_later(self, last: bytes | None = None) -> None:
        makers, self._later = self._later, []
        if self._closed is not None:
            return  # as a lost ack: those messages come again when their leases run out
        chunks = [self._codec.send(frame) for make in makers if (frame := make()) is not None]
        if last is not None:
            chunks.append(last)
        if chunks:
            self._stream.write(b"".join(chunks))

    async def subscribe(self, request: m.Subscribe) -> PushStream:
        """Start the server's pushes; its ``Deliveries`` frames carry this request's id."""
        correlation = next(self._ids)
        stream = self._streams[correlation] = Pushed(self, correlation)
        try:
            await self._request(correlation, request)
        except BaseException:
            del self._streams[correlation]
            raise
        return stream

    def forget(self, correlation: int) -> None:
        self._streams.pop(correlation, None)

    async def aclose(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
        try:
            if self._codec.state is State.OPEN:
                self._stream.write(self._codec.send(Frame(Kind.GOODBYE, 0, m.Empty())))
        finally:
            self._stream.close()
            with contextlib.suppress(ConnectionError):
                await self._stream.wait_closed()


def _tls_refusal(stream: FramedStream) -> _ssl.SSLError:
    """Why a TLS connection ended before the server's WELCOME. Over TLS 1.3 a server checks
    the client's certificate after the client's side of the handshake is done, so refusing it
    ends the connection here, not in ``create_connection``. The server's TLS alert says why,
    when it sends one; asyncio and uvloop servers send none (CPython gh-98078), so then say
    what it most likely was."""
    if stream.tls_error is not None:
        return stream.tls_error
    return _ssl.SSLError(
        "the broker closed the TLS connection before answering: it requires a client "
        "certificate (cert_file=) and got none, or did not accept the one given"
    )


def connect(
    url: str = f"roost://127.0.0.1:{DEFAULT_PORT}",
    *,
    reconnect: bool = True,
    ssl: _ssl.SSLContext | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    heartbeat: float | None = None,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
) -> Opening:
    """Talk to a ``roost serve`` at ``url``: ``async with roost.connect(url) as broker``.

    With ``reconnect`` (the default) a broken connection is reopened on the next call, and
    calls that are safe to repeat are retried on it (see ``roost.client.reconnect``).

    ``roosts://`` is TLS: the server's certificate is checked against the system's trust
    store, or ``ca_file``, and must name the URL's host; ``cert_file``/``key_file`` are a
    client certificate (mutual TLS); ``ssl`` is a context of your own instead. The rules are
    ``roost.client.tls``'s; a bad option raises ``ValueError`` here, at once.

    Credentials (``roost.client.credentials``) come in the URL, ``roost://user:password@host``
    (percent-encoded) or ``roost://:token@host``, or as ``username`` and ``password``, or
    ``token``. A broker that refuses them raises ``NotAuthenticated``, from here and from a
    reconnect alike: a wrong password is never retried.

    ``heartbeat`` (seconds; ``roost.client.liveness``): a broker that sends nothing for twice
    the heartbeat and a second though PINGed is gone: requests waiting on it raise
    ``ConnectionLost``, and with ``reconnect`` the next call connects again. None (the
    default) is the broker's own heartbeat (its ``heartbeat_ms``, 10 s unless set: gone
    after 21 s); a lower value PINGs more often and notices sooner (a higher one is lowered
    to the broker's); 0 never judges the broker's silence. Opening a connection that long
    without an answer raises ``TimeoutError``. ``clock`` and ``sleep`` time it (tests pass
    ones they drive).
    """
    parts = urlsplit(url if "://" in url else f"roost://{url}")
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"a Roost URL looks like roost://host:7420 (roosts:// for TLS), not {redacted(url)!r}"
        )
    host, port = parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT
    tls = client_tls(parts.scheme, ssl=ssl, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    credentials = Credentials.of(parts, username, password, token)
    pulse = Heartbeat(heartbeat, clock or SystemClock(), sleep or asyncio.sleep)

    async def open_client() -> Client:
        if reconnect:
            from roost.client.reconnect import ReconnectingBackend

            return Client(
                await ReconnectingBackend.connect(
                    host, port, credentials=credentials, ssl=tls, heartbeat=pulse
                )
            )
        return Client(
            await NetworkBackend.connect(host, port, credentials, ssl=tls, heartbeat=pulse)
        )

    return Opening(open_client)


def redacted(url: str) -> str:
    """``url`` without the password or token it may hold, for messages and logs."""
    scheme, _, rest = url.partition("://")
    userinfo, at, address = rest.rpartition("@")
    return f"{scheme}://{userinfo.split(':')[0]}:***@{address}" if at else url
