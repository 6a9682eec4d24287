"""The blocking client: the async API without await, for scripts and WSGI apps."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from roost import Outgoing, sync
from roost.errors import ConnectionClosed, LeaseExpired, StorageClosed, UnknownTopic


def test_the_blocking_client_does_what_the_async_one_does(tmp_path: Path) -> None:
    with sync.open(str(tmp_path / "data")) as broker:
        broker.create_queue("emails")
        published = broker.publish("emails", b"hello", key=b"k")
        assert published.offset == 0
        [message] = broker.receive("emails", max_messages=10)
        assert message.value == b"hello"
        message.nack(delay=0)
        [again] = broker.receive("emails")
        with pytest.raises(LeaseExpired):
            message.ack()
        again.ack()
        with pytest.raises(UnknownTopic):
            broker.publish("nope", b"x")
        broker.publish_batch("emails", [Outgoing(value=b"%d" % i) for i in range(3)])
        consumed = []
        for delivery in broker.consume("emails", prefetch=2):
            consumed.append(delivery.value)
            delivery.ack()
            if len(consumed) == 3:
                break
        assert consumed == [b"0", b"1", b"2"]
        assert broker.stats("emails").backlog == 0


def test_threads_share_one_blocking_client(tmp_path: Path) -> None:
    with sync.open(str(tmp_path / "data")) as broker:
        broker.create_queue("q")

        def publish(n: int) -> None:
            for i in range(20):
                broker.publish("q", b"%d-%d" % (n, i))

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert broker.stats("q").backlog == 80


def test_closing_ends_a_call_waiting_in_another_thread(tmp_path: Path) -> None:
    broker = sync.open(str(tmp_path / "data"))
    broker.create_queue("idle")
    outcome: list[BaseException | object] = []

    def long_poll() -> None:
        try:
            outcome.append(broker.receive("idle", wait=20))
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=long_poll)
    thread.start()
    broker.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "a call waiting when the client closed must not hang"
    # Ended either way: answered empty by the host shutting down, or cut off by the close.
    assert outcome[0] == [] or isinstance(outcome[0], (ConnectionClosed, StorageClosed))
    broker.close()
    with pytest.raises(ConnectionClosed):
        broker.list_topics()
