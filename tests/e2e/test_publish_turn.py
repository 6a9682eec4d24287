"""A publish is appended in the turn its frame arrives and, unless it must wait, answered then
too. One that waits (its fsync round under `always`, room under overflow `block`) is finished
by a task. Every path answers in the client's terms: offsets, or the error's stable code.
Publishes read together are pushed to a watching consumer together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import roost
from roost import Outgoing
from roost.clock import ManualClock
from roost.core.policies import TopicPolicy
from roost.errors import BacklogFull, InvalidRequest, RoostError, UnknownTopic
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind, NativeCodec
from roost.server.framed import FramedStream, open_framed
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[roost.Client, Host]]:
    """A client of a server in this process, and the server's host."""
    host = await Host.start(str(tmp_path / "data"), ManualClock())
    server = await serve_native(host, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    host.port = port  # type: ignore[attr-defined]  # for a second, raw connection
    try:
        async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as broker:
            yield broker, host
    finally:
        await close_native(server)
        await host.aclose()


@pytest.mark.parametrize("durability", ["always", "interval", "never"])
def test_pipelined_publishes_are_answered_in_order(tmp_path: Path, durability: str) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, _):
            await broker.create_queue("q", durability=durability)  # type: ignore[arg-type]
            published = await asyncio.gather(*(broker.publish("q", b"%d" % i) for i in range(50)))
            assert [p.offset for p in published] == list(range(50))
            assert (await broker.stats("q")).depth == 50

    asyncio.run(body())


def test_a_publish_to_a_full_topic_waits_for_room(tmp_path: Path) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, _):
            await broker.create_queue("q", max_backlog=1, overflow="block", block_timeout=10)
            await broker.publish("q", b"first")
            blocked = asyncio.create_task(broker.publish("q", b"second"))
            await asyncio.sleep(0.1)
            assert not blocked.done(), "the topic is full: the publish waits"
            assert (await broker.stats("q")).depth == 1, "and nothing was appended meanwhile"
            [first] = await broker.receive("q")
            await first.ack()
            assert (await asyncio.wait_for(blocked, 10)).offset == 1

    asyncio.run(body())


def test_a_publish_to_a_full_topic_gives_up_and_the_connection_goes_on(tmp_path: Path) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, _):
            await broker.create_queue("q", max_backlog=1, overflow="block", block_timeout=0.05)
            await broker.create_queue("r", max_backlog=1)  # overflow "reject": at once
            await broker.publish("q", b"first")
            await broker.publish("r", b"first")
            with pytest.raises(BacklogFull):
                await broker.publish("q", b"second")
            with pytest.raises(BacklogFull):
                await broker.publish("r", b"second")
            assert (await broker.publish("q.dlq", b"elsewhere")).offset == 0

    asyncio.run(body())


def test_a_refused_publish_fails_that_request_only(tmp_path: Path) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, _):
            await broker.create_queue("q", durability="interval")
            refused = broker.publish("nowhere", b"x")
            too_big = broker.publish_batch("q", [Outgoing(value=b"x" * (2 << 20))])
            fine = broker.publish("q", b"fine")
            results = await asyncio.gather(refused, too_big, fine, return_exceptions=True)
            assert isinstance(results[0], UnknownTopic)
            assert isinstance(results[1], InvalidRequest)
            assert "max_record_bytes" in str(results[1])
            assert results[2].offset == 0  # type: ignore[union-attr]

    asyncio.run(body())


def test_a_bug_on_the_way_is_answered_internal_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, host):
            await broker.create_queue("q", durability="interval")

            def broken(*args: object) -> None:
                raise KeyError("a bug")

            monkeypatch.setattr(host, "publish_now", broken)
            with pytest.raises(RoostError, match="a bug") as failed:
                await broker.publish("q", b"x")
            assert failed.value.code == "internal"
            monkeypatch.undo()
            assert (await broker.publish("q", b"y")).offset == 0, "nothing was appended"

    with caplog.at_level(logging.ERROR, logger="roost.native"):
        asyncio.run(body())
    assert "request Publish failed" in caplog.text


def test_publish_now_appends_or_leaves_a_full_blocking_topic_alone(tmp_path: Path) -> None:
    async def body() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        try:
            policy = TopicPolicy(max_backlog_messages=1, overflow="block")
            host._broker.create_queue("q", durability="never", policy=policy)
            host._broker.create_queue("durable", durability="always")
            outcome = host.publish_now("q", [Outgoing(value=b"1")])
            assert outcome is not None
            assert [p.offset for p in host.confirmed_now(outcome, {"q"}) or []] == [0]
            assert host.publish_now("q", [Outgoing(value=b"2")]) is None
            assert host.engine.topic("q").log(0).end_offset == 1, "nothing appended"
            durable = host.publish_now("durable", [Outgoing(value=b"1")])
            assert durable is not None
            assert host.confirmed_now(durable, {"durable"}) is None, "its fsync comes first"
            assert [p.offset for p in await host.confirm(durable, {"durable"})] == [0]
        finally:
            await host.aclose()

    asyncio.run(body())


def test_publishes_read_together_are_pushed_together(tmp_path: Path) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, host):
            await broker.create_queue("q", durability="interval")
            frames: list[int] = []
            backend = broker._backend  # type: ignore[attr-defined]
            to_stream = backend._to_stream

            def counting(frame: Frame) -> None:
                if frame.kind is Kind.DELIVERIES:
                    frames.append(len(frame.message.messages))  # type: ignore[attr-defined]
                to_stream(frame)

            backend._to_stream = counting
            async with broker.subscribe("q", prefetch=10) as deliveries:
                producer = await open_framed(NativeCodec("client"), "127.0.0.1", host.port)  # type: ignore[attr-defined]
                try:
                    producer.write(producer.codec.send(Frame(Kind.HELLO, 0, m.Hello([3]))))
                    assert await producer.next_frame() is not None
                    publishes = [
                        producer.codec.send(
                            Frame(Kind.REQUEST, i, m.Publish("q", [m.Out(b"%d" % i)]))
                        )
                        for i in (1, 2)
                    ]
                    producer.write(b"".join(publishes))  # one read at the server
                    got = await asyncio.wait_for(deliveries.batch(), 10)
                    assert [d.value for d in got] == [b"1", b"2"]
                    assert frames == [2], "one push for both"
                    answers = [await producer.next_frame() for _ in publishes]
                    assert [a.correlation for a in answers if a] == [1, 2]
                finally:
                    producer.close()
                await deliveries.ack(got)

    asyncio.run(body())


def test_wakes_held_for_a_read_call_each_watcher_once_at_its_end(tmp_path: Path) -> None:
    async def body() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        try:
            calls: list[str] = []
            host.watch("a", lambda: calls.append("a"))
            host.watch("b", lambda: calls.append("b"))
            with host.holding_wakes():
                host.wake_readers("a")
                with host.holding_wakes():  # nested: the outer one calls them
                    host.wake_readers("b")
                    host.wake_readers("a")
                assert calls == []
            assert calls == ["a", "b"]
            host.wake_readers("a")
            assert calls == ["a", "b", "a"], "not held: at once"
        finally:
            await host.aclose()

    asyncio.run(body())


async def _raw(host: Host) -> FramedStream:
    """A native connection to ``host``'s listener that speaks frames by hand."""
    stream = await open_framed(NativeCodec("client"), "127.0.0.1", host.port)  # type: ignore[attr-defined]
    stream.write(stream.codec.send(Frame(Kind.HELLO, 0, m.Hello([3]))))
    assert await stream.next_frame() is not None
    return stream


def _request(stream: FramedStream, correlation: int, request: m.Request) -> bytes:
    return stream.codec.send(Frame(Kind.REQUEST, correlation, request))


async def _answers(stream: FramedStream, count: int) -> dict[int, Frame]:
    frames = [await asyncio.wait_for(stream.next_frame(), 10) for _ in range(count)]
    return {frame.correlation: frame for frame in frames if frame is not None}


def test_a_publish_does_not_overtake_a_request_read_before_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with served(tmp_path) as (_, host):
            raw = await _raw(host)
            try:
                create = m.CreateQueue("late", m.QueueSettings(durability="interval"))
                publish = m.Publish("late", [m.Out(b"x")])
                raw.write(_request(raw, 1, create) + _request(raw, 2, publish))
                answers = await _answers(raw, 2)
                assert answers[2].kind is Kind.RESPONSE, answers[2].message
            finally:
                raw.close()

    asyncio.run(body())


def test_a_publish_waits_behind_one_waiting_for_room(tmp_path: Path) -> None:
    """One read frees room and brings another publish: the one that waited goes first."""

    async def body() -> None:
        async with served(tmp_path) as (broker, host):
            await broker.create_queue(
                "q", durability="interval", max_backlog=2, overflow="block", block_timeout=0.3
            )
            await broker.publish_batch("q", [Outgoing(value=b"a"), Outgoing(value=b"b")])
            [a] = await broker.receive("q")
            raw = await _raw(host)
            try:
                raw.write(_request(raw, 1, m.Publish("q", [m.Out(b"waited")])))
                await asyncio.sleep(0.05)
                ack = m.Ack("q", "q", [a.receipt], answer=False)
                raw.write(_request(raw, 2, ack) + _request(raw, 3, m.Publish("q", [m.Out(b"new")])))
                answers = await _answers(raw, 2)
                assert answers[1].kind is Kind.RESPONSE
                assert answers[1].message.runs[0][2] == 2  # type: ignore[attr-defined]
                assert answers[3].kind is Kind.FAILURE
                assert answers[3].message.code == "backlog_full"  # type: ignore[attr-defined]
            finally:
                raw.close()

    asyncio.run(body())


def test_a_failing_watcher_leaves_the_publisher_and_the_other_watchers_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, host):
            await broker.create_queue("q", durability="interval")

            def broken() -> None:
                raise RuntimeError("a watcher's bug")

            host.watch("q", broken)
            async with broker.subscribe("q", prefetch=10) as deliveries:
                raw = await _raw(host)
                try:
                    publishes = [
                        _request(raw, i, m.Publish("q", [m.Out(b"%d" % i)])) for i in (1, 2)
                    ]
                    raw.write(b"".join(publishes))
                    answers = await _answers(raw, 2)
                    assert [a.kind for a in answers.values()] == [Kind.RESPONSE] * 2
                    got = await asyncio.wait_for(deliveries.batch(), 10)
                    while len(got) < 2:
                        got += await asyncio.wait_for(deliveries.batch(), 10)
                    assert [d.value for d in got] == [b"1", b"2"]
                    raw.write(_request(raw, 3, m.Publish("q", [m.Out(b"3")])))
                    assert (await _answers(raw, 1))[3].kind is Kind.RESPONSE, "still open"
                finally:
                    raw.close()
                await deliveries.ack(got)
            host.unwatch("q", broken)

    with caplog.at_level(logging.ERROR, logger="roost.host"):
        asyncio.run(body())
    assert "a watcher of q failed" in caplog.text


def test_nothing_is_pushed_to_a_connection_that_said_goodbye(tmp_path: Path) -> None:
    async def body() -> None:
        async with served(tmp_path) as (broker, host):
            await broker.create_queue("q", durability="interval")
            consumer = await _raw(host)
            consumer.write(_request(consumer, 1, m.Subscribe("q", "q", 10)))
            assert (await _answers(consumer, 1))[1].kind is Kind.RESPONSE
            consumer.write(consumer.codec.send(Frame(Kind.GOODBYE, 0, m.Empty())))
            await broker.publish("q", b"after goodbye")
            stats = await broker.stats("q")
            assert (stats.depth, stats.in_flight) == (1, 0), "not leased to a closing connection"
            consumer.close()
            assert (await broker.publish("q", b"still serving")).offset == 1

    asyncio.run(body())
