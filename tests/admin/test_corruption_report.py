"""Damage to each store, and what the operator sees: the log line at startup, the metrics, the
recovery report of the admin API, ``/readyz``; and that everything else keeps serving.

Each test builds a real data directory through a host (a queue, a stream subscription, a topic
of two partitions rolled into several segments), stops it, damages one file the way a bad disk
or a crash would, starts a host on it again and looks. Nothing sleeps: the clock is driven.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from roost.admin.metrics import host_registry
from roost.clock import ManualClock
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.errors import PartitionQuarantined, ProducerStateQuarantined, SubscriptionQuarantined
from roost.server.access import TRUSTED
from roost.server.host import Host
from roost.storage import TopicConfig
from roost.storage.engine import CLEAN_MARKER
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name
from tests.admin.support import Admin, run
from tests.metrics_support import scrape, value

#: Small segments, so that partition 0 of ``orders`` rolls into several.
ORDERS = TopicConfig(
    partitions=2, segment_max_bytes=4096, max_record_bytes=1024, durability="never"
)
RECORDS_PER_PARTITION = 40


def order(n: int) -> bytes:
    """Record n of a partition of ``orders``: ~250 bytes a batch, 16 batches a segment."""
    return b"order-%03d " % n + b"." * 200


def build(data_dir: str, clock: ManualClock) -> dict[str, str]:
    """``orders`` (2 partitions, several segments each), the queue ``jobs`` with 10 messages of
    which 0-4 are acked, the queue ``mail`` with 3 messages; returns the journal names."""

    async def main() -> dict[str, str]:
        host = await Host.start(data_dir, clock)
        try:
            broker = host._broker
            broker.create_topic("orders", ORDERS)
            for n in range(RECORDS_PER_PARTITION):
                clock.advance(1)
                for p in (0, 1):
                    broker.publish("orders", [Outgoing(value=order(n), partition=p)])
            for queue, count in (("jobs", 10), ("mail", 3)):
                broker.create_queue(queue, durability="never")
                broker.publish(
                    queue, [Outgoing(value=b"%s-%d" % (queue.encode(), n)) for n in range(count)]
                )
            jobs = broker.receive("jobs", "jobs", max_messages=10)
            broker.ack("jobs", "jobs", [m.receipt for m in jobs[:5]])
            return {spec.name: spec.journal for spec in broker.list_subscriptions()}
        finally:
            await host.aclose()

    return asyncio.run(main())


def partition_dir(data_dir: str, topic: str, partition: int) -> Path:
    return Path(data_dir) / "topics" / topic / str(partition)


def bases(directory: Path) -> list[int]:
    return sorted(int(p.name[: -len(LOG_SUFFIX)]) for p in directory.glob("*" + LOG_SUFFIX))


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x40
    path.write_bytes(data)


def metrics(admin: Admin) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return scrape(host_registry(admin.host))


async def read_all(admin: Admin, topic: str, partition: int) -> list[bytes]:
    broker = admin.broker
    values: list[bytes] = []
    offset = broker.engine.topic(topic).log(partition).start_offset
    end = broker.engine.topic(topic).log(partition).end_offset
    while offset < end:
        batch = broker.read(topic, partition, offset, 100)
        values += [m.value for m in batch]
        offset = batch[-1].offset + 1
    return values


# -- a partition log ----------------------------------------------------------------------------


def test_a_damaged_sealed_segment_quarantines_its_partition_and_says_so_everywhere(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    build(data_dir, clock)
    directory = partition_dir(data_dir, "orders", 0)
    segments = bases(directory)
    assert len(segments) >= 3, "the test needs a sealed segment in the middle"
    middle = segments[1]
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):  # so that the open scans it
        (directory / file_name(middle, suffix)).unlink()
    flip(directory / file_name(middle, LOG_SUFFIX), 60)
    caplog.set_level(logging.INFO)

    async def body(admin: Admin) -> None:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.recovery"]
        assert any(
            line.startswith(
                "recovery of partition orders/0: quarantined, nothing cut: "
                f"segment {middle}: bad batch"
            )
            for line in lines
        ), lines
        # The partition refuses reads and writes, naming itself and the damage ...
        with pytest.raises(PartitionQuarantined) as raised:
            admin.broker.read("orders", 0, 0, 10)
        assert (raised.value.topic, raised.value.partition) == ("orders", 0)
        assert f"segment {middle}" in raised.value.damage
        with pytest.raises(PartitionQuarantined):
            await admin.host.publish("orders", [Outgoing(value=b"x", partition=0)])
        # ... while its sibling, the queues and round-robin publishes serve.
        assert await read_all(admin, "orders", 1) == [
            order(n) for n in range(RECORDS_PER_PARTITION)
        ]
        published = await admin.host.publish("orders", [Outgoing(value=b"rr") for _ in range(4)])
        assert {p.partition for p in published} == {1}
        [mail] = await admin.host.receive("mail", "mail", max_messages=1)
        assert mail.value == b"mail-0"
        # A consumer group assigned both partitions reads the one that serves.
        door = admin.host.door(TRUSTED)
        door.create_subscription(
            SubscriptionSpec(name="audit", topic="orders", mode="stream", start="earliest")
        )
        member = door.join("orders", "audit")
        assert member.partitions == (0, 1)
        fetched, _ = await door.fetch("orders", "audit", member.member_id, member.generation, 100)
        assert {m.partition for m in fetched} == {1}
        values = [m.value for m in fetched]  # up to a segment's end, from the start
        assert values and values == [order(n) for n in range(len(values))]

        error = await admin.error("GET", "/readyz", 503, "partition_quarantined")
        assert "orders/0" in error["message"]
        report = await admin.ok("GET", "/api/v1/recovery")
        assert report["quarantined_partitions"] == ["orders/0"]
        assert report["quarantined_subscriptions"] == []
        [orders0] = [log for log in report["logs"] if log["log"] == "orders/0"]
        assert orders0["quarantined"].startswith(f"segment {middle}: bad batch")
        assert (orders0["bytes_truncated"], orders0["segments_dropped"]) == (0, 0)
        assert orders0["segments"] == len(segments), "nothing dropped"
        samples = metrics(admin)
        assert value(samples, "roost_partition_quarantined", topic="orders", partition=0) == 1
        assert value(samples, "roost_partition_quarantined", topic="orders", partition=1) == 0
        assert value(samples, "roost_recovery_truncated_bytes_total") == 0

    run(data_dir, clock, body)
    # Nothing was cut: every segment file is still there, at its size.
    assert bases(directory) == segments


def test_damage_found_by_a_read_quarantines_at_once_and_after_a_restart(
    data_dir: str, clock: ManualClock
) -> None:
    build(data_dir, clock)
    directory = partition_dir(data_dir, "orders", 0)
    middle = bases(directory)[1]
    flip(directory / file_name(middle, LOG_SUFFIX), 60)  # indexes intact: trusted on open

    async def first_life(admin: Admin) -> None:
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}
        with pytest.raises(PartitionQuarantined):
            await read_all(admin, "orders", 0)
        await admin.error("GET", "/readyz", 503, "partition_quarantined")
        report = await admin.ok("GET", "/api/v1/recovery")
        assert report["quarantined_partitions"] == ["orders/0"]
        samples = metrics(admin)
        assert value(samples, "roost_partition_quarantined", topic="orders", partition=0) == 1

    run(data_dir, clock, first_life)

    async def second_life(admin: Admin) -> None:  # the index is not trusted again
        await admin.error("GET", "/readyz", 503, "partition_quarantined")
        with pytest.raises(PartitionQuarantined):
            admin.broker.read("orders", 0, 0, 1)

    run(data_dir, clock, second_life)


def test_a_torn_tail_after_a_crash_is_cut_and_reported_and_the_broker_stays_ready(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    build(data_dir, clock)
    directory = partition_dir(data_dir, "orders", 1)
    last = directory / file_name(bases(directory)[-1], LOG_SUFFIX)
    size = last.stat().st_size
    os.truncate(last, size - 5)
    os.remove(os.path.join(data_dir, CLEAN_MARKER))  # as if the process had been killed
    caplog.set_level(logging.INFO)

    async def body(admin: Admin) -> None:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.recovery"]
        assert any(
            line.startswith("recovery of partition orders/1: segment ") and " cut " in line
            for line in lines
        ), lines
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}
        report = await admin.ok("GET", "/api/v1/recovery")
        assert report["lost_data"] is True
        [orders1] = [log for log in report["logs"] if log["log"] == "orders/1"]
        assert orders1["bytes_truncated"] > 0
        assert orders1["quarantined"] == ""
        samples = metrics(admin)
        assert value(samples, "roost_recovery_truncated_bytes_total") == orders1["bytes_truncated"]
        assert value(samples, "roost_recovery_logs_cut_total") == 1
        values = await read_all(admin, "orders", 1)
        assert values == [order(n) for n in range(len(values))]
        assert len(values) == RECORDS_PER_PARTITION - 1  # the torn last record

    run(data_dir, clock, body)


def test_a_log_cut_below_its_acks_skips_their_offsets_and_says_so(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    build(data_dir, clock)
    [segment] = partition_dir(data_dir, "jobs", 0).glob("*" + LOG_SUFFIX)
    os.truncate(segment, 0)  # jobs 0-9 gone; the journal has 0-4 acked, 5-9 delivered
    os.remove(os.path.join(data_dir, CLEAN_MARKER))
    caplog.set_level(logging.INFO)

    async def body(admin: Admin) -> None:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.recovery"]
        assert any(
            line.startswith("recovery of partition jobs/0: offsets 0..9 skipped") for line in lines
        ), lines
        report = await admin.ok("GET", "/api/v1/recovery")
        [jobs] = [log for log in report["logs"] if log["log"] == "jobs/0"]
        assert jobs["offsets_skipped"] == 10
        assert report["lost_data"] is True
        assert value(metrics(admin), "roost_recovery_offsets_skipped_total") == 10
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}
        broker = admin.broker
        [published] = broker.publish("jobs", [Outgoing(value=b"after")]).published
        assert published.offset == 10, "never an offset the journal already names"
        [message] = broker.receive("jobs", "jobs", max_messages=10)
        assert message.value == b"after"
        assert broker.stats("jobs", "jobs").backlog == 1

    run(data_dir, clock, body)


# -- a subscription's state journal ----------------------------------------------------------------


def journal_segment(data_dir: str, journal: str) -> Path:
    [segment] = (Path(data_dir) / "journals" / journal / "log").glob("*" + LOG_SUFFIX)
    return segment


def test_a_damaged_journal_quarantines_its_subscription_by_name_and_nothing_else(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    journals = build(data_dir, clock)
    flip(journal_segment(data_dir, journals["jobs"]), 60)  # the first entry, a clean shutdown
    caplog.set_level(logging.INFO)

    async def body(admin: Admin) -> None:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.recovery"]
        assert any(line.startswith("subscription jobs/jobs is out of service") for line in lines)
        with pytest.raises(SubscriptionQuarantined) as raised:
            await admin.host.receive("jobs", "jobs", max_messages=1)
        assert (raised.value.topic, raised.value.subscription) == ("jobs", "jobs")
        [mail] = await admin.host.receive("mail", "mail", max_messages=1)
        assert mail.value == b"mail-0"
        await admin.host.publish("jobs", [Outgoing(value=b"still stored")])  # the topic serves

        error = await admin.error("GET", "/readyz", 503, "subscription_quarantined")
        assert "jobs/jobs" in error["message"]
        report = await admin.ok("GET", "/api/v1/recovery")
        [quarantined] = report["quarantined_subscriptions"]
        assert (quarantined["topic"], quarantined["subscription"]) == ("jobs", "jobs")
        [journal] = [log for log in report["logs"] if log["owner"] == "subscription jobs/jobs"]
        assert journal["log"] == f"{journals['jobs']}/0"
        assert journal["quarantined"] == quarantined["damage"]
        samples = metrics(admin)
        quarantined_series = "roost_subscription_quarantined"
        assert value(samples, quarantined_series, topic="jobs", subscription="jobs") == 1
        assert value(samples, quarantined_series, topic="mail", subscription="mail") == 0

        # Deleting the subscription is a way out: the broker is ready again.
        admin.broker.delete_subscription("jobs", "jobs")
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}

    run(data_dir, clock, body)


def test_a_damaged_producer_state_refuses_deduplicated_publishes_and_says_so_by_topic(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    build(data_dir, clock)

    async def deduplicated(admin: Admin) -> None:
        await admin.host.publish("mail", [Outgoing(value=b"once", dedup_id="m-1")])

    run(data_dir, clock, deduplicated)
    [journal] = [
        d.name for d in (Path(data_dir) / "journals").iterdir() if d.name.startswith("producers-")
    ]
    flip(journal_segment(data_dir, journal), 40)  # its one entry, after a clean shutdown
    caplog.set_level(logging.INFO)

    async def body(admin: Admin) -> None:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.recovery"]
        assert any(line.startswith("the producer state of topic mail is damaged") for line in lines)
        with pytest.raises(ProducerStateQuarantined) as raised:
            await admin.host.publish("mail", [Outgoing(value=b"again", dedup_id="m-1")])
        assert raised.value.topic == "mail" and "producer state of topic mail" in str(raised.value)
        await admin.host.publish("mail", [Outgoing(value=b"plain")])  # plain publishes go in
        await admin.host.publish("jobs", [Outgoing(value=b"other", dedup_id="j-1")])
        [first] = await admin.host.receive("mail", "mail", max_messages=1)
        assert first.value == b"mail-0"

        error = await admin.error("GET", "/readyz", 503, "producer_state_quarantined")
        assert "topic mail" in error["message"]
        report = await admin.ok("GET", "/api/v1/recovery")
        [quarantined] = report["quarantined_producer_states"]
        assert quarantined["topic"] == "mail" and "crc32c" in quarantined["damage"]
        samples = metrics(admin)
        assert value(samples, "roost_producer_state_quarantined", topic="mail") == 1
        assert value(samples, "roost_producer_state_quarantined", topic="jobs") == 0

        # Deleting the topic is a way out: the broker is ready again.
        admin.broker.delete_topic("mail")
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}

    run(data_dir, clock, body)


def test_a_journal_cut_after_a_crash_is_reported_and_redelivers_only_what_it_covered(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    build(data_dir, clock)

    async def ack_the_rest(admin: Admin) -> None:
        # 5-9 were delivered before the restart; their leases are gone: receive them again.
        clock.advance(60_000)
        messages = await admin.host.receive("jobs", "jobs", max_messages=10)
        assert [m.value for m in messages] == [b"jobs-%d" % n for n in range(5, 10)]
        admin.broker.ack("jobs", "jobs", [m.receipt for m in messages[:3]])  # 5, 6, 7
        admin.broker.ack("jobs", "jobs", [m.receipt for m in messages[3:]])  # 8, 9: the last entry

    run(data_dir, clock, ack_the_rest)
    journals = {s.name: s.journal for s in _specs(data_dir, clock)}
    segment = journal_segment(data_dir, journals["jobs"])
    os.truncate(segment, segment.stat().st_size - 3)  # tears the last entry: the ack of 8, 9
    os.remove(os.path.join(data_dir, CLEAN_MARKER))
    caplog.set_level(logging.INFO)

    async def body(admin: Admin) -> None:
        lines = [r.getMessage() for r in caplog.records if r.name == "roost.recovery"]
        assert any(
            line.startswith(
                f"recovery of subscription jobs/jobs (journal {journals['jobs']}/0): "
                "segment 0: cut "
            )
            for line in lines
        ), lines
        report = await admin.ok("GET", "/api/v1/recovery")
        [journal] = [log for log in report["logs"] if log["owner"] == "subscription jobs/jobs"]
        assert journal["bytes_truncated"] > 0
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}
        # Only the acks the cut entry held come back; 0-7 stay acked.
        messages = await admin.host.receive("jobs", "jobs", max_messages=10)
        assert [m.value for m in messages] == [b"jobs-8", b"jobs-9"]

    run(data_dir, clock, body)


def _specs(data_dir: str, clock: ManualClock) -> list:  # type: ignore[type-arg]
    async def main() -> list:  # type: ignore[type-arg]
        host = await Host.start(data_dir, clock)
        try:
            return host._broker.list_subscriptions()
        finally:
            await host.aclose()

    return asyncio.run(main())


def test_a_damaged_snapshot_quarantines_its_subscription(data_dir: str, clock: ManualClock) -> None:
    build(data_dir, clock)

    async def snapshot(admin: Admin) -> None:
        [sub] = [s for s in admin.broker.subscriptions() if s.spec.name == "jobs"]
        sub.journal.snapshot(sub.snapshot())

    run(data_dir, clock, snapshot)
    journals = {s.name: s.journal for s in _specs(data_dir, clock)}
    flip(Path(data_dir) / "journals" / journals["jobs"] / "snapshot", 30)

    async def body(admin: Admin) -> None:
        error = await admin.error("GET", "/readyz", 503, "subscription_quarantined")
        assert "snapshot" in error["message"] and "jobs/jobs" in error["message"]
        with pytest.raises(SubscriptionQuarantined):
            await admin.host.receive("jobs", "jobs", max_messages=1)
        [mail] = await admin.host.receive("mail", "mail", max_messages=1)
        assert mail.value == b"mail-0"

    run(data_dir, clock, body)


def test_the_scrub_finds_damage_nobody_read_and_the_broker_reports_it(
    data_dir: str, clock: ManualClock
) -> None:
    build(data_dir, clock)
    directory = partition_dir(data_dir, "orders", 1)
    flip(directory / file_name(bases(directory)[0], LOG_SUFFIX), 300)  # indexes intact

    async def body(admin: Admin) -> None:
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}
        for _ in range(100):  # bounded: a few steps cover these few KiB
            await admin.host.scrub_step()
            if admin.host.scrubber.found:
                break
        assert admin.host.scrubber.found == 1
        error = await admin.error("GET", "/readyz", 503, "partition_quarantined")
        assert "orders/1" in error["message"] and "scrub" in error["message"]
        report = await admin.ok("GET", "/api/v1/recovery")
        assert report["quarantined_partitions"] == ["orders/1"]
        samples = metrics(admin)
        assert value(samples, "roost_partition_quarantined", topic="orders", partition=1) == 1
        assert await read_all(admin, "orders", 0) == [order(n) for n in range(40)]

    run(data_dir, clock, body)


@pytest.mark.parametrize("suffix", [INDEX_SUFFIX, TIME_INDEX_SUFFIX])
def test_a_damaged_index_is_rebuilt_reported_and_costs_nothing(
    data_dir: str, clock: ManualClock, suffix: str
) -> None:
    build(data_dir, clock)
    directory = partition_dir(data_dir, "orders", 0)
    first = bases(directory)[0]
    flip(directory / file_name(first, suffix), 20)

    async def body(admin: Admin) -> None:
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}
        report = await admin.ok("GET", "/api/v1/recovery")
        [orders0] = [log for log in report["logs"] if log["log"] == "orders/0"]
        assert (orders0["indexes_rebuilt"], orders0["segments_scanned"]) == (1, 1)
        assert orders0["quarantined"] == "" and report["lost_data"] is False
        assert await read_all(admin, "orders", 0) == [
            order(n) for n in range(RECORDS_PER_PARTITION)
        ]
        timestamp = admin.broker.read("orders", 0, 20, 1)[0].timestamp_ms
        assert admin.broker.engine.topic("orders").log(0).offset_for_timestamp(timestamp) == 20

    run(data_dir, clock, body)


def test_a_quarantined_dead_letter_topic_keeps_the_letter_and_every_tick_goes_on(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(admin: Admin) -> None:
        broker = admin.broker
        broker.create_queue("risky", durability="never", max_deliveries=1)
        broker.create_queue("calm", durability="never", visibility_timeout_ms=1_000)
        broker.publish("risky", [Outgoing(value=b"poison")])
        broker.publish("calm", [Outgoing(value=b"fine")])
        broker.engine.topic("risky.dlq").log(0).quarantine("test: damage found in the DLQ")
        [poison] = broker.receive("risky", "risky", max_messages=1)
        [fine] = broker.receive("calm", "calm", max_messages=1)
        broker.nack("risky", "risky", [poison.receipt], delay_ms=0, error="boom")
        clock.advance(1_001)
        broker.tick()  # does not raise: the calm queue's lease expires as it should
        [again] = broker.receive("calm", "calm", max_messages=1)
        assert again.value == fine.value
        stats = broker.stats("risky", "risky")
        assert stats.partitions[0].backlog == 1, "the poison message is kept, not lost"

    run(data_dir, clock, body)
