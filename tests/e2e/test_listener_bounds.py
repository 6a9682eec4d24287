"""The native listener's bounds, on 127.0.0.1 in this process: the host's clock is a
``ManualClock`` and the test calls the watchdog's tick, so every timeout is decided by the
test, never by waiting.

- a frame that starts and stalls, and a version-5 peer that falls silent, are closed with a
  ``FAILURE`` naming the limit; a version-4 peer's silence is not held against it; a client
  that pings stays;
- a full listener evicts a connection still in its handshake, or one long silent, for a
  newcomer, and refuses when there is none;
- over the memory budget publishers get ``BLOCKED`` and are not read, while a consumer still
  receives and acks; ``UNBLOCKED`` and the publishes go through;
- a client pipelining requests it has no answers for yet stops being read at
  ``MAX_IN_FLIGHT``, or at ``MAX_IN_FLIGHT_BYTES`` of them when they are large;
- a producer that never reads its answers stops being read once they back up, after tens of
  thousands of small publishes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

import roost
from roost import Outgoing
from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, NEED_DATA, Frame, Kind
from roost.server.framed import (
    KERNEL_UNSENT_BYTES,
    KERNEL_UNSENT_SMALL_BYTES,
    MAX_UNSENT_BYTES,
    MEMORY,
)
from roost.server.native_server import (
    IN_FLIGHT,
    MAX_IN_FLIGHT,
    MAX_IN_FLIGHT_BYTES,
    NativeConnection,
)
from roost.server.watchdog import Timeouts
from tests.e2e.auth_support import RawClient, Served, serving

TIMEOUTS = Timeouts(frame_timeout_ms=30_000, heartbeat_ms=10_000)


async def never(seconds: float) -> None:
    """The watchdog's sleep: it ticks only when a test calls ``tick``."""
    await asyncio.Event().wait()


def bounded(**options: object) -> dict[str, object]:
    return {"timeouts": TIMEOUTS, "watchdog_sleep": never, **options}


def run(body):  # type: ignore[no-untyped-def]
    asyncio.run(body())


async def until(condition: Callable[[], object]) -> None:
    """Loop turns until ``condition()`` holds (5 s at most: a safety net, not the wait)."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


async def opened(served: Served, versions: list[int]) -> tuple[RawClient, NativeConnection]:
    """A raw client past its handshake, and the server's side of it."""
    before = set(served.listener.connections)
    raw = await RawClient.open(served.port)
    welcome = await raw.hello(versions)
    assert welcome is not None and welcome.kind is Kind.WELCOME
    await until(lambda: any(c.open for c in served.listener.connections - before))
    (connection,) = served.listener.connections - before
    return raw, connection


async def failure_then_closed(raw: RawClient) -> m.Failure:
    frame = await raw.receive()
    assert frame is not None and frame.kind is Kind.FAILURE
    assert await raw.closed()
    assert isinstance(frame.message, m.Failure)
    return frame.message


def test_a_frame_that_starts_and_stalls_is_closed_at_the_frame_timeout(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, **bounded()) as served:
            raw, connection = await opened(served, [4, 3, 2, 1])
            # A header that declares 16 MiB, and 1000 bytes of it.
            raw.send_bytes(HEADER.pack(16 * 1024 * 1024, Kind.REQUEST, 1) + b"\x00" * 1000)
            await until(lambda: connection._stream.frame_started_ms is not None)
            served.clock.advance(29_999)
            served.listener.watchdog.tick()  # type: ignore[union-attr]
            assert connection in served.listener.connections
            served.clock.advance(1)
            served.listener.watchdog.tick()  # type: ignore[union-attr]
            failure = await failure_then_closed(raw)
            assert failure.code == "protocol_error"
            assert "is not whole (frame_timeout_ms=30000)" in failure.message
            assert served.host.listeners["native"].timed_out == 1
            async with roost.connect(served.url(), reconnect=False) as good:
                assert await good.list_topics() == []

    run(body)


def test_silence_closes_a_version_5_peer_and_not_a_version_4_one(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, **bounded()) as served:
            new, _ = await opened(served, [5, 4])
            old, old_side = await opened(served, [4])
            served.clock.advance(20_000)
            served.listener.watchdog.tick()  # type: ignore[union-attr]
            failure = await failure_then_closed(new)
            assert failure.code == "protocol_error"
            assert failure.message.endswith("(twice heartbeat_ms=10000)")
            assert served.listener.connections == {old_side}
            old.send(Frame(Kind.PING, 7, m.Empty()))  # alive, and served
            pong = await old.receive()
            assert pong is not None and pong.kind is Kind.PONG
            await old.aclose()

    run(body)


def test_a_client_that_pings_is_not_closed_for_silence(tmp_path: Path) -> None:
    """The client pings every ``heartbeat_ms`` the WELCOME names (50 here: the only real
    time in this file, and what is waited for is a ping's arrival, not a duration)."""

    async def body() -> None:
        async with serving(tmp_path, **bounded(timeouts=Timeouts(heartbeat_ms=50))) as served:
            stats = served.host.listeners["native"]
            async with roost.connect(served.url(), reconnect=False) as client:
                assert client.protocol_version == 5
                served.clock.advance(100)  # silent for twice the interval, by the clock...
                received = stats.frames_received
                await until(lambda: stats.frames_received > received)  # ...until a PING
                served.listener.watchdog.tick()  # type: ignore[union-attr]
                assert stats.timed_out == 0
                assert await client.list_topics() == []

    run(body)


def test_a_full_listener_evicts_a_handshake_then_a_silent_peer_then_refuses(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with serving(tmp_path, **bounded(max_connections=2)) as served:
            stats = served.host.listeners["native"]
            waiting = await RawClient.open(served.port)  # says nothing: in its handshake
            await until(lambda: len(served.listener.connections) == 1)
            silent, _ = await opened(served, [4])
            pinging, _ = await opened(served, [4])  # full: the handshake made room
            assert stats.evicted == 1
            await refused_before_hello(waiting)

            refused = await RawClient.open(served.port)  # full, and nobody silent for long
            assert "max_connections=2" in await refused_before_hello(refused)

            served.clock.advance(20_000)
            pinging.send(Frame(Kind.PING, 1, m.Empty()))
            assert (await pinging.receive()).kind is Kind.PONG  # type: ignore[union-attr]
            async with roost.connect(served.url(), reconnect=False) as newcomer:
                failure = await failure_then_closed(silent)
                assert failure.code == "unavailable" and failure.retriable
                assert "this one was silent" in failure.message
                assert await newcomer.list_topics() == []
            assert stats.evicted == 2 and stats.refused == 1
            await pinging.aclose()

    run(body)


async def refused_before_hello(raw: RawClient) -> str:
    """The FAILURE a connection got before its HELLO (which a client codec refuses to take
    then), as the codec words it, once the server closed it."""
    with pytest.raises(ProtocolError, match="may not send FAILURE") as refusal:
        await raw.receive()
    await raw.aclose()
    raw_bytes = raw.codec._buffer._data  # the frame is still there, undecoded
    return bytes(raw_bytes).decode("utf-8", "replace") + str(refusal.value)


class Memory:
    def __init__(self) -> None:
        self.used = 0

    def sample(self) -> int:
        return self.used


def test_over_the_memory_budget_publishers_wait_and_consumers_go_on(tmp_path: Path) -> None:
    async def body() -> None:
        memory = Memory()
        options = bounded(max_memory="1000000", sample_memory=memory.sample)
        async with serving(tmp_path, **options) as served:
            watchdog = served.listener.watchdog
            assert watchdog is not None
            async with (
                roost.connect(served.url(), reconnect=False) as producer,
                roost.connect(served.url(), reconnect=False) as consumer,
            ):
                await producer.create_queue("jobs")
                raw, raw_side = await opened(served, [5])
                publish = m.Publish("jobs", [m.Out(b"raw")])
                raw.send(Frame(Kind.REQUEST, 1, publish))
                assert (await raw.receive()).kind is Kind.RESPONSE  # type: ignore[union-attr]
                await producer.publish("jobs", b"first")

                memory.used = 2_000_000
                watchdog.tick()
                notice = await raw.receive()
                assert notice is not None and notice.kind is Kind.BLOCKED
                reason = notice.message.reason  # type: ignore[attr-defined]
                assert reason.startswith("memory alarm: the broker holds 2 MiB, over its budget")
                await until(lambda: producer.blocked == reason)
                assert MEMORY in raw_side._stream.holds  # it published: it is not read

                raw.send(Frame(Kind.REQUEST, 2, publish))
                waiting = asyncio.ensure_future(producer.publish("jobs", b"second"))
                received = await consumer.receive("jobs", max_messages=10)  # served meanwhile
                assert sorted(d.value for d in received) == [b"first", b"raw"]
                await consumer.ack("jobs", "jobs", [d.receipt for d in received])
                assert not waiting.done()

                memory.used = 0
                watchdog.tick()
                unblocked = await raw.receive()
                assert unblocked is not None and unblocked.kind is Kind.UNBLOCKED
                answer = await raw.receive()
                assert answer is not None and answer.correlation == 2
                assert answer.kind is Kind.RESPONSE
                await asyncio.wait_for(waiting, 5)
                assert producer.blocked is None and not raw_side._stream.holds
                received = await consumer.receive("jobs", max_messages=10)
                assert sorted(d.value for d in received) == [b"raw", b"second"]
                await raw.aclose()

    run(body)


def test_requests_in_flight_past_the_bound_stop_the_reading(tmp_path: Path) -> None:
    async def body() -> None:
        async with (
            serving(tmp_path, **bounded()) as served,
            roost.connect(served.url(), reconnect=False) as producer,
        ):
            await producer.create_queue("jobs")
            raw, side = await opened(served, [5])
            count = MAX_IN_FLIGHT + 500
            poll = m.Receive("jobs", "jobs", max_messages=1, wait_ms=20_000)
            raw.send_bytes(
                b"".join(raw.codec.send(Frame(Kind.REQUEST, n, poll)) for n in range(count))
            )
            await until(lambda: IN_FLIGHT in side._stream.holds)
            assert len(side._tasks) == MAX_IN_FLIGHT  # no frame handed over past it

            await producer.publish_batch("jobs", [Outgoing(value=b"%d" % n) for n in range(count)])
            answered = set()
            async with asyncio.timeout(10):
                while len(answered) < count:
                    frame = await raw.stream.next_frame()
                    assert frame is not None and frame.kind is Kind.RESPONSE
                    answered.add(frame.correlation)
            assert answered == set(range(count)) and not side._stream.holds
            await raw.aclose()

    run(body)


def test_large_requests_in_flight_stop_the_reading_at_their_bytes(tmp_path: Path) -> None:
    """Publishes waiting for room in a full queue hold their payloads: a client pipelining
    them holds ``MAX_IN_FLIGHT_BYTES`` (and one frame) of them at most, not a thousand."""

    async def body() -> None:
        async with (
            serving(tmp_path, **bounded()) as served,
            roost.connect(served.url(), reconnect=False) as consumer,
        ):
            await consumer.create_queue("jobs", max_backlog=1, overflow="block", block_timeout=60)
            await consumer.publish("jobs", b"first")
            raw, side = await opened(served, [5])
            value = bytes(256 * 1024)
            count = 40  # 10 MiB
            publish = m.Publish("jobs", [m.Out(value=value)])
            raw.send_bytes(
                b"".join(raw.codec.send(Frame(Kind.REQUEST, n, publish)) for n in range(count))
            )
            await until(lambda: IN_FLIGHT in side._stream.holds)
            frame_bytes = side._codec.frame_bytes
            assert MAX_IN_FLIGHT_BYTES <= side._in_flight_bytes < MAX_IN_FLIGHT_BYTES + frame_bytes
            assert len(side._tasks) == -(-MAX_IN_FLIGHT_BYTES // frame_bytes) < count

            answered: set[int] = set()
            async with asyncio.timeout(20):
                while len(answered) < count:
                    for delivery in await consumer.receive("jobs", wait=0.05):
                        await consumer.ack("jobs", "jobs", [delivery.receipt])
                    while (frame := raw.stream.codec.next_event()) is not NEED_DATA:
                        assert frame.kind is Kind.RESPONSE, frame
                        answered.add(frame.correlation)
            assert answered == set(range(count)) and not side._stream.holds
            await raw.aclose()

    run(body)


def test_a_producer_that_never_reads_its_answers_stops_being_read_soon(tmp_path: Path) -> None:
    """Each small publish is answered with a few bytes: unread, they fill the kernel's buffers
    first. The kernel may hold only ``KERNEL_UNSENT_SMALL_BYTES`` of them unsent (it would grow its
    send buffer to 4 MiB, ~140,000 answers, before the broker saw one wait), so the answers
    back up into the broker and it stops reading the producer after tens of thousands of
    publishes, not hundreds of thousands."""

    async def body() -> None:
        async with (
            serving(tmp_path, **bounded()) as served,
            roost.connect(served.url(), reconnect=False) as admin,
        ):
            await admin.create_queue("jobs", durability="never")
            raw, side = await opened(served, [5])
            raw.stream._transport.pause_reading()  # type: ignore[union-attr]
            count = 150_000
            publish = m.Publish("jobs", [m.Out(value=b"x")])
            frames = b"".join(raw.codec.send(Frame(Kind.REQUEST, n, publish)) for n in range(count))
            # An answer's bytes: the frame header, and at least the runs' one entry.
            answer = HEADER.size + len(msgspec.msgpack.encode(("jobs", 0, count, 1)))
            raw.send_bytes(frames)
            transport = side._stream._transport
            assert transport is not None
            async with asyncio.timeout(30):
                while not (side._stream.holds and transport.get_write_buffer_size()):
                    await asyncio.sleep(0.01)
            handled = served.host.engine.topic("jobs").end_offset(0)
            # Answers in the peer's window, unsent in the kernel and in the transport's buffer;
            # and requests in flight behind them.
            held = 512 * 1024 + KERNEL_UNSENT_SMALL_BYTES + MAX_UNSENT_BYTES
            assert handled < min(count, held // answer + MAX_IN_FLIGHT)
            raw.stream._transport.abort()  # type: ignore[union-attr]

    run(body)


def kernel_unsent_bound(connection: NativeConnection) -> int:
    sock = connection._stream.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))


@pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="no TCP_NOTSENT_LOWAT")
def test_a_connection_gets_the_large_kernel_bound_once_it_is_sent_a_large_frame(
    tmp_path: Path,
) -> None:
    """Small answers need little room in the kernel, and a peer that leaves them unread is
    stopped sooner for it; deliveries need more to keep the kernel sending between wake-ups."""

    async def body() -> None:
        async with (
            serving(tmp_path, **bounded()) as served,
            roost.connect(served.url(), reconnect=False) as client,
        ):
            await client.create_queue("jobs", durability="never")
            (side,) = served.listener.connections
            await client.publish("jobs", b"small")
            assert await client.receive("jobs", max_messages=1)
            assert kernel_unsent_bound(side) == KERNEL_UNSENT_SMALL_BYTES
            await client.publish("jobs", bytes(KERNEL_UNSENT_SMALL_BYTES))
            (large,) = await client.receive("jobs", max_messages=1)
            assert len(large.value) == KERNEL_UNSENT_SMALL_BYTES
            assert kernel_unsent_bound(side) == KERNEL_UNSENT_BYTES

    run(body)
