"""/metrics: scrape, act, scrape again; every series moves exactly as it must, and nothing else.

The host runs on a driven clock; waits are for durability and the broker's own tick, never
for time to pass.
"""

from __future__ import annotations

import asyncio
import errno

import pytest

from roost.admin.metrics import host_registry, render
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.core.stats import StreamStats, SubscriptionStats
from roost.errors import StorageFailure
from roost.server.flusher import Flusher
from roost.server.host import Host
from roost.storage import LocalEngine
from tests.metrics_support import metered_host, moved, scrape, series, value
from tests.unit.test_faults import FaultyFS

JOBS = {"topic": "jobs", "subscription": "jobs", "partition": 0}


async def settle_dead_letters(host: Host) -> None:
    """Tick, wait until the dead-letter appends it started are durable, tick again: what the
    host's timer does, done here so the test need not wait for the timer."""
    tick = host._broker.tick()
    for pending in tick.pending_dead_letters:
        await host.flusher.wait_durable(pending.log, pending.next_offset)
    host._broker.tick()


def sub(name: str, **labels: object) -> tuple[str, tuple[tuple[str, str], ...]]:
    return series(name, **{**JOBS, **labels})


def partition(name: str, topic: str = "jobs") -> tuple[str, tuple[tuple[str, str], ...]]:
    return series(name, topic=topic, partition=0)


def test_a_queue_moves_every_counter_and_gauge_as_it_must(
    data_dir: str, clock: ManualClock
) -> None:
    async def main() -> None:
        async with metered_host(data_dir, clock) as (host, client):
            registry = host_registry(host)
            await client.create_queue("jobs", max_deliveries=2)
            jobs_log = host.engine.topic("jobs").log(0)
            dlq_log = host.engine.topic("jobs.dlq").log(0)
            empty = scrape(registry)
            assert value(empty, "roost_subscription_depth", **JOBS) == 0
            assert value(empty, "roost_subscription_dead_letters", topic="jobs",
                         subscription="jobs") == 0  # fmt: skip

            for body in (b"a", b"b", b"c"):
                await client.publish("jobs", body, key=b"customer-4711")
            clock.advance(5_000)
            published = scrape(registry)
            assert moved(empty, published) == {
                partition("roost_partition_published_total"): 3,
                partition("roost_partition_end_offset"): 3,
                partition("roost_partition_size_bytes"): jobs_log.size_bytes,
                sub("roost_subscription_depth"): 3,
                sub("roost_subscription_backlog"): 3,
                sub("roost_subscription_oldest_age_seconds"): 5.0,
            }

            a, b, _leased = await client.receive("jobs", max_messages=3)
            received = scrape(registry)
            assert moved(published, received) == {
                sub("roost_subscription_delivered_total"): 3,
                sub("roost_subscription_in_flight"): 3,
                sub("roost_subscription_depth"): -3,
            }

            await a.ack()
            await b.nack(delay=0, error="boom")
            host._broker.tick()  # b's zero delay is over: ready again
            settled = scrape(registry)
            assert moved(received, settled) == {
                sub("roost_subscription_acked_total"): 1,
                sub("roost_subscription_nacked_total"): 1,
                sub("roost_subscription_in_flight"): -2,
                sub("roost_subscription_backlog"): -1,
                sub("roost_subscription_depth"): 1,
            }

            clock.advance(31_000)  # c's lease (30 s) runs out
            host._broker.tick()
            expired = scrape(registry)
            assert moved(settled, expired) == {
                sub("roost_subscription_expired_total"): 1,
                sub("roost_subscription_in_flight"): -1,
                sub("roost_subscription_depth"): 1,
                sub("roost_subscription_oldest_age_seconds"): 31.0,
            }

            again = await client.receive("jobs", max_messages=10)
            assert sorted(m.value for m in again) == [b"b", b"c"]
            redelivered = scrape(registry)
            assert moved(expired, redelivered) == {
                sub("roost_subscription_delivered_total"): 2,
                sub("roost_subscription_redelivered_total"): 2,
                sub("roost_subscription_in_flight"): 2,
                sub("roost_subscription_depth"): -2,
            }

            for message in again:  # their second delivery: max_deliveries reached
                await message.nack(delay=0, error="still boom")
            await settle_dead_letters(host)
            dead = scrape(registry)
            assert moved(redelivered, dead) == {
                sub("roost_subscription_nacked_total"): 2,
                sub("roost_subscription_dead_lettered_total"): 2,
                sub("roost_subscription_in_flight"): -2,
                sub("roost_subscription_backlog"): -2,
                sub("roost_subscription_oldest_age_seconds"): -36.0,
                series("roost_subscription_dead_letters", topic="jobs", subscription="jobs"): 2,
                partition("roost_partition_published_total", "jobs.dlq"): 2,
                partition("roost_partition_end_offset", "jobs.dlq"): 2,
                partition("roost_partition_size_bytes", "jobs.dlq"): dlq_log.size_bytes,
            }

            exposed, _ = render(registry)
            assert b"customer-4711" not in exposed, "message keys never become labels"

    asyncio.run(main())


def test_metrics_read_the_numbers_roost_stats_shows(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        async with metered_host(data_dir, clock) as (host, client):
            registry = host_registry(host)
            await client.create_queue("jobs", partitions=2, max_deliveries=2)
            for i in range(7):
                await client.publish("jobs", b"%d" % i, partition=0)
            clock.advance(2_500)
            first, second, third = await client.receive("jobs", max_messages=3)
            await first.ack()
            await second.nack(delay=60, error="later")
            await third.nack(delay=0, error="dead")
            host._broker.tick()
            [again] = await client.receive("jobs", max_messages=1)
            assert again.value == third.value
            await again.nack(delay=0, error="dead")  # its second delivery: dead-lettered
            await settle_dead_letters(host)
            await client.receive("jobs", max_messages=1)  # one stays in flight

            stats = await client.stats("jobs")  # what `roost stats jobs` prints
            assert isinstance(stats, SubscriptionStats)
            samples = scrape(registry)
            names = {"topic": "jobs", "subscription": "jobs"}
            for p in stats.partitions:
                labels = {**names, "partition": p.partition}
                assert value(samples, "roost_subscription_depth", **labels) == p.depth
                assert value(samples, "roost_subscription_backlog", **labels) == p.backlog
                assert value(samples, "roost_subscription_in_flight", **labels) == p.in_flight
                assert value(samples, "roost_subscription_delayed", **labels) == p.delayed
                age_s = value(samples, "roost_subscription_oldest_age_seconds", **labels)
                assert age_s == (p.oldest_age_ms or 0) / 1000
            assert value(samples, "roost_subscription_dead_letters", **names) == 1
            assert stats.dead_letters == 1
            assert [(p.backlog, p.in_flight, p.delayed, p.depth) for p in stats.partitions] == [
                (5, 1, 1, 3),
                (0, 0, 0, 0),
            ]

    asyncio.run(main())


def test_a_consumer_group_s_lag_and_commits(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        async with metered_host(data_dir, clock) as (host, client):
            registry = host_registry(host)
            await client.create_topic("events", partitions=2)
            await client.create_subscription("events", "billing", mode="stream", start="earliest")
            for i in range(5):
                await client.publish("events", b"%d" % i, partition=0)
            for i in range(3):
                await client.publish("events", b"%d" % i, partition=1)
            member = await client.join("events", "billing")
            names = {"topic": "events", "subscription": "billing"}
            joined = scrape(registry)
            assert value(joined, "roost_subscription_members", **names) == 1
            assert value(joined, "roost_subscription_lag", **names, partition=0) == 5
            assert value(joined, "roost_subscription_lag", **names, partition=1) == 3

            records = await member.fetch(max_records=100)
            fetched = scrape(registry)
            assert moved(joined, fetched) == {
                series("roost_subscription_delivered_total", **names, partition=0): 5,
                series("roost_subscription_delivered_total", **names, partition=1): 3,
            }, "a fetch moves no commit: the lag stays until the member commits"

            await member.commit({0: 5})
            for i in range(2):
                await client.publish("events", b"late %d" % i, partition=1)
            committed = scrape(registry)
            assert moved(fetched, committed) == {
                series("roost_subscription_committed_offset", **names, partition=0): 5,
                series("roost_subscription_lag", **names, partition=0): -5,
                series("roost_subscription_lag", **names, partition=1): 2,
                series("roost_partition_published_total", topic="events", partition=1): 2,
                series("roost_partition_end_offset", topic="events", partition=1): 2,
                series("roost_partition_size_bytes", topic="events", partition=1): (
                    host.engine.topic("events").log(1).size_bytes
                    - value(fetched, "roost_partition_size_bytes", topic="events", partition=1)
                ),
            }
            stats = await client.stats("events", "billing")
            assert isinstance(stats, StreamStats)
            assert [p.lag for p in stats.partitions] == [0, 5]
            assert len(records) == 8

    asyncio.run(main())


def test_flush_rounds_are_counted_once_per_group_commit(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        async with metered_host(data_dir, clock) as (host, client):
            registry = host_registry(host)
            await client.create_topic("t")
            before = scrape(registry)
            await asyncio.gather(*(client.publish("t", b"%d" % i) for i in range(50)))
            after = scrape(registry)

            def grew(name: str) -> float:
                return value(after, name) - value(before, name)

            rounds = grew("roost_flush_rounds_total")
            assert 1 <= rounds < 50, "concurrent publishes share rounds"
            assert grew("roost_fsync_duration_seconds_count") == rounds, "one observation a round"
            assert 1 <= grew("roost_append_latency_seconds_count") <= rounds
            assert grew("roost_fsyncs_total") >= rounds
            assert grew("roost_flush_rounds_on_loop_total") <= rounds
            assert grew("roost_flushed_records_total") >= 50
            assert value(after, "roost_fsync_duration_seconds_bucket", le="+Inf") == value(
                after, "roost_fsync_duration_seconds_count"
            )

    asyncio.run(main())


def test_a_partition_whose_fsync_failed_is_pageable(data_dir: str, clock: ManualClock) -> None:
    faulty = FaultyFS()

    async def main() -> None:
        engine = LocalEngine.open(data_dir, clock, faulty)
        flusher = Flusher(clock)
        engine.on_dirty = flusher.notify
        host = Host(engine, Broker.open(engine, clock), flusher, clock)
        try:
            registry = host_registry(host)
            host._broker.create_topic("t")
            await host.publish("t", [Outgoing(value=b"ok")])
            healthy = scrape(registry)
            assert value(healthy, "roost_partition_write_failed", topic="t", partition=0) == 0
            faulty.fail_writes = errno.EIO  # the flush job's O_DSYNC write
            with pytest.raises(StorageFailure):
                await host.publish("t", [Outgoing(value=b"lost")])
            failed = scrape(registry)
            assert value(failed, "roost_partition_write_failed", topic="t", partition=0) == 1
            assert value(failed, "roost_fsyncs_total") == value(healthy, "roost_fsyncs_total"), (
                "a failed sync is not counted as done"
            )
        finally:
            faulty.fail_writes = None
            await host.aclose()

    asyncio.run(main())
