"""The blocking client (``roost.sync``) against a real ``roost serve``: the whole API over the
network, shared by threads as a WSGI server shares it, across a server restart, and closed
without leaving a thread or a blocked caller behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import roost
from roost import Outgoing, sync
from roost.client.reconnect import ReconnectingBackend
from roost.errors import (
    ConnectionClosed,
    LeaseExpired,
    RecordTooLarge,
    UnknownSubscription,
    UnknownTopic,
)
from tests.e2e.test_serve import Server

THREADS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that do not restart it (each uses its own topics)."""
    server = Server(tmp_path_factory.mktemp("sync") / "data")
    yield server
    server.stop()


def roost_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "roost-sync"}


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(0..count-1)`` in threads released together; their results, in order."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except BaseException as e:
            results[n] = e

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a thread is stuck in a blocking call"
    return results


def test_the_blocking_client_over_the_network(server: Server) -> None:
    with sync.connect(server.url) as broker:
        broker.create_queue("emails")
        first = broker.publish("emails", b"hello", key=b"k", headers=[("h", b"1")])
        assert (first.topic, first.partition, first.offset) == ("emails", 0, 0)
        batch = broker.publish_batch("emails", [Outgoing(value=b"%d" % i) for i in range(5)])
        assert [p.offset for p in batch] == [1, 2, 3, 4, 5]

        [message] = broker.receive("emails", max_messages=1, wait=1)
        assert (message.value, message.key, message.headers) == (b"hello", b"k", (("h", b"1"),))
        message.nack(delay=0, error="try again")
        [again] = broker.receive("emails", wait=1)
        assert (again.offset, again.delivery_count) == (0, 2)
        again.ack()

        # consume: at most ``prefetch`` leased and unsettled at once.
        consumed = []
        iterator = broker.consume("emails", prefetch=2)
        held = [next(iterator), next(iterator)]
        assert broker.stats("emails").in_flight == 2
        for delivery in held:
            consumed.append(delivery.value)
            delivery.ack()
        for delivery in iterator:
            consumed.append(delivery.value)
            assert broker.stats("emails").in_flight <= 2
            delivery.ack()
            if len(consumed) == 5:
                break
        assert sorted(consumed) == [b"%d" % i for i in range(5)]
        stats = broker.stats("emails")
        assert (stats.backlog, stats.in_flight) == (0, 0)


def test_a_stream_group_over_the_blocking_client(server: Server) -> None:
    with sync.connect(server.url) as broker:
        broker.create_topic("clicks", partitions=2)
        broker.create_subscription("clicks", "analytics", mode="stream", start="earliest")
        broker.publish_batch(
            "clicks", [Outgoing(value=b"%d" % i, partition=i % 2) for i in range(6)]
        )
        member = broker.join("clicks", "analytics")
        assert member.partitions == (0, 1)
        records = member.fetch(max_records=10)
        assert sorted(r.value for r in records) == [b"%d" % i for i in range(6)]
        member.commit()
        assert broker.stats("clicks", "analytics").lag == 0
        member.leave()

        rejoined = broker.join("clicks", "analytics")
        assert rejoined.fetch(max_records=10) == [], "resumes after the commit"
        assert rejoined.seek(0, "earliest") == 0
        assert [r.offset for r in rejoined.fetch(max_records=10) if r.partition == 0] == [0, 1, 2]


def test_errors_arrive_as_their_roost_class(server: Server) -> None:
    with sync.connect(server.url) as broker:
        with pytest.raises(UnknownTopic, match="nope"):
            broker.publish("nope", b"x")
        broker.create_topic("small", max_record_bytes=100)
        with pytest.raises(RecordTooLarge, match=r"200 bytes exceeds the limit of 100 bytes"):
            broker.publish("small", b"y" * 200)
        with pytest.raises(UnknownSubscription):
            broker.receive("small", "nobody")
        broker.create_queue("once", visibility_timeout=30)
        broker.publish("once", b"x")
        [message] = broker.receive("once")
        message.nack(delay=0)
        with pytest.raises(LeaseExpired):
            message.ack()
        assert broker.publish("small", b"ok").offset == 0, "the client works on after errors"


def test_threads_share_one_client_and_each_message_is_stored_once(server: Server) -> None:
    per_thread = 40
    with sync.connect(server.url) as broker:
        broker.create_queue("shared")

        def publish(n: int) -> list[int]:
            offsets = []
            for i in range(per_thread):
                if i % 4 == 0:
                    batch = [Outgoing(value=b"%d-%d-%d" % (n, i, j)) for j in range(3)]
                    offsets += [p.offset for p in broker.publish_batch("shared", batch)]
                else:
                    offsets.append(broker.publish("shared", b"%d-%d" % (n, i)).offset)
            return offsets

        placed = in_threads(THREADS, publish)
        offsets = sorted(o for per in placed for o in per)
        total = THREADS * (per_thread * 3 // 4 + per_thread // 4 * 3)
        assert offsets == list(range(total)), "every publish got its own offset"

        def drain(n: int) -> list[bytes]:
            values = []
            while messages := broker.receive("shared", max_messages=16):
                for message in messages:
                    values.append(message.value)
                    message.ack()
            return values

        delivered = [v for per in in_threads(THREADS // 2, drain) for v in per]
        expected = [b"%d-%d" % (n, i) for n in range(THREADS) for i in range(per_thread) if i % 4]
        expected += [
            b"%d-%d-%d" % (n, i, j)
            for n in range(THREADS)
            for i in range(0, per_thread, 4)
            for j in range(3)
        ]
        assert sorted(delivered) == sorted(expected), "each stored once, delivered once"
        assert broker.stats("shared").backlog == 0


def test_threads_share_one_producer(server: Server) -> None:
    with sync.connect(server.url) as broker:
        broker.create_topic("events", partitions=2)
        with broker.producer("events", linger=0.001, max_batch=16) as producer:
            placed = in_threads(
                THREADS,
                lambda n: [producer.send(b"%d-%d" % (n, i), key=b"%d" % n) for i in range(25)],
            )
        info = broker.describe_topic("events")
        assert sum(p.end_offset for p in info.partitions) == THREADS * 25
        spots = [(p.partition, p.offset) for per in placed for p in per]
        assert len(set(spots)) == len(spots) == THREADS * 25
        for per in placed:
            assert len({p.partition for p in per}) == 1, "a key keeps its partition"
            assert [p.offset for p in per] == sorted(p.offset for p in per), "in send order"


def test_the_client_keeps_working_across_a_server_restart(tmp_path: Path) -> None:
    server = Server.restartable(tmp_path / "data")
    port = server.port
    try:
        with sync.connect(f"roost://127.0.0.1:{port}") as broker:
            broker.create_queue("jobs")
            broker.create_topic("events")
            assert broker.publish("jobs", b"before").offset == 0
            producer = broker.producer("events", linger=0.001, max_batch=10)
            sent = [producer.send(b"%d" % i) for i in range(10)]
            retried = [Outgoing(value=b"idempotent")]
            first = broker.publish_batch("events", retried, producer_id="p-1", sequence=0)

            server = server.restart()

            assert broker.publish("jobs", b"after").offset == 1, "reconnected by itself"
            # A retry of an idempotent batch whose answer was lost: confirmed, not stored again.
            again = broker.publish_batch("events", retried, producer_id="p-1", sequence=0)
            assert again == first
            sent += in_threads(4, lambda n: producer.send(b"t%d" % n))
            producer.close()
            assert sorted(p.offset for p in sent) == [o for o in range(15) if o != 10]
            assert broker.describe_topic("events").partitions[0].end_offset == 15
            assert [m.value for m in broker.receive("jobs", max_messages=10)] == [
                b"before",
                b"after",
            ]
    finally:
        server.stop()


def test_close_stops_the_thread_and_ends_waiting_calls(server: Server) -> None:
    before = roost_threads()
    broker = sync.connect(server.url)
    broker.create_queue("idle")
    assert len(roost_threads() - before) == 1
    broker.publish("idle", b"leased by consume")
    consuming = broker.consume("idle", prefetch=1)
    assert next(consuming).value == b"leased by consume"

    waiter: list[BaseException | object] = []

    def long_poll() -> None:
        try:
            waiter.append(broker.receive("idle", wait=20))
        except BaseException as e:
            waiter.append(e)

    thread = threading.Thread(target=long_poll)
    thread.start()
    while not requests_waiting(broker):
        pass  # each check is a round trip to the client's loop: no sleep, no clock
    broker.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a call waiting when the client closed must not hang"
    assert len(waiter) == 1
    assert isinstance(waiter[0], ConnectionClosed)
    assert roost_threads() == before, "no thread left behind"

    broker.close()  # twice: nothing happens
    with pytest.raises(ConnectionClosed):
        broker.list_topics()
    with pytest.raises(ConnectionClosed):
        next(consuming)


def requests_waiting(broker: sync.SyncBroker) -> int:
    """Requests sent and not yet answered, counted on the client's own loop."""

    async def count() -> int:
        return len(broker._target._backend._current._pending)

    return int(broker._bridge.run(count()))


def test_a_closed_client_does_not_reconnect_for_its_waiting_calls(server: Server) -> None:
    """The async root of the hang above: ``aclose`` broke the connection a long poll waited
    on, and the retry of that (safe-to-retry) receive opened a new connection nobody closed."""

    async def body() -> None:
        broker = await roost.connect(server.url)
        await broker.create_queue("quiet")
        backend = broker._backend
        assert isinstance(backend, ReconnectingBackend)
        polling = asyncio.create_task(broker.receive("quiet", wait=20))
        while not (backend._current and backend._current._pending):
            await asyncio.sleep(0)  # until the receive is on the wire, waiting
        await broker.aclose()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(polling, 5)
        assert backend.reconnects == 0
        with pytest.raises(ConnectionClosed):
            await broker.list_topics()

    asyncio.run(body())
