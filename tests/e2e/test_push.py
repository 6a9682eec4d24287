"""Consuming over the network: the server pushes deliveries as the consumer's credit allows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import roost
from roost import Outgoing
from roost.clock import ManualClock
from roost.errors import (
    ConnectionClosed,
    InvalidRequest,
    LeaseExpired,
    ProtocolError,
    UnknownSubscription,
    UnknownTopic,
)
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, Frame, Kind, NativeCodec
from roost.receipt import Receipt
from roost.server.framed import open_framed
from roost.server.host import Host
from roost.server.native_server import NativeConnection, close_native, serve_native
from tests.e2e.test_serve import Server
from tests.embedded_support import over_the_network


@contextlib.asynccontextmanager
async def small_frames_server(tmp_path: Path) -> AsyncIterator[roost.Client]:
    """A client of a server in this process whose frames are at most 64 KiB."""
    host = await Host.start(str(tmp_path / "data"), ManualClock())
    server = await serve_native(host, "127.0.0.1", 0, max_frame_bytes=64 * 1024)
    port = server.sockets[0].getsockname()[1]
    try:
        async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as broker:
            yield broker
    finally:
        await close_native(server)
        await host.aclose()


async def _fill(broker: roost.Client, queue: str, count: int) -> None:
    await broker.create_queue(queue)
    await broker.publish_batch(queue, [Outgoing(value=b"%d" % i) for i in range(count)])


def test_the_server_pushes_no_more_than_the_credit(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await _fill(broker, "q", 10)
            async with broker.subscribe("q", prefetch=3) as deliveries:
                held = [await anext(deliveries) for _ in range(3)]
                assert [d.value for d in held] == [b"0", b"1", b"2"]
                assert (await broker.stats("q")).in_flight == 3, "only the credit is leased"
                fourth = asyncio.create_task(anext(deliveries))
                await held[0].ack()  # one credit back: one more is pushed
                assert (await asyncio.wait_for(fourth, 10)).value == b"3"
                assert deliveries.unsettled == 3
                assert (await broker.stats("q")).in_flight == 3

    asyncio.run(body())


def test_every_message_once_in_batches_acked_with_one_request(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await _fill(broker, "q", 1000)
            seen: list[bytes] = []
            async with broker.subscribe("q", prefetch=64) as deliveries:
                while len(seen) < 1000:
                    batch = await asyncio.wait_for(deliveries.batch(), 10)
                    assert 1 <= len(batch) <= 64
                    seen += [d.value for d in batch]
                    assert await deliveries.ack(batch) == []
            assert seen == [b"%d" % i for i in range(1000)]
            stats = await broker.stats("q")
            assert (stats.backlog, stats.in_flight) == (0, 0)

    asyncio.run(body())


def test_closing_puts_back_what_was_pushed_and_never_handed_out(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await _fill(broker, "q", 10)
            consuming = broker.consume("q", prefetch=10)
            first = await anext(consuming)
            # all 10 were pushed in one frame; 9 were never handed out
            assert (await broker.stats("q")).in_flight == 10
            await consuming.aclose()
            assert (await broker.stats("q")).in_flight == 1, "only the handed-out one is leased"
            again = await broker.receive("q", max_messages=20)
            assert sorted(d.value for d in again) == [b"%d" % i for i in range(1, 10)]
            await first.ack()

    asyncio.run(body())


def test_a_delivery_published_after_subscribing_is_pushed(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q")
            async with broker.subscribe("q", prefetch=5) as deliveries:
                waiting = asyncio.create_task(anext(deliveries))
                await broker.publish("q", b"late")
                delivery = await asyncio.wait_for(waiting, 10)
                assert delivery.value == b"late"
                await delivery.ack()

    asyncio.run(body())


def test_unknown_names_fail_the_subscribe_and_a_deleted_topic_ends_the_pushes(
    server: Server,
) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            with pytest.raises(UnknownTopic):
                await broker.subscribe("nope").open()
            await broker.create_queue("q")
            with pytest.raises(UnknownSubscription):
                await broker.subscribe("q", "nope").open()
            async with broker.subscribe("q") as deliveries:
                waiting = asyncio.create_task(anext(deliveries))
                await broker.delete_queue("q")
                with pytest.raises((UnknownTopic, UnknownSubscription)):
                    await asyncio.wait_for(waiting, 10)

    asyncio.run(body())


def test_acks_and_credit_of_one_turn_share_a_frame(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url, reconnect=False) as broker:
            codec = broker._backend._codec  # type: ignore[attr-defined]
            frames: list[m.Credit] = []
            acks: list[m.Ack] = []
            send = codec.send

            def counting(frame):  # type: ignore[no-untyped-def]
                if isinstance(frame.message, m.Credit):
                    frames.append(frame.message)
                if isinstance(frame.message, m.Ack):
                    acks.append(frame.message)
                return send(frame)

            codec.send = counting
            await _fill(broker, "q", 50)
            async with broker.subscribe("q", prefetch=50) as deliveries:
                got = []
                while len(got) < 50:
                    got += await asyncio.wait_for(deliveries.batch(), 10)
                await asyncio.gather(*(d.ack() for d in got))
                await asyncio.sleep(0)  # the coalesced credit goes out on the next turn
            assert [len(a.receipts) for a in acks] == [50], "acks of one turn travel together"
            assert [c.messages for c in frames] == [50], "and so does their credit"

    asyncio.run(body())


def test_an_unanswered_ack_and_its_credit_leave_in_one_write(server: Server) -> None:
    """``ack(wait=False)``: the ``Ack`` and the ``Credit`` it frees reach the broker in one
    write (one wake-up), ack first, and the broker pushes again on that credit."""

    async def body() -> None:
        async with roost.connect(server.url, reconnect=False) as broker:
            writes = _record_writes(broker._backend._stream)  # type: ignore[attr-defined]
            await _fill(broker, "q", 3)
            async with broker.subscribe("q", prefetch=2) as deliveries:
                got = await asyncio.wait_for(deliveries.batch(), 10)
                while len(got) < 2:
                    got += await asyncio.wait_for(deliveries.batch(), 10)
                written = len(writes)
                assert await deliveries.ack(got, wait=False) == []
                assert len(writes) == written, "nothing is written before the turn ends"
                [third] = await asyncio.wait_for(deliveries.batch(), 10)
                assert third.value == b"2"
                written = len(writes)
                await deliveries.ack([third])  # answered: its credit follows it, never leads
                await asyncio.sleep(0)
                after = [kind for write in writes[written:] for kind in write]
                assert after.index(Kind.REQUEST) < after.index(Kind.CREDIT)
            assert [Kind.REQUEST, Kind.CREDIT] in writes

    asyncio.run(body())


def _record_writes(target: Any) -> list[list[Kind]]:
    """From now on, the frame kinds of each ``target.write(data)``, one list per write."""
    writes: list[list[Kind]] = []
    write = target.write

    def recording(data: bytes) -> None:
        writes.append(_kinds(data))
        write(data)

    target.write = recording
    return writes


def _kinds(data: bytes) -> list[Kind]:
    """The kinds of the whole frames in ``data``, in order."""
    kinds, position = [], 0
    while position + HEADER.size <= len(data):
        length, kind, _ = HEADER.unpack_from(data, position)
        kinds.append(Kind(kind))
        position += 4 + length
    return kinds


def test_consuming_resumes_after_the_server_restarts(tmp_path: Path) -> None:
    server = Server.restartable(tmp_path / "data")
    port = server.port

    async def body() -> None:
        nonlocal server
        async with roost.connect(f"roost://127.0.0.1:{port}") as broker:
            await broker.create_queue("q", visibility_timeout=1)
            await broker.publish_batch("q", [Outgoing(value=b"%d" % i) for i in range(20)])
            acked: set[bytes] = set()
            async with broker.subscribe("q", prefetch=5) as deliveries:
                for _ in range(5):
                    delivery = await anext(deliveries)
                    await delivery.ack()
                    acked.add(delivery.value)
                server = server.restart()
                while len(acked) < 20:
                    delivery = await asyncio.wait_for(anext(deliveries), 30)
                    try:
                        await delivery.ack()
                    except LeaseExpired:
                        # pushed before the restart, handed out after it: its lease died
                        # with that broker, which delivers it again (at-least-once)
                        continue
                    acked.add(delivery.value)
            assert acked == {b"%d" % i for i in range(20)}

    try:
        asyncio.run(body())
    finally:
        server.stop()


def test_without_reconnect_a_lost_connection_ends_the_iteration_with_an_error(
    server: Server,
) -> None:
    async def body() -> None:
        async with roost.connect(server.url, reconnect=False) as broker:
            await broker.create_queue("q")
            async with broker.subscribe("q") as deliveries:
                waiting = asyncio.create_task(anext(deliveries))
                await asyncio.sleep(0)  # the subscriber is waiting for a push
                assert server.stop() == 0, "a waiting consumer does not hold a shutdown up"
                assert b"Traceback" not in server.stderr
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(waiting, 30)

    asyncio.run(body())


def test_large_deliveries_are_pushed_in_frames_the_limit_allows(tmp_path: Path) -> None:
    """256 deliveries of 20 KiB leased together are 5 MiB; the server's frames are at most
    64 KiB: the push is cut into many frames, and every message arrives once."""

    async def main() -> None:
        async with small_frames_server(tmp_path) as broker:
            await broker.create_queue("big", durability="never")
            for i in range(256):
                await broker.publish("big", bytes([i % 256]) * 20_000)
            seen: list[bytes] = []
            async with broker.subscribe("big", prefetch=256) as deliveries:
                while len(seen) < 256:
                    batch = await asyncio.wait_for(deliveries.batch(), 10)
                    seen += [d.value[:1] for d in batch]
                    await deliveries.ack(batch)
            assert seen == [bytes([i % 256]) for i in range(256)]

    asyncio.run(main())


def test_a_receive_asking_too_much_is_refused_with_the_limit_named(
    server: Server,
) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q")
            with pytest.raises(InvalidRequest, match="max_messages=1001 exceeds the limit of 1000"):
                await broker.receive("q", max_messages=1001)
            assert await broker.receive("q", max_messages=1000) == []

    asyncio.run(body())


def test_an_answer_too_large_for_a_frame_fails_that_request_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with small_frames_server(tmp_path) as broker:
            await broker.create_queue("big", durability="never")
            for _ in range(10):
                await broker.publish("big", b"x" * 20_000)
            with pytest.raises(ProtocolError, match="exceeds the limit of 65536"):
                await asyncio.wait_for(broker.receive("big", max_messages=10), 10)
            assert await broker.list_topics() == ["big", "big.dlq"], "the connection lives"

    asyncio.run(main())


def test_closing_ends_a_wait_in_another_task(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q")
            deliveries = await broker.subscribe("q").open()
            waiting = asyncio.create_task(anext(deliveries))
            await asyncio.sleep(0)  # it waits for a push now
            await deliveries.aclose()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(waiting, 10)

    asyncio.run(body())


def test_an_ack_that_never_answers_still_gives_its_credit_back(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await _fill(broker, "q", 3)
            async with broker.subscribe("q", prefetch=1) as deliveries:
                first = await anext(deliveries)
                acking = asyncio.create_task(first.ack())
                await asyncio.sleep(0)  # the ack is on its way
                acking.cancel()  # its caller gave up; the credit must not be lost with it
                second = await asyncio.wait_for(anext(deliveries), 10)
                assert second.value == b"1"
                await second.ack()

    asyncio.run(body())


def test_pushes_that_filled_the_socket_go_on_once_it_drains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than a socket holds is due at once (2,000 deliveries of 8 KiB, 16 MiB): the server
    stops pushing while the transport is over its high-water mark and goes on from
    ``resume_writing``, with no publish or credit to poke it. Every message arrives once."""
    resumed: list[int] = []
    push_all = NativeConnection._push_all
    monkeypatch.setattr(
        NativeConnection, "_push_all", lambda self: resumed.append(1) or push_all(self)
    )

    async def main() -> None:
        async with small_frames_server(tmp_path) as broker:
            await broker.create_queue("wide", durability="never")
            for start in range(0, 2000, 5):  # 5 x 8 KiB fits the server's 64 KiB frames
                batch = [Outgoing(value=b"%06d" % i + b"." * 8192) for i in range(start, start + 5)]
                await broker.publish_batch("wide", batch)
            seen: list[bytes] = []
            async with broker.subscribe("wide", prefetch=2000) as deliveries:
                while len(seen) < 2000:
                    batch = await asyncio.wait_for(deliveries.batch(), 10)
                    seen += [d.value[:6] for d in batch]
                await deliveries.ack([])  # nothing: every credit was given up front
            assert seen == [b"%06d" % i for i in range(2000)]
            assert resumed, "the socket never filled: this test proves nothing"

    asyncio.run(main())


def test_a_push_waits_for_no_task_a_publish_on_another_connection_reaches_it(
    server: Server,
) -> None:
    """The pushing connection watches its topic on the host: a publish elsewhere delivers
    to it, and after an unsubscribe nothing more is leased to it."""

    async def body() -> None:
        async with roost.connect(server.url) as consumer, roost.connect(server.url) as producer:
            await consumer.create_queue("w")
            async with consumer.subscribe("w", prefetch=10) as deliveries:
                await producer.publish("w", b"one")
                first = await asyncio.wait_for(anext(deliveries), 10)
                assert first.value == b"one"
                await first.ack()
            await producer.publish("w", b"two")
            stats = await producer.stats("w")
            assert (stats.in_flight, stats.depth) == (0, 1), "leased to a closed subscriber"

    asyncio.run(body())


def test_an_ack_that_waits_for_no_answer_settles_in_order_and_gets_none(
    server: Server,
) -> None:
    """``ack(wait=False)`` (protocol version 3) sends an ``Ack`` the server settles and does
    not answer; a request after it on the connection sees it done. A server or connection
    on version 2 answers, and the client then waits for that answer."""

    async def body() -> None:
        async with roost.connect(server.url, reconnect=False) as broker:
            await _fill(broker, "q", 4)
            async with broker.subscribe("q", prefetch=4) as deliveries:
                got = [await anext(deliveries) for _ in range(4)]
                assert await deliveries.ack(got[:2], wait=False) == []
                assert (await broker.stats("q")).in_flight == 2, "settled before the next call"
                stale = Receipt(got[2].partition, got[2].offset, 99)  # not the lease's token
                assert await broker.ack("q", "q", [stale], wait=False) == []
                broker._backend.protocol_version = 2  # type: ignore[attr-defined]
                assert await broker.ack("q", "q", [stale], wait=False) == [stale]
                await deliveries.ack(got[2:])
            assert (await broker.stats("q")).in_flight == 0

    asyncio.run(body())


def test_an_unanswered_ack_the_broker_cannot_settle_sends_nothing_back(server: Server) -> None:
    async def body() -> None:
        port = int(server.url.rsplit(":", 1)[1])
        stream = await open_framed(NativeCodec("client"), "127.0.0.1", port)
        stream.write(stream.codec.send(Frame(Kind.HELLO, 0, m.Hello([3]))))
        welcome = await stream.next_frame()
        assert welcome is not None and welcome.message.version == 3
        ack = m.Ack("no-such-topic", "q", [Receipt(0, 0, 1)], answer=False)
        stream.write(stream.codec.send(Frame(Kind.REQUEST, 1, ack)))
        stream.write(stream.codec.send(Frame(Kind.PING, 2, m.Empty())))
        reply = await asyncio.wait_for(stream.next_frame(), 10)
        assert reply is not None and (reply.kind, reply.correlation) == (Kind.PONG, 2)
        answered = msgspec.structs.replace(ack, answer=True)
        stream.write(stream.codec.send(Frame(Kind.REQUEST, 3, answered)))
        failure = await asyncio.wait_for(stream.next_frame(), 10)
        assert failure is not None and (failure.kind, failure.correlation) == (Kind.FAILURE, 3)
        stream.close()
        await stream.wait_closed()

    asyncio.run(body())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_large_pushes_leave_unjoined_and_arrive_whole_between_small_ones(
    tmp_path: Path, loop: str
) -> None:
    """Pushes of large values are written as header and payload in one ``writelines`` (under
    uvloop, one writev of the two buffers; asyncio joins them); the consumer reads exactly what
    was published, large and small, in order."""
    import random

    from roost.server import native_server

    rng = random.Random(14)
    values = [
        rng.randbytes(size)
        for size in (300_000, 10, native_server.UNJOINED_BYTES, 1, 700_000, 5_000, 1_000_000)
    ]

    async def body(broker: roost.Client) -> None:
        await broker.create_queue("big", durability="always")
        got: list[bytes] = []
        async with broker.subscribe("big", prefetch=2) as deliveries:
            for value in values:
                await broker.publish("big", value)
            while len(got) < len(values):
                batch = await asyncio.wait_for(deliveries.batch(), 10)
                got += [d.value for d in batch]
                await deliveries.ack(batch)
        assert got == values

    if loop == "uvloop":
        import uvloop

        uvloop.run(over_the_network(tmp_path, body))
    else:
        asyncio.run(over_the_network(tmp_path, body))


def test_pushes_to_many_subscriptions_woken_together_leave_in_one_write(tmp_path: Path) -> None:
    """One publish routed to 20 queues wakes 20 subscriptions of one consumer connection in
    one turn: their 20 ``Deliveries`` frames leave in one socket write, not one each."""

    async def body() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        listener = await serve_native(host, "127.0.0.1", 0)
        url = f"roost://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        names = [f"q{i}" for i in range(20)]
        try:
            async with (
                roost.connect(url, reconnect=False) as producer,
                roost.connect(url, reconnect=False) as consumer,
                contextlib.AsyncExitStack() as stack,
            ):
                await producer.declare_exchange("all", "fanout")
                for name in names:
                    await producer.create_queue(name)
                    await producer.bind("all", name)
                subscribers = [
                    await stack.enter_async_context(consumer.subscribe(name, prefetch=10))
                    for name in names
                ]
                [pushing] = [c for c in listener.connections if c._pushes]
                transport = pushing._stream._transport
                writes: list[list[Kind]] = []
                write = transport.write

                def recording(data: bytes) -> None:
                    writes.append(_kinds(data))
                    write(data)

                transport.write = recording  # type: ignore[method-assign]
                await producer.publish_to_exchange("all", "", b"to all")
                for subscriber in subscribers:
                    [delivery] = await asyncio.wait_for(subscriber.batch(), 10)
                    assert delivery.value == b"to all"
                assert writes == [[Kind.DELIVERIES] * 20]
        finally:
            await close_native(listener)
            await host.aclose()

    asyncio.run(body())


def test_an_answered_ack_is_settled_and_answered_in_the_turn_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No task per ``Ack``: each is settled and answered as its frame is read, refusing only
    its own expired receipts, and what they settle is gone from the queue."""
    spawned: list[str] = []
    spawn = NativeConnection._spawn

    def recording(self: NativeConnection, work: Any, size_bytes: int = 0) -> None:
        spawned.append(work.cr_frame.f_locals["request"].__class__.__name__)
        spawn(self, work, size_bytes)

    monkeypatch.setattr(NativeConnection, "_spawn", recording)

    async def body() -> None:
        async with small_frames_server(tmp_path) as broker:
            await _fill(broker, "a", 2)
            await _fill(broker, "b", 2)
            got = {}
            for name in ("a", "b"):
                got[name] = await broker.receive(name, max_messages=2, wait=5.0)
            stale = Receipt(0, 99, 1)  # never delivered: refused
            spawned.clear()
            refused = await asyncio.gather(
                broker.ack("a", "a", [d.receipt for d in got["a"]] + [stale]),
                broker.ack("b", "b", [d.receipt for d in got["b"]]),
            )
            assert refused == [[stale], []]
            with pytest.raises(UnknownTopic):
                await broker.ack("nope", "nope", [stale])
            assert "Ack" not in spawned
            assert (await broker.stats("a")).depth == 0 and (await broker.stats("b")).depth == 0

    asyncio.run(body())


def test_an_answered_ack_and_the_credit_it_frees_leave_in_one_write(server: Server) -> None:
    """``ack()`` waits for its answer, and gives its credit back as it is sent: the ``Ack``
    and that ``Credit`` reach the broker in one socket write, ack first."""

    async def body() -> None:
        async with roost.connect(server.url, reconnect=False) as broker:
            writes = _record_writes(broker._backend._stream._transport)  # type: ignore[attr-defined]
            await _fill(broker, "q", 3)
            async with broker.subscribe("q", prefetch=2) as deliveries:
                got = await asyncio.wait_for(deliveries.batch(), 10)
                while len(got) < 2:
                    got += await asyncio.wait_for(deliveries.batch(), 10)
                written = len(writes)
                assert await deliveries.ack(got) == []
                [third] = await asyncio.wait_for(deliveries.batch(), 10)
                assert third.value == b"2"
                assert writes[written] == [Kind.REQUEST, Kind.CREDIT]

    asyncio.run(body())
