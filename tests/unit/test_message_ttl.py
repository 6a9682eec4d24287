"""Message TTL (issue 15, item 3): per message (``publish(ttl=...)``) and a queue's default
(``message_ttl``). An expired message is never delivered; it goes to the dead-letter topic
with ``x-roost-death-reason: expired``, or is done without one; stats drop it without a
receive reaching it; a lease is never revoked by a TTL; all of it across a restart — through
the embedded client and over the network, each on a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import roost
from roost.client.api import TTL_VERSION, Client
from roost.clock import ManualClock
from roost.core.stats import SubscriptionStats
from roost.errors import InvalidConfig, InvalidRequest, ProtocolError
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native
from tests.embedded_support import OlderBroker, run

Body = Callable[[Any], Awaitable[None]]


def run_served(tmp_path: Path, clock: ManualClock, body: Body) -> None:
    """``body`` against a network client of a broker served on 127.0.0.1 on ``clock``."""

    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), clock)
        server = await serve_native(host, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as broker:
                await body(broker)
        finally:
            await close_native(server)
            await host.aclose()

    asyncio.run(main())


def run_where(where: str, tmp_path: Path, clock: ManualClock, body: Body) -> None:
    if where == "embedded":
        run(str(tmp_path / "data"), clock, body)
    else:
        run_served(tmp_path, clock, body)


async def stats_of(broker: roost.Client, queue: str = "jobs") -> SubscriptionStats:
    stats = await broker.stats(queue)
    assert isinstance(stats, SubscriptionStats)
    return stats


async def letters(broker: roost.Client, count: int, topic: str = "jobs.dlq") -> dict[bytes, Any]:
    """The first ``count`` dead letters, by value: their headers. A letter is readable once
    it is durable: each receive returns as soon as one is."""
    found: dict[bytes, dict[str, bytes]] = {}
    for _ in range(count):
        if len(found) >= count:
            break
        for letter in await broker.receive(topic, "read", max_messages=count, wait=5):
            found[letter.message.value] = dict(letter.message.headers)
            await letter.ack()
    return found


async def with_dlq_reader(broker: roost.Client, **queue: Any) -> None:
    await broker.create_queue("jobs", **queue)
    await broker.create_subscription("jobs.dlq", "read", start="earliest", dead_letter=None,
                                     max_deliveries=None)  # fmt: skip


def expiring_by_default_and_by_message(clock: ManualClock) -> Body:
    async def body(broker: roost.Client) -> None:
        await with_dlq_reader(broker, message_ttl=10)
        await broker.publish("jobs", b"a")
        await broker.publish("jobs", b"b", ttl=2)
        await broker.publish("jobs", b"c")
        assert (await stats_of(broker)).depth == 3

        clock.advance(3_000)
        stats = await stats_of(broker)
        assert stats.depth == 2, "b expired: gone from depth before any receive"
        [a, c] = await broker.receive("jobs", max_messages=5)
        assert (a.message.value, c.message.value) == (b"a", b"c"), "b is never delivered"
        await c.nack(delay=0)

        clock.advance(8_000)  # a's and c's TTL pass; a is leased
        assert await broker.receive("jobs", max_messages=5) == []
        await a.ack()  # a lease is not revoked by its message's TTL
        found = await letters(broker, 2)
        assert set(found) == {b"b", b"c"}
        for value, headers in found.items():
            assert headers["x-roost-death-reason"] == b"expired"
            count = b"0" if value == b"b" else b"1"  # b never reached anyone, c once
            assert headers["x-roost-delivery-count"] == count
            assert "x-roost-expires-at" not in headers, "a dead letter does not expire"
        stats = await stats_of(broker)
        assert (stats.depth, stats.dead_letters) == (0, 2)
        # A letter is readable once durable; its original is done at the broker's next tick
        # after that, and counts as in flight until then, never as ready.
        assert stats.backlog == stats.in_flight

    return body


def a_nack_after_the_ttl_expires_it(clock: ManualClock) -> Body:
    async def body(broker: roost.Client) -> None:
        await with_dlq_reader(broker, visibility_timeout=60)
        await broker.publish("jobs", b"slow", ttl=5)
        [slow] = await broker.receive("jobs")
        clock.advance(6_000)
        await slow.nack(delay=0, error="too slow")
        assert await broker.receive("jobs") == [], "expired: never delivered again"
        found = await letters(broker, 1)
        assert found[b"slow"]["x-roost-death-reason"] == b"expired"
        assert found[b"slow"]["x-roost-delivery-count"] == b"1"
        assert found[b"slow"]["x-roost-last-error"] == b"too slow"

    return body


def without_a_dead_letter_topic_it_is_done(clock: ManualClock) -> Body:
    async def body(broker: roost.Client) -> None:
        await broker.create_queue("jobs", dead_letter=None, max_deliveries=None, message_ttl=5)
        for value in (b"1", b"2", b"3"):
            await broker.publish("jobs", value)
        clock.advance(4_000)
        await broker.publish("jobs", b"4")
        clock.advance(1_000)
        stats = await stats_of(broker)
        assert (stats.backlog, stats.depth) == (1, 1)
        assert [m.message.value for m in await broker.receive("jobs", max_messages=5)] == [b"4"]

    return body


def a_delay_within_the_ttl(clock: ManualClock) -> Body:
    async def body(broker: roost.Client) -> None:
        await broker.create_queue("jobs")
        await broker.publish("jobs", b"later", delay=5, ttl=10)
        clock.advance(5_000)
        [later] = await broker.receive("jobs")
        assert later.message.value == b"later"
        await later.ack()
        await broker.publish("jobs", b"too late", delay=5, ttl=10)
        clock.advance(10_000)
        assert await broker.receive("jobs") == []

    return body


def refusals(clock: ManualClock) -> Body:
    async def body(broker: roost.Client) -> None:
        await broker.create_queue("jobs")
        with pytest.raises(InvalidRequest, match=r"would expire .* before it could be delivered"):
            await broker.publish("jobs", b"x", delay=10, ttl=5)
        with pytest.raises(InvalidConfig, match="ttl_ms"):
            await broker.publish("jobs", b"x", ttl=0)
        with pytest.raises(InvalidConfig, match="ttl_ms"):
            await broker.publish("jobs", b"x", ttl=366 * 24 * 3600)
        with pytest.raises(InvalidConfig, match="message_ttl_ms"):
            await broker.create_queue("delayed", delay=10, message_ttl=5)
        await broker.create_topic("clicks")
        with pytest.raises(InvalidConfig, match="none for a stream"):
            await broker.create_subscription("clicks", "g", mode="stream", message_ttl=5)
        assert (await stats_of(broker)).backlog == 0, "nothing refused was stored"
        assert "delayed" not in await broker.list_topics()

    return body


def fifo_a_key_moves_past_its_expired_head(clock: ManualClock) -> Body:
    async def body(broker: roost.Client) -> None:
        await broker.create_queue("jobs", fifo=True)
        await broker.publish("jobs", b"first", key=b"k", ttl=1)
        await broker.publish("jobs", b"second", key=b"k")
        clock.advance(2_000)
        # Once its head's dead letter is durable, the key moves on.
        [second] = await broker.receive("jobs", max_messages=5, wait=5)
        assert second.message.value == b"second"

    return body


BODIES = [
    expiring_by_default_and_by_message,
    a_nack_after_the_ttl_expires_it,
    without_a_dead_letter_topic_it_is_done,
    a_delay_within_the_ttl,
    refusals,
    fifo_a_key_moves_past_its_expired_head,
]


@pytest.mark.parametrize("where", ["embedded", "network"])
@pytest.mark.parametrize("make", BODIES, ids=lambda b: b.__name__)
def test_both_ways(make: Callable[[ManualClock], Body], where: str, tmp_path: Path) -> None:
    clock = ManualClock()
    run_where(where, tmp_path, clock, make(clock))


def test_expiries_survive_a_restart(data_dir: str, clock: ManualClock) -> None:
    async def before(broker: roost.Client) -> None:
        await with_dlq_reader(broker, message_ttl=60)
        await broker.publish("jobs", b"own", ttl=10)
        await broker.publish("jobs", b"default")
        await broker.publish("jobs", b"leased", ttl=30)
        [own, default, leased] = await broker.receive("jobs", max_messages=3)
        await own.nack(delay=0)
        await default.nack(delay=0)
        assert leased.message.value == b"leased"  # its lease dies with the process

    async def after(broker: roost.Client) -> None:
        clock.advance(11_000)
        stats = await stats_of(broker)
        assert stats.backlog - stats.in_flight == 2, "own expired, without a receive"
        clock.advance(20_000)
        assert (await stats_of(broker)).depth == 1
        clock.advance(30_000)
        assert (await stats_of(broker)).depth == 0
        found = await letters(broker, 3)
        assert {v: h["x-roost-death-reason"] for v, h in found.items()} == {
            b"own": b"expired",
            b"default": b"expired",
            b"leased": b"expired",
        }
        assert await broker.receive("jobs") == []

    run(data_dir, clock, before)
    run(data_dir, clock, after)


def test_an_older_broker_is_never_sent_a_ttl() -> None:
    client = Client(OlderBroker(TTL_VERSION - 1))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"ttl needs a broker speaking protocol version 8"):
        asyncio.run(client.publish("jobs", b"x", ttl=5))
    with pytest.raises(ProtocolError, match=r"create_queue\(message_ttl=...\) needs a broker"):
        asyncio.run(client.create_queue("jobs", message_ttl=5))
    with pytest.raises(ProtocolError, match=r"create_subscription\(message_ttl=...\) needs"):
        asyncio.run(client.create_subscription("jobs", "s", message_ttl=5))
