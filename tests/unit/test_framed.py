"""``FramedStream``: frames straight from the socket into the codec, with flow control both ways.

Real loopback sockets; the raw side is a plain asyncio stream so the bytes are exactly ours.
"""

from __future__ import annotations

import asyncio

import pytest

from roost.clock import ManualClock
from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, HEADER_SIZE, Frame, Kind, NativeCodec, encode
from roost.server import framed
from roost.server.framed import FramedStream, open_framed

HELLO = encode(Frame(Kind.HELLO, 0, m.Hello([2, 1])))
WELCOME = Frame(Kind.WELCOME, 0, m.Welcome(2, "test", 1 << 20, 10_000))


async def _hello(stream: FramedStream) -> Frame | None:
    """Take the client's HELLO and welcome it: the connection is open for other frames."""
    frame = await stream.next_frame()
    stream.write(stream.codec.send(WELCOME))
    return frame


async def _pair() -> tuple[FramedStream, asyncio.StreamReader, asyncio.StreamWriter]:
    """A server-side ``FramedStream`` and the raw client socket talking to it."""
    accepted: asyncio.Future[FramedStream] = asyncio.get_running_loop().create_future()

    async def connected(stream: FramedStream) -> None:
        accepted.set_result(stream)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FramedStream(NativeCodec("server"), connected), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stream = await accepted
    server.close()
    return stream, reader, writer


def in_pair(body):
    """Run ``body(stream, reader, writer)`` on a fresh connected pair, then close both ends."""

    async def main() -> None:
        stream, reader, writer = await _pair()
        try:
            await body(stream, reader, writer)
        finally:
            writer.close()
            stream.close()
            await stream.wait_closed()
            await writer.wait_closed()

    asyncio.run(main())


def test_frames_split_across_reads_arrive_whole_then_none_at_eof() -> None:
    in_pair(_frames_split)


async def _frames_split(stream, _, writer) -> None:
    ping = encode(Frame(Kind.PING, 7, m.Empty()))
    wire = HELLO + ping
    for i in range(len(wire)):  # one byte at a time: every cut point of both frames
        writer.write(wire[i : i + 1])
        await writer.drain()
    writer.write_eof()
    frames = [await _hello(stream), await stream.next_frame()]
    assert [(f.kind, f.correlation) for f in frames if f] == [(Kind.HELLO, 0), (Kind.PING, 7)]
    assert await stream.next_frame() is None


def test_bytes_that_break_the_protocol_raise_from_next_frame() -> None:
    in_pair(_broken)


async def _broken(stream, _, writer) -> None:
    writer.write(HEADER.pack(HEADER_SIZE - 4, 255, 0))
    with pytest.raises(ProtocolError, match="kind 255"):
        await stream.next_frame()
    writer.write(HELLO)  # nothing more is taken
    with pytest.raises(ProtocolError):
        await stream.next_frame()


def test_a_reader_that_falls_behind_pauses_the_socket_until_it_reads(monkeypatch) -> None:
    monkeypatch.setattr(framed, "PAUSE_AT_BYTES", 1000)
    in_pair(_behind)


async def _behind(stream, _, writer) -> None:
    ping = encode(Frame(Kind.PING, 1, m.Empty()))
    writer.write(HELLO + ping * 200)  # ~2.6 kB, nobody reading
    await writer.drain()
    while stream.codec.buffered <= 1000:
        await asyncio.sleep(0)  # a loop turn, not time: let the bytes arrive
    assert stream._reading_paused
    frames = [await _hello(stream)] + [await stream.next_frame() for _ in range(200)]
    assert len(frames) == 201 and not stream._reading_paused


def test_drain_waits_while_the_peer_does_not_read_and_fails_when_it_goes() -> None:
    asyncio.run(_drain())


async def _drain() -> None:
    stream, _reader, writer = await _pair()
    chunk = b"\x00" * (1 << 20)
    while not stream._writing_paused:  # the peer reads nothing: the send buffer fills
        stream.write(chunk)
        await asyncio.sleep(0)
    draining = asyncio.ensure_future(stream.drain())
    await asyncio.sleep(0)
    assert not draining.done()
    writer.transport.abort()  # the peer goes away without reading
    with pytest.raises(ConnectionResetError):
        await draining
    with pytest.raises(ConnectionResetError):
        await stream.drain()
    stream.close()
    await stream.wait_closed()


def test_a_client_stream_talks_to_a_listener() -> None:
    asyncio.run(_client())


async def _client() -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[Frame | None] = loop.create_future()

    async def connected(stream: FramedStream) -> None:
        got.set_result(await stream.next_frame())
        stream.close()

    server = await loop.create_server(
        lambda: FramedStream(NativeCodec("server"), connected), "127.0.0.1", 0
    )
    client = await open_framed(
        NativeCodec("client"), "127.0.0.1", server.sockets[0].getsockname()[1]
    )
    client.write(client.codec.send(Frame(Kind.HELLO, 0, m.Hello([2]))))
    frame = await got
    assert frame is not None and frame.kind is Kind.HELLO
    assert await client.next_frame() is None  # the server closed
    client.close()
    await client.wait_closed()
    server.close()
    await server.wait_closed()


def test_dispatch_hands_over_buffered_frames_first_then_each_as_it_arrives() -> None:
    in_pair(_dispatching)


async def _dispatching(stream, _, writer) -> None:
    ping = encode(Frame(Kind.PING, 3, m.Empty()))
    writer.write(HELLO + ping)
    await writer.drain()
    assert (await _hello(stream)).kind is Kind.HELLO  # the PING stays buffered
    seen: list[int] = []

    def on_frame(frame: Frame) -> bool:
        seen.append(frame.correlation)
        return frame.kind is not Kind.GOODBYE

    dispatching = asyncio.ensure_future(stream.dispatch(on_frame))
    await asyncio.sleep(0)
    assert seen == [3]
    writer.write(encode(Frame(Kind.PING, 4, m.Empty())))
    writer.write(encode(Frame(Kind.GOODBYE, 5, m.Empty())) + ping)
    await dispatching  # returned at GOODBYE: the PING after it is not handed over
    assert seen == [3, 4, 5]


def test_dispatch_ends_at_eof_and_raises_for_broken_bytes() -> None:
    in_pair(_dispatch_eof)
    in_pair(_dispatch_broken)


async def _dispatch_eof(stream, _, writer) -> None:
    writer.write(HELLO)
    writer.write_eof()
    frames: list[Frame] = []
    await stream.dispatch(lambda frame: frames.append(frame) is None)
    assert [f.kind for f in frames] == [Kind.HELLO]


async def _dispatch_broken(stream, _, writer) -> None:
    writer.write(HELLO[:-1])
    writer.write_eof()  # the stream ends inside a frame
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        await stream.dispatch(lambda frame: True)


def test_a_frame_larger_than_the_pause_mark_still_arrives_whole(monkeypatch) -> None:
    monkeypatch.setattr(framed, "PAUSE_AT_BYTES", 1000)
    in_pair(_large_frame)


async def _large_frame(stream, _, writer) -> None:
    big = encode(Frame(Kind.REQUEST, 1, m.Publish("t", [m.Out(b"x" * 1_000_000)])))
    writer.write(HELLO + big)  # the socket pauses long before the frame is whole
    await _hello(stream)
    frame = await asyncio.wait_for(stream.next_frame(), 5)
    assert frame is not None and frame.kind is Kind.REQUEST


def test_dispatch_resumes_a_socket_that_pulling_paused(monkeypatch) -> None:
    monkeypatch.setattr(framed, "PAUSE_AT_BYTES", 1000)
    in_pair(_paused_then_dispatched)


async def _paused_then_dispatched(stream, _, writer) -> None:
    writer.write(HELLO)
    await _hello(stream)
    writer.write(encode(Frame(Kind.PING, 1, m.Empty())) * 200)
    await writer.drain()
    while not stream._reading_paused:
        await asyncio.sleep(0)  # a loop turn, not time: let the bytes arrive
    kinds: list[Kind] = []
    dispatching = asyncio.ensure_future(
        stream.dispatch(lambda frame: kinds.append(frame.kind) or frame.kind is not Kind.GOODBYE)
    )
    writer.write(encode(Frame(Kind.GOODBYE, 0, m.Empty())))
    await asyncio.wait_for(dispatching, 5)
    assert kinds == [Kind.PING] * 200 + [Kind.GOODBYE]


def test_what_the_frames_of_one_read_write_leaves_in_one_write(monkeypatch) -> None:
    in_pair(_held_writes)
    monkeypatch.setattr(framed, "HOLD_BYTES", 2 * HEADER_SIZE)
    in_pair(_held_up_to_the_limit)


def _pong_each_ping(stream: FramedStream) -> tuple[list[bytes], asyncio.Future[None]]:
    """Dispatch, answering each PING with a PONG; returns the transport's writes."""
    writes: list[bytes] = []
    transport = stream._transport
    write = transport.write

    def recording(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    transport.write = recording  # type: ignore[method-assign]

    def on_frame(frame: Frame) -> bool:
        if frame.kind is Kind.PING:
            stream.write(stream.codec.send(Frame(Kind.PONG, frame.correlation, m.Empty())))
        return frame.kind is not Kind.GOODBYE

    return writes, asyncio.ensure_future(stream.dispatch(on_frame))


def _pings(*correlations: int) -> bytes:
    return b"".join(encode(Frame(Kind.PING, c, m.Empty())) for c in correlations)


async def _held_writes(stream, reader, writer) -> None:
    writer.write(HELLO)
    await _hello(stream)
    await reader.readexactly(len(encode(WELCOME)))
    writes, dispatching = _pong_each_ping(stream)
    writer.write(_pings(1, 2, 3))
    await writer.drain()
    answers = await reader.readexactly(len(_pings(1, 2, 3)))
    assert len(writes) == 1, "three answers, one write"
    assert answers == writes[0]
    for correlation in (7, 8, 9):  # outside a read: as pushes woken in one turn are
        stream.write(stream.codec.send(Frame(Kind.PONG, correlation, m.Empty())))
    assert len(writes) == 1, "held until the end of the turn"
    await reader.readexactly(3 * len(encode(Frame(Kind.PONG, 7, m.Empty()))))
    assert len(writes) == 2, "the turn's writes, in one write"
    writer.write(encode(Frame(Kind.GOODBYE, 0, m.Empty())))
    await dispatching


async def _held_up_to_the_limit(stream, reader, writer) -> None:
    writer.write(HELLO)
    await _hello(stream)
    writes, dispatching = _pong_each_ping(stream)
    writer.write(_pings(1, 2, 3, 4, 5))
    await writer.drain()
    await reader.readexactly(len(_pings(1, 2, 3, 4, 5)) + len(encode(WELCOME)))
    assert [len(w) // HEADER_SIZE for w in writes] == [2, 2, 1], "held, a limit at a time"
    writer.write(encode(Frame(Kind.GOODBYE, 0, m.Empty())))
    await dispatching


# -- holds on reading, and the times a watchdog reads -------------------------------------


def test_a_hold_stops_handing_over_frames_until_it_is_released() -> None:
    in_pair(_holding)


async def _holding(stream, _, writer) -> None:
    writer.write(HELLO)
    await _hello(stream)
    seen: list[int] = []

    def on_frame(frame: Frame) -> bool:
        seen.append(frame.correlation)
        if frame.correlation == 1:
            stream.hold_reading("test")
        return True

    dispatching = asyncio.ensure_future(stream.dispatch(on_frame))
    writer.write(b"".join(encode(Frame(Kind.PING, n, m.Empty())) for n in (1, 2, 3)))
    await writer.drain()
    while not seen:
        await asyncio.sleep(0)
    for _ in range(20):  # loop turns, not time: nothing more is handed over
        await asyncio.sleep(0)
    assert seen == [1] and stream.holds == {"test"} and stream._transport_paused
    stream.release_reading("test")
    while len(seen) < 3:
        await asyncio.sleep(0)
    assert seen == [1, 2, 3] and not stream.holds and not stream._transport_paused
    writer.write_eof()
    await dispatching


def test_a_peer_that_does_not_read_what_it_is_sent_stops_being_read() -> None:
    in_pair(_unsent)


async def _unsent(stream, reader, writer) -> None:
    stream.max_unsent_bytes = 256 * 1024
    chunk = b"\x00" * (64 * 1024)
    written = 0
    while framed.UNSENT not in stream.holds:  # the peer reads nothing: the send buffer fills
        stream.write(chunk)
        written += len(chunk)
        await asyncio.sleep(0)
        assert written < 256 * 1024 * 1024, "the hold never came"
    assert stream._transport_paused
    assert stream._transport.get_write_buffer_size() <= 256 * 1024 + len(chunk)
    await reader.readexactly(written)  # the peer takes it all: reading goes on
    assert not stream.holds and not stream._transport_paused


def test_a_frame_arriving_is_timed_from_its_first_bytes_until_it_is_whole() -> None:
    async def main() -> None:
        clock = ManualClock()
        accepted: asyncio.Future[FramedStream] = asyncio.get_running_loop().create_future()

        async def connected(stream: FramedStream) -> None:
            accepted.set_result(stream)

        server = await asyncio.get_running_loop().create_server(
            lambda: FramedStream(NativeCodec("server"), connected, clock), "127.0.0.1", 0
        )
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1]
        )
        stream = await accepted
        server.close()
        writer.write(HELLO)
        await _hello(stream)
        frames: list[Frame] = []
        dispatching = asyncio.ensure_future(stream.dispatch(lambda f: frames.append(f) is None))
        ping = encode(Frame(Kind.PING, 1, m.Empty()))
        clock.advance(1_000)
        writer.write(ping[:4])  # the length, and nothing more
        await writer.drain()
        while stream.frame_started_ms is None:
            await asyncio.sleep(0)
        assert stream.frame_started_ms == stream.last_received_ms == 1_000
        clock.advance(500)
        writer.write(ping[4:7])
        await writer.drain()
        while stream.last_received_ms != 1_500:
            await asyncio.sleep(0)
        assert stream.frame_started_ms == 1_000  # still the same frame
        writer.write(ping[7:])
        await writer.drain()
        while not frames:
            await asyncio.sleep(0)
        assert stream.frame_started_ms is None
        writer.write_eof()
        await dispatching
        writer.close()
        stream.close()
        await stream.wait_closed()
        await writer.wait_closed()

    asyncio.run(main())


def test_after_a_hold_the_peer_s_silence_and_its_frame_are_timed_from_the_release() -> None:
    clock = ManualClock()
    stream = FramedStream(NativeCodec("server"), clock=clock)
    stream.frame_started_ms = 0
    stream.hold_reading(framed.UNSENT)
    stream.hold_reading(framed.MEMORY)
    clock.advance(60_000)
    stream.release_reading(framed.MEMORY)  # the alarm's hold: the frame stays timed
    assert stream.frame_started_ms == 0 and stream.last_received_ms == 0
    clock.advance(1_000)
    stream.release_reading(framed.UNSENT)  # it waited on us: timed afresh
    assert stream.frame_started_ms == stream.last_received_ms == 61_000
    assert not stream.holds
