"""core/expiry.py on its own: what is due, in what order, and what it keeps in memory."""

from __future__ import annotations

from roost.clock import ManualClock
from roost.core.acks import AckRanges
from roost.core.expiry import PRUNE_AT_LEAST, Expiry
from roost.core.model import EXPIRES_AT_HEADER, SubscriptionSpec
from roost.core.subscription import EXPIRED_REFILLS, QueueSubscription
from roost.storage import LocalEngine, Record, TopicConfig


def test_the_heap_keeps_what_is_not_finished(engine: LocalEngine) -> None:
    """Messages acked long before their TTL leave the heap when it doubles, not an hour later:
    a busy queue with a long TTL holds its unfinished messages, not its whole TTL window."""
    expiry = Expiry(None, [0])
    acks = AckRanges()
    total = 3 * PRUNE_AT_LEAST
    for offset in range(total):
        if offset >= 10:
            acks.add(offset - 10)  # acked soon after its publish
        expiry.announce(0, [(offset, 3_600_000 + offset)], acks)
    assert len(expiry._heaps[0]) <= 2 * PRUNE_AT_LEAST
    engine.create_topic("t", TopicConfig(durability="never"))
    log = engine.topic("t").log(0)
    engine.topic("t").append(0, [Record(value=b"x")] * total)
    assert expiry.due(0, log, acks, 3_600_000 + total) == list(range(total - 10, total))


def test_the_default_ttl_expires_from_the_head_in_order(
    engine: LocalEngine, clock: ManualClock
) -> None:
    engine.create_topic("t", TopicConfig(durability="never"))
    topic = engine.topic("t")
    for _ in range(3):
        topic.append(0, [Record(value=b"x")])
        clock.advance(1_000)
    expiry = Expiry(5_000, [0])
    acks = AckRanges()
    log = topic.log(0)
    start = clock.now_ms() - 3_000  # the first record's timestamp
    assert expiry.due(0, log, acks, start + 4_999) == []
    assert expiry.next_deadline_ms(0, log, start + 4_999) == start + 5_000
    assert expiry.due(0, log, acks, start + 6_000) == [0, 1]
    assert expiry.next_deadline_ms(0, log, start + 6_000) == start + 7_000
    acks.add(2)
    assert expiry.due(0, log, acks, start + 60_000) == [], "done: nothing to expire"


def test_a_receive_reads_past_expired_records_it_finds_itself(
    engine: LocalEngine, clock: ManualClock
) -> None:
    """Records whose own TTL nobody announced (published before a restart, past what the
    search at open covers) are found expired by the receive that reads them: it reads on for
    as many more, a few rounds, and whatever it admitted is delivered or expired, never
    dropped on the floor."""
    engine.create_topic("jobs", TopicConfig(durability="never"))
    topic = engine.topic("jobs")
    spec = SubscriptionSpec(name="w", topic="jobs", start="earliest", max_deliveries=None,
                            journal="w")  # fmt: skip
    sub = QueueSubscription.open(spec, topic, engine.journal("w"), clock)
    sub.announce_expiries(0, [(10_000, clock.now_ms() + 1)])  # records may carry a TTL
    stale = (EXPIRES_AT_HEADER, b"%d" % clock.now_ms())
    count = EXPIRED_REFILLS + 2
    topic.append(0, [Record(value=b"stale", headers=(stale,))] * count)
    topic.append(0, [Record(value=b"fresh")])
    delivered = []
    for _ in range(3):
        delivered += sub.receive(1)
    assert [m.value for m in delivered] == [b"fresh"]
    assert sub.stats(clock.now_ms()).backlog == 1, "the stale ones are done (no dead-letter topic)"
