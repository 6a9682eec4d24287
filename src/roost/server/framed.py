"""The socket side of a native-protocol connection: bytes go from the transport into the codec.

asyncio's ``StreamReader`` copies what arrives into a buffer of its own, and ``read`` copies it
out again before the codec copies it a third time; replaying megabyte answers, those two extra
copies were a quarter of the reader's CPU. Here ``data_received`` feeds the codec directly, and
the one task that reads a connection takes whole frames with ``await next_frame()``, or has
them handed to a callback as they arrive with ``await dispatch(on_frame)``. Used by both ends:
the listener's connections and ``roost.connect``'s.

    stream = FramedStream(NativeCodec("client"))
    await loop.create_connection(lambda: stream, host, port)
    stream.write(stream.codec.send(frame))
    await stream.drain()              # waits while the socket's send buffer is full
    frame = await stream.next_frame() # None once the peer has closed

Flow control both ways, as streams have it: a reader that falls behind by more than
``PAUSE_AT_BYTES`` of undecoded input pauses the socket until it has taken half of that, and
``drain`` waits while the transport's send buffer is over its high-water mark.

Bounds on what one connection can make this process hold (docs/operations.md, "Memory and
connection bounds"): the owner may *hold* reading for named reasons (``hold_reading``): the
socket is paused and no further frame is handed over until every hold is released. The
stream holds reading itself while more than ``max_unsent_bytes`` wait in the transport to be
sent (a peer that does not read what it is sent stops being read), and, while
``hold_partial_over`` is set, when a frame still arriving has more than that many bytes (the
broker is over its memory budget). ``last_received_ms`` and ``frame_started_ms`` (on the
stream's clock) are what a watchdog needs to end silent peers and frames that never finish.

What the frames of one read make a connection write to its own socket leaves in one write
when they are all handled (``HOLD_BYTES`` at most are held): the confirms of a burst of
publishes cost the peer one wake-up, and this process one syscall. Writes made outside a read
(a push woken by another connection's publish, an answer a task finishes) are held the same
way until the end of the loop's turn: a consumer of 1,000 queues pushed to by one flush round
gets one write with every push in it, not one per subscription. ``close`` sends what is held
first; ``abort`` drops it with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from roost.clock import Clock, SystemClock
from roost.errors import ProtocolError
from roost.protocols.native.codec import NEED_DATA, Frame, NativeCodec

log = logging.getLogger("roost.native")
#: Undecoded bytes held before the socket is paused (the codec's own limit is far above).
PAUSE_AT_BYTES = 1024 * 1024
#: Written at once past this much, even while the frames of one read are still handled.
HOLD_BYTES = 64 * 1024
#: Unsent bytes past which a connection stops being read until the peer takes them.
MAX_UNSENT_BYTES = 1024 * 1024
#: Bytes the kernel may hold unsent for a peer (TCP_NOTSENT_LOWAT): past them a write stays in
#: the transport's buffer, where ``max_unsent_bytes`` sees it. Left to itself the kernel grows
#: a send buffer to 4 MiB even for a peer that reads nothing, which hides ~140,000 unread
#: publish answers from the broker. The listener's connections start at the small bound: their
#: answers are small until they are sent a frame larger than that (deliveries, a fetch), and
#: then they get the large one, so that big frames keep the kernel busy between wake-ups
#: (clients keep the large one from the start). A producer that never reads its answers is
#: stopped after ~10,000 one-message publishes at the small bound, ~16,000 at the large one
#: (what the peer's own receive window holds is the rest).
KERNEL_UNSENT_SMALL_BYTES = 16 * 1024
KERNEL_UNSENT_BYTES = 128 * 1024
#: The hold a full send buffer puts on reading.
UNSENT = "unsent"
#: The hold a large frame still arriving puts on reading while ``hold_partial_over`` is set.
MEMORY = "memory"
#: A frame arriving with more than this buffered calls ``on_large_frame`` on each read.
LARGE_FRAME_BYTES = 1024 * 1024


def _bound_kernel_unsent(transport: asyncio.BaseTransport, limit: int) -> None:
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS have it
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, limit)


class FramedStream(asyncio.Protocol):
    def __init__(
        self,
        codec: NativeCodec,
        on_connect: Callable[[FramedStream], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        max_unsent_bytes: int = MAX_UNSENT_BYTES,
        kernel_unsent_bytes: int = KERNEL_UNSENT_BYTES,
    ) -> None:
        self.codec = codec
        self._clock = clock or SystemClock()
        self.max_unsent_bytes = max_unsent_bytes
        #: When bytes last came from the peer (monotonic ms; the connection's start before).
        self.last_received_ms = self._clock.monotonic_ms()
        #: Since when a frame has been arriving and is not whole yet (None: none is).
        self.frame_started_ms: int | None = None
        #: Set while the broker is over its memory budget: a frame still arriving with more
        #: than this many bytes holds reading (``MEMORY``) until the owner releases it.
        self.hold_partial_over: int | None = None
        #: Called on each read while a frame of more than ``LARGE_FRAME_BYTES`` is arriving:
        #: the owner checks the memory budget then, not only on its timer.
        self.on_large_frame: Callable[[], None] | None = None
        self._holds: set[str] = set()
        self._transport_paused = False  # what pause_reading was last told, for any reason
        self._on_connect = on_connect
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None  # on_connect's, referenced while it runs
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # the peer closed its side, or the connection is gone
        self._reading_paused = False
        self._writing_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        #: Writes held to leave together: while the frames of a read are handled, or until
        #: the end of this turn of the loop (``_turn_flush`` is then scheduled).
        self._held: list[bytes] | None = None
        self._held_bytes = 0
        self._turn_flush = False
        self._before_flush: list[Callable[[], None]] = []  # see ``at_turn_end``
        self._lost: asyncio.Future[None] | None = None
        self._lost_error: BaseException | None = None
        self._on_frame: Callable[[Frame], bool] | None = None
        self._reading: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
        #: Called when the transport takes writes again after ``drain`` would have waited.
        self.on_writable: Callable[[], None] | None = None
        self._dispatching: asyncio.Future[None] | None = None
        #: The kernel's bound on unsent bytes (``KERNEL_UNSENT_*``) until a frame larger than
        #: it is written; then ``KERNEL_UNSENT_BYTES``.
        self._kernel_unsent_bytes = kernel_unsent_bytes
        self._large_frames = kernel_unsent_bytes >= KERNEL_UNSENT_BYTES

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._lost = asyncio.get_running_loop().create_future()
        _bound_kernel_unsent(transport, self._kernel_unsent_bytes)
        if self._on_connect is not None:
            self._task = asyncio.ensure_future(self._on_connect(self))
            self._task.add_done_callback(_report)

    def data_received(self, data: bytes) -> None:
        if self.codec.failed:
            return  # the reader raises the codec's error; nothing more is read
        self.last_received_ms = self._clock.monotonic_ms()
        # A ProtocolError is kept by the codec: the reader's next_frame raises it.
        with contextlib.suppress(ProtocolError):
            self.codec.receive_data(data)
        if self._on_frame is not None:
            self._deliver()
            buffered = self.codec.buffered
            if buffered > LARGE_FRAME_BYTES and self.on_large_frame is not None:
                self.on_large_frame()  # may set hold_partial_over: the budget is over
            limit = self.hold_partial_over
            if limit is not None and buffered > limit:
                self.hold_reading(MEMORY)
            return
        if self.codec.buffered > PAUSE_AT_BYTES and not self._reading_paused:
            self._reading_paused = True
            self._apply_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._end()
        # Half-open: answers already on their way may still be written. TLS has no half-close
        # (the peer's close_notify ends the session; asyncio and uvloop warn if asked to keep
        # it open), so over TLS the transport closes itself.
        return self._transport is None or self._transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost_error = exc or ConnectionResetError("connection lost")
        self._holds.clear()  # nothing more can be read, nor answered: what was read is handled
        self._end()
        for drainer in self._drainers:
            if not drainer.done():
                drainer.set_exception(ConnectionResetError("connection lost"))
        self._drainers.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._check_unsent()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.release_reading(UNSENT)
        for drainer in self._drainers:
            if not drainer.done():
                drainer.set_result(None)
        self._drainers.clear()
        if self.on_writable is not None:
            self.on_writable()

    # -- reading --------------------------------------------------------------------------

    async def next_frame(self) -> Frame | None:
        """The next whole frame; None once the peer has closed and every frame it sent is
        taken. Raises the codec's ``ProtocolError`` for bytes that break the protocol."""
        while True:
            frame = self.codec.next_event()
            if self.codec.buffered < PAUSE_AT_BYTES // 2:
                self._resume_reading()
            if frame is not NEED_DATA:
                assert isinstance(frame, Frame)
                return frame
            if self._ended:
                return None
            self._resume_reading()  # a frame larger than the pause mark needs the rest
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def dispatch(
        self,
        on_frame: Callable[[Frame], bool],
        reading: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        """Hand each frame to ``on_frame`` the moment it arrives, inside ``data_received``:
        no task wakes up per read (each wake-up is a turn of the loop, and under load a turn
        is where the latency goes). Frames already buffered go first. The frames of one read
        are handled inside ``with reading()``. Returns once the peer has closed, or when
        ``on_frame`` returns False; raises the codec's ``ProtocolError``, and whatever
        ``on_frame`` raises."""
        self._on_frame = on_frame
        self._reading = reading
        self._dispatching = asyncio.get_running_loop().create_future()
        self._resume_reading()  # what pulling paused: from now on nothing piles up
        self._deliver()
        try:
            await self._dispatching
        finally:
            self._on_frame = None

    def _deliver(self) -> None:
        done, on_frame = self._dispatching, self._on_frame
        if done is None or done.done() or on_frame is None:
            return
        if self._held is None:
            self._held = []
        try:
            with self._reading():
                while not self._holds and (frame := self.codec.next_event()) is not NEED_DATA:
                    assert isinstance(frame, Frame)
                    if not on_frame(frame):
                        done.set_result(None)
                        return
        except Exception as e:
            if not done.done():  # done already when the frame that ended it came first
                done.set_exception(e)
            return
        finally:
            self._release()
        if not self.codec.buffered or not self.codec.frame_pending:
            self.frame_started_ms = None  # none is arriving, or the next is whole: ours to take
        elif self.frame_started_ms is None:
            self.frame_started_ms = self._clock.monotonic_ms()
        if self._transport_paused or self._holds:
            self._apply_reading()
        if self._ended and not self._holds:
            done.set_result(None)

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._apply_reading()

    # -- holds on reading -----------------------------------------------------------------

    @property
    def holds(self) -> frozenset[str]:
        """Why reading is held now (empty: it is not)."""
        return frozenset(self._holds)

    def hold_reading(self, reason: str) -> None:
        """Stop reading the socket, and handing over frames already read, for ``reason``,
        until ``release_reading(reason)``; holds for several reasons add up. Once the
        connection is lost nothing is held: what was read is handled, and nothing more comes."""
        if reason not in self._holds and self._lost_error is None:
            self._holds.add(reason)
            self._apply_reading()

    def release_reading(self, reason: str) -> None:
        """Drop the hold for ``reason``; with none left, frames already read are handed over
        (in a turn of their own: this may be called while a frame is being handled) and the
        socket is read again. The peer's silence is timed from now (it was ours), and so is a
        frame that was arriving, unless the hold was the memory alarm's (``overdue``)."""
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        now_ms = self._clock.monotonic_ms()
        if reason != MEMORY and self.frame_started_ms is not None:
            self.frame_started_ms = now_ms  # the frame waited on us, not on the peer
        if self._holds:
            return
        self.last_received_ms = now_ms  # the silence while held was ours, not the peer's
        if self._on_frame is not None:
            # Frames already read go first; the socket is read again once they are taken.
            asyncio.get_running_loop().call_soon(self._deliver)
        else:
            self._apply_reading()

    def _apply_reading(self) -> None:
        # Whole frames left unhandled (a hold came while a read's frames were handed over)
        # count as a hold of their own: reading on would pile more up behind them.
        backlog = (
            self._on_frame is not None
            and bool(self.codec.buffered)
            and not self.codec.frame_pending
        )
        paused = bool(self._holds) or self._reading_paused or backlog
        transport = self._transport
        if paused is self._transport_paused or transport is None or transport.is_closing():
            return
        self._transport_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _check_unsent(self) -> None:
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() > self.max_unsent_bytes:
            self.hold_reading(UNSENT)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            if not self.codec.failed:
                self.codec.receive_data(b"")
        self._wake_reader()
        self._deliver()

    def _wake_reader(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- writing --------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """The transport is open and under its high-water mark: a write would not pile up."""
        transport = self._transport
        return transport is not None and not transport.is_closing() and not self._writing_paused

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        if not self._large_frames and len(data) > self._kernel_unsent_bytes:
            self._first_large_frame()
        held = self._held
        if held is None:
            held = self._held = []
        self._schedule_flush()
        held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes >= HOLD_BYTES:  # the transport's buffer and flow control take it
            self._release(hold_on=True)

    def at_turn_end(self, write: Callable[[], None]) -> None:
        """Call ``write`` at the end of this turn, just before what the turn wrote is sent,
        so that what it writes leaves in the same write: a consumer's ``Credit``, made once
        the turn's settlements are counted, travels with the ``Ack`` that freed it."""
        self._before_flush.append(write)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._turn_flush:
            # Sent at the end of this turn, with whatever else the turn writes: the callbacks
            # already ready (other pushes, other answers) run before this one.
            self._turn_flush = True
            asyncio.get_running_loop().call_soon(self._flush_turn)

    def write_parts(self, parts: list[bytes]) -> None:
        """Write ``parts`` as one, without joining them (large ones: a copy spared), now,
        behind what is held (which goes first, ahead of them)."""
        assert self._transport is not None
        if self._held:
            self._release()
        if not self._large_frames and sum(map(len, parts)) > self._kernel_unsent_bytes:
            self._first_large_frame()
        self._transport.writelines(parts)
        if self._writing_paused:
            self._check_unsent()

    def _first_large_frame(self) -> None:
        self._large_frames = True
        if self._transport is not None:
            _bound_kernel_unsent(self._transport, KERNEL_UNSENT_BYTES)

    def _flush_turn(self) -> None:
        writers, self._before_flush = self._before_flush, []
        for write in writers:
            write()  # what they write joins what is held (no second flush is scheduled)
        self._turn_flush = False
        self._release()
        if self._before_flush:  # asked for while the others wrote: the next turn's
            self._schedule_flush()

    def _release(self, hold_on: bool = False) -> None:
        held, self._held, self._held_bytes = self._held, [] if hold_on else None, 0
        if held and self._transport is not None and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))
            if self._writing_paused:
                self._check_unsent()

    async def drain(self) -> None:
        """Return once the transport will take more; ``ConnectionResetError`` if it is gone."""
        if self._lost_error is not None:
            raise ConnectionResetError("connection lost") from self._lost_error
        if not self._writing_paused:
            return
        drainer = asyncio.get_running_loop().create_future()
        self._drainers.append(drainer)
        await drainer

    def close(self) -> None:
        """Close once what is written (held or in the transport) is sent."""
        if self._transport is not None:
            self._release()
            self._transport.close()

    def abort(self) -> None:
        """Close now, dropping whatever is still to be sent."""
        self._held, self._held_bytes = None, 0
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        if self._lost is not None:
            await asyncio.shield(self._lost)

    @property
    def tls_error(self) -> _ssl.SSLError | None:
        """The TLS error the connection ended with, if it did: over TLS 1.3 a server refuses
        a client's certificate after the client's handshake is done, so the client learns it
        here, when the connection drops, instead of from ``create_connection``."""
        error = self._lost_error
        return error if isinstance(error, _ssl.SSLError) else None

    def get_extra_info(self, name: str) -> Any:
        return None if self._transport is None else self._transport.get_extra_info(name)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a connection's task failed", exc_info=error)


async def open_framed(
    codec: NativeCodec,
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    clock: Clock | None = None,
    max_unsent_bytes: int = MAX_UNSENT_BYTES,
) -> FramedStream:
    """A client connection to ``host:port`` reading into ``codec``; with ``ssl``, over TLS,
    checking the server's certificate names ``host`` (unless the context says otherwise).
    ``last_received_ms`` is on ``clock``."""
    stream = FramedStream(codec, clock=clock, max_unsent_bytes=max_unsent_bytes)
    await asyncio.get_running_loop().create_connection(lambda: stream, host, port, ssl=ssl)
    return stream
