"""`queue` and `keyed` subscriptions (roost.core.subscription), one behaviour per test.

Everything runs on a real ``LocalEngine`` in a temporary directory with a ``ManualClock``; nothing
sleeps. Topics are ``durability="never"`` unless a test is about durability, so appended records
are deliverable at once. A crash is ``engine.close(clean=False)`` and a reopen of the engine and
of the subscription from the same journal.

What is pinned here: start positions; leases (expiry, stale receipts, extend, visibility bounds);
nack delays and the retry policy; dead letters and their headers; per-record and per-subscription
delays and ``tick``'s deadline; keyed order and per-key parking (a key stuck in retries never
holds back another); durability gating; what survives a crash; records lost to retention.
tests/property/test_queue_model.py checks the same rules against a model over random steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import pytest

from roost.clock import ManualClock
from roost.core import state_codec
from roost.core.model import (
    DELIVER_AT_HEADER,
    MAX_VISIBILITY_MS,
    Message,
    Receipt,
    SubscriptionSpec,
)
from roost.core.retry import RetryPolicy
from roost.core.subscription import DLQ_HEADERS, RESTART_ERROR, QueueSubscription
from roost.errors import InvalidConfig, InvalidRequest
from roost.storage import LocalEngine, Record, StoredRecord, Topic, TopicConfig

VISIBILITY_MS = 10_000
#: Retries are visible as soon as a lease ends or a nack lands: tests then see only the timeout.
IMMEDIATE = RetryPolicy(kind="fixed", base_ms=0, max_ms=0, jitter=0.0)
HOUR_MS = 3600 * 1000


class Broker:
    """An engine that can crash, and subscriptions on it. Topic "jobs" is created by the test."""

    def __init__(self, engine: LocalEngine, data_dir: str, clock: ManualClock) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.clock = clock

    def create(self, name: str = "jobs", **config: Any) -> Topic:
        config.setdefault("durability", "never")
        return self.engine.create_topic(name, TopicConfig(**config))

    def publish(
        self,
        *values: bytes,
        key: bytes | None = None,
        partition: int = 0,
        headers: Sequence[tuple[str, bytes]] = (),
        topic: str = "jobs",
    ) -> list[int]:
        """Append ``values`` as one batch; returns their offsets."""
        records = [Record(value=v, key=key, headers=headers) for v in values]
        result = self.engine.topic(topic).append(partition, records)
        return list(range(result.base_offset, result.next_offset))

    def subscribe(
        self, spec: SubscriptionSpec, dead_letter: str | None = None
    ) -> QueueSubscription:
        return QueueSubscription.open(
            spec,
            self.engine.topic(spec.topic),
            self.engine.journal(spec.journal),
            self.clock,
            self.engine.topic(dead_letter) if dead_letter else None,
        )

    def crash(self) -> None:
        """Close without flushing or marking the shutdown clean, then reopen."""
        self.engine.close(clean=False)
        self.engine = LocalEngine.open(self.data_dir, self.clock)

    def dead_letters(self, topic: str = "dlq", partition: int = 0) -> list[StoredRecord]:
        return self.engine.topic(topic).read(partition, 0)


@pytest.fixture
def broker(engine: LocalEngine, data_dir: str, clock: ManualClock) -> Iterator[Broker]:
    broker = Broker(engine, data_dir, clock)
    yield broker
    broker.engine.close()  # the one open now; the fixture's engine may have crashed


def spec(**settings: Any) -> SubscriptionSpec:
    """A subscription on "jobs" from the start, with immediate retries, unless told otherwise."""
    settings = {
        "name": "w",
        "topic": "jobs",
        "start": "earliest",
        "visibility_timeout_ms": VISIBILITY_MS,
        "retry": IMMEDIATE,
        "journal": "sub-w",
        **settings,
    }
    return SubscriptionSpec(**settings)


def offsets(messages: list[Message]) -> list[int]:
    return [m.offset for m in messages]


def receipts(messages: list[Message]) -> list[Receipt]:
    return [m.receipt for m in messages]


def assert_hidden_for(sub: QueueSubscription, clock: ManualClock, ms: int) -> list[Message]:
    """Nothing is delivered until ``ms`` from now, then something is; returns it (leased)."""
    clock.advance(ms - 1)
    assert sub.receive(10) == [], f"delivered before {ms} ms"
    clock.advance(1)
    messages = sub.receive(10)
    assert messages, f"not delivered at {ms} ms"
    return messages


def state_of(sub: QueueSubscription) -> list[tuple[Any, ...]]:
    """What a restart must keep, per partition, in a comparable order."""
    decoded = msgspec.msgpack.decode(sub.snapshot(), type=state_codec.Snapshot)
    return [(p.floor, p.ranges, sorted(p.attempts), sorted(p.retry_at)) for p in decoded.partitions]


# -- start position -----------------------------------------------------------------------------


def test_latest_skips_records_published_before_the_subscription_opened(broker: Broker) -> None:
    broker.create()
    broker.publish(b"old-1", b"old-2")
    sub = broker.subscribe(spec(start="latest"))
    broker.publish(b"new")
    assert [m.value for m in sub.receive(10)] == [b"new"]


def test_earliest_delivers_records_published_before_the_subscription_opened(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(b"old-1", b"old-2")
    sub = broker.subscribe(spec(start="earliest"))
    assert [m.value for m in sub.receive(10)] == [b"old-1", b"old-2"]


def test_latest_is_taken_per_partition(broker: Broker) -> None:
    broker.create(partitions=2)
    broker.publish(b"a", b"b", b"c", partition=0)
    broker.publish(b"d", partition=1)
    sub = broker.subscribe(spec(start="latest"))
    new = [broker.publish(b"x", partition=p)[0] for p in (0, 1)]
    assert sorted((m.partition, m.offset) for m in sub.receive(10)) == [(0, new[0]), (1, new[1])]


def test_the_first_journal_entry_records_the_start_position(broker: Broker) -> None:
    broker.create()
    broker.publish(b"old-1", b"old-2")
    broker.subscribe(spec(start="latest"))
    _, entries = broker.engine.journal("sub-w").recover()
    assert msgspec.msgpack.decode(entries[0]) == [state_codec.DONE, 0, [[0, 2]]]


def test_reopening_keeps_the_start_position_instead_of_taking_latest_again(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(b"old")
    broker.subscribe(spec(start="latest"))
    published_while_closed = broker.publish(b"a", b"b")
    sub = broker.subscribe(spec(start="latest"))
    assert offsets(sub.receive(10)) == published_while_closed


def test_latest_on_an_empty_topic_delivers_everything_published_later(broker: Broker) -> None:
    broker.create()
    sub = broker.subscribe(spec(start="latest"))
    published = broker.publish(b"a", b"b")
    assert offsets(sub.receive(10)) == published


# -- receive ------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_messages", [0, -1, 1.5, True])
def test_max_messages_below_one_or_not_an_int_is_refused(broker: Broker, max_messages: Any) -> None:
    broker.create()
    sub = broker.subscribe(spec())
    with pytest.raises(InvalidRequest):
        sub.receive(max_messages)


def test_receive_returns_at_most_max_messages_lowest_offsets_first(broker: Broker) -> None:
    broker.create()
    published = broker.publish(*[b"m%d" % i for i in range(5)])
    sub = broker.subscribe(spec())
    assert offsets(sub.receive(3)) == published[:3]
    assert offsets(sub.receive(3)) == published[3:]


def test_a_delivered_message_carries_its_record_and_a_receipt(broker: Broker) -> None:
    broker.create()
    broker.clock.advance(5)
    broker.publish(b"hello", key=b"k", headers=[("h", b"1")])
    (message,) = broker.subscribe(spec()).receive(1)
    assert message == Message(
        "jobs", 0, 0, broker.clock.now_ms(), b"k", b"hello", (("h", b"1"),), 1
    )
    assert message.receipt == Receipt(0, 0, 1)


def test_receive_takes_messages_from_every_partition(broker: Broker) -> None:
    broker.create(partitions=3)
    for p in range(3):
        broker.publish(b"x", partition=p)
    messages = broker.subscribe(spec()).receive(10)
    assert sorted(m.partition for m in messages) == [0, 1, 2]


def test_a_receive_of_many_messages_and_their_ack_write_one_journal_entry_each(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(*[b"m%d" % i for i in range(100)])
    sub = broker.subscribe(spec())
    journal = broker.engine.journal("sub-w").log
    before = journal.end_offset
    messages = sub.receive(100)
    assert len(messages) == 100
    assert journal.end_offset == before + 1
    assert sub.ack(receipts(messages)) == []
    assert journal.end_offset == before + 2


# -- leases -------------------------------------------------------------------------------------


def test_an_acked_message_is_not_delivered_again(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    assert sub.ack(receipts(sub.receive(1))) == []
    broker.clock.advance(10 * VISIBILITY_MS)
    assert sub.receive(10) == []


def test_a_leased_message_is_not_delivered_to_another_receive(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    assert len(sub.receive(1)) == 1
    broker.clock.advance(VISIBILITY_MS - 1)
    assert sub.receive(10) == []


def test_an_unacked_message_is_delivered_again_after_the_visibility_timeout(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    sub.receive(1)
    (again,) = assert_hidden_for(sub, broker.clock, VISIBILITY_MS)
    assert (again.offset, again.delivery_count, again.receipt) == (0, 2, Receipt(0, 0, 2))


def test_an_expired_lease_is_visible_again_at_its_deadline_whatever_the_retry_policy(
    broker: Broker,
) -> None:
    # As in SQS: the visibility timeout is the wait; the retry policy is for nacks.
    broker.create()
    broker.publish(b"a")
    retry = RetryPolicy(kind="fixed", base_ms=5_000, max_ms=5_000, jitter=0.0)
    sub = broker.subscribe(spec(retry=retry))
    sub.receive(1)
    (again,) = assert_hidden_for(sub, broker.clock, VISIBILITY_MS)
    assert again.delivery_count == 2


def test_an_ack_with_an_expired_receipt_is_refused_and_leaves_the_new_delivery_leased(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (first,) = sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    (second,) = sub.receive(1)
    assert sub.ack([first.receipt]) == [first.receipt]
    assert second.delivery_count == 2
    broker.clock.advance(VISIBILITY_MS)
    (third,) = sub.receive(1)
    assert third.delivery_count == 3, "the second delivery was not acked by the stale receipt"


def test_an_ack_at_the_deadline_is_refused_even_before_tick(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    assert sub.ack([message.receipt]) == [message.receipt]


def test_an_ack_just_before_the_deadline_is_accepted(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    broker.clock.advance(VISIBILITY_MS - 1)
    assert sub.ack([message.receipt]) == []


def test_a_second_ack_of_the_same_receipt_is_refused(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    assert sub.ack([message.receipt]) == []
    assert sub.ack([message.receipt]) == [message.receipt]


def test_an_ack_refuses_only_the_stale_receipts_of_a_batch(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a", b"b")
    sub = broker.subscribe(spec())
    a, b = sub.receive(2)
    stale = Receipt(0, a.offset, a.delivery_count + 1)
    assert sub.ack([stale, b.receipt]) == [stale]
    assert sub.ack([a.receipt]) == []


def test_extend_keeps_a_message_invisible_past_its_original_deadline(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    broker.clock.advance(VISIBILITY_MS - 1)
    assert sub.extend([message.receipt], VISIBILITY_MS) == []
    broker.clock.advance(VISIBILITY_MS - 1)
    sub.tick()
    assert sub.receive(10) == []
    assert sub.ack([message.receipt]) == [], "still leased to the extended receipt"


def test_an_extended_lease_expires_at_its_new_deadline(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    broker.clock.advance(1_000)
    sub.extend([message.receipt], 2 * VISIBILITY_MS)
    (again,) = assert_hidden_for(sub, broker.clock, 2 * VISIBILITY_MS)
    assert again.delivery_count == 2


def test_extend_of_an_expired_receipt_is_refused(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    assert sub.extend([message.receipt], VISIBILITY_MS) == [message.receipt]


def test_a_per_receive_visibility_overrides_the_spec(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    sub.receive(1, visibility_ms=500)
    (again,) = assert_hidden_for(sub, broker.clock, 500)
    assert again.delivery_count == 2


def test_a_visibility_of_zero_makes_the_message_visible_again_at_once(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (first,) = sub.receive(1, visibility_ms=0)
    (second,) = sub.receive(1)
    assert (first.delivery_count, second.delivery_count) == (1, 2)


@pytest.mark.parametrize("visibility_ms", [-1, MAX_VISIBILITY_MS + 1, 1.5])
def test_a_receive_visibility_out_of_bounds_is_refused(broker: Broker, visibility_ms: Any) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    with pytest.raises(InvalidConfig) as raised:
        sub.receive(1, visibility_ms=visibility_ms)
    assert raised.value.field == "visibility_timeout_ms"
    assert len(sub.receive(1)) == 1, "the refused receive leased nothing"


@pytest.mark.parametrize("visibility_ms", [0, MAX_VISIBILITY_MS])
def test_receive_visibility_bounds_are_accepted(broker: Broker, visibility_ms: int) -> None:
    broker.create()
    broker.publish(b"a")
    assert len(broker.subscribe(spec()).receive(1, visibility_ms=visibility_ms)) == 1


@pytest.mark.parametrize("visibility_ms", [-1, MAX_VISIBILITY_MS + 1])
def test_an_extend_visibility_out_of_bounds_is_refused(broker: Broker, visibility_ms: int) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    with pytest.raises(InvalidConfig):
        sub.extend([message.receipt], visibility_ms)


@pytest.mark.parametrize("visibility_ms", [-1, MAX_VISIBILITY_MS + 1])
def test_a_spec_visibility_out_of_bounds_is_refused(visibility_ms: int) -> None:
    with pytest.raises(InvalidConfig) as raised:
        spec(visibility_timeout_ms=visibility_ms)
    assert raised.value.field == "visibility_timeout_ms"


# -- nack ---------------------------------------------------------------------------------------


def test_a_nack_with_a_delay_hides_the_message_until_the_delay_ends(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    assert sub.nack([message.receipt], delay_ms=7_000) == []
    (again,) = assert_hidden_for(sub, broker.clock, 7_000)
    assert again.delivery_count == 2


def test_a_nack_with_zero_delay_makes_the_message_visible_at_once(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec(retry=RetryPolicy(base_ms=60_000, jitter=0.0)))
    (message,) = sub.receive(1)
    sub.nack([message.receipt], delay_ms=0)
    assert offsets(sub.receive(1)) == [message.offset]


def test_a_nack_without_a_delay_waits_the_exponential_retry_delay(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    retry = RetryPolicy(kind="exponential", base_ms=1_000, max_ms=60_000, jitter=0.0)
    sub = broker.subscribe(spec(retry=retry, max_deliveries=None))
    (message,) = sub.receive(1)
    for wait_ms in (1_000, 2_000, 4_000):
        sub.nack([message.receipt])
        (message,) = assert_hidden_for(sub, broker.clock, wait_ms)


def test_the_retry_delay_is_capped_at_max_ms(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    retry = RetryPolicy(kind="exponential", base_ms=1_000, max_ms=1_500, jitter=0.0)
    sub = broker.subscribe(spec(retry=retry))
    (message,) = sub.receive(1)
    for wait_ms in (1_000, 1_500, 1_500):
        sub.nack([message.receipt])
        (message,) = assert_hidden_for(sub, broker.clock, wait_ms)


def test_a_nack_with_an_expired_receipt_is_refused(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (first,) = sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    (second,) = sub.receive(1)
    assert sub.nack([first.receipt], delay_ms=HOUR_MS) == [first.receipt]
    assert sub.ack([second.receipt]) == [], "the newer delivery is still leased"


def test_a_nack_with_a_negative_delay_is_refused(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    (message,) = sub.receive(1)
    with pytest.raises(InvalidRequest):
        sub.nack([message.receipt], delay_ms=-1)
    assert sub.ack([message.receipt]) == [], "the refused nack released nothing"


# -- dead letters -------------------------------------------------------------------------------


def test_after_max_deliveries_the_record_goes_to_the_dead_letter_topic_with_its_headers(
    broker: Broker,
) -> None:
    broker.create()
    broker.create("dlq")
    broker.clock.advance(1)
    published_ms = broker.clock.now_ms()
    broker.publish(b"payload", key=b"k", headers=[("trace", b"t1")])
    sub = broker.subscribe(spec(max_deliveries=2, dead_letter="dlq"), dead_letter="dlq")
    broker.clock.advance(100)
    first_ms = broker.clock.now_ms()
    sub.nack(receipts(sub.receive(1)), error="first failure")
    broker.clock.advance(100)
    last_ms = broker.clock.now_ms()
    sub.nack(receipts(sub.receive(1)), error="smtp 550")
    sub.tick()
    (dead,) = broker.dead_letters()
    assert (dead.key, dead.value, dead.timestamp_ms) == (b"k", b"payload", published_ms)
    assert dead.headers == (
        ("trace", b"t1"),
        *zip(
            DLQ_HEADERS,
            [
                b"jobs",
                b"0",
                b"0",
                b"2",
                b"%d" % first_ms,
                b"%d" % last_ms,
                b"smtp 550",
                b"max-deliveries",
            ],
            strict=True,
        ),
    )


def test_a_dead_lettered_message_is_not_delivered_again(broker: Broker) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"a")
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(1)))
    broker.clock.advance(HOUR_MS)
    assert sub.receive(10) == []
    assert sub.pending_dead_letters == []
    assert 0 in sub.partition_state(0).acks


def test_a_lease_expiring_on_the_last_delivery_dead_letters_with_error_lease_expired(
    broker: Broker,
) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"a")
    sub = broker.subscribe(spec(max_deliveries=2), dead_letter="dlq")
    sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    assert sub.receive(10) == []
    (dead,) = broker.dead_letters()
    assert dead.value == b"a"
    assert dict(dead.headers)["x-roost-last-error"] == b"lease expired"
    assert dict(dead.headers)["x-roost-delivery-count"] == b"2"


def test_a_dead_letter_goes_to_the_source_partition_modulo_the_dead_letter_partitions(
    broker: Broker,
) -> None:
    broker.create(partitions=3)
    broker.create("dlq", partitions=2)
    broker.publish(b"from-2", partition=2)
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(1)))
    sub.tick()
    assert [r.value for r in broker.dead_letters(partition=0)] == [b"from-2"]
    assert broker.dead_letters(partition=1) == []


def test_an_always_dead_letter_topic_keeps_the_original_pending_until_it_is_flushed(
    broker: Broker,
) -> None:
    broker.create()
    dlq = broker.create("dlq", durability="always")
    broker.publish(b"a")
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(1)))
    sub.tick()
    (pending,) = sub.pending_dead_letters
    assert (pending.partition, pending.offset) == (0, 0)
    assert 0 not in sub.partition_state(0).acks
    assert sub.receive(10) == [], "a message waiting for its dead-letter append is not delivered"
    dlq.log(0).flush()
    assert sub.pending_dead_letters != [], "settled by tick, not by the flush itself"
    sub.tick()
    assert sub.pending_dead_letters == []
    assert 0 in sub.partition_state(0).acks


def test_without_a_dead_letter_topic_a_message_is_retried_forever(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec(max_deliveries=2, dead_letter="dlq"))  # no topic passed
    for delivery in range(1, 6):
        (message,) = sub.receive(1)
        assert message.delivery_count == delivery
        sub.nack([message.receipt])
    assert sub.pending_dead_letters == []


# -- delays -------------------------------------------------------------------------------------


def test_a_deliver_at_header_holds_the_record_until_that_time(broker: Broker) -> None:
    broker.create()
    at_ms = broker.clock.now_ms() + 60_000
    broker.publish(b"later", headers=[(DELIVER_AT_HEADER, b"%d" % at_ms)])
    broker.publish(b"now")
    sub = broker.subscribe(spec())
    now = sub.receive(10)
    assert [m.value for m in now] == [b"now"]
    sub.ack(receipts(now))
    assert [m.value for m in assert_hidden_for(sub, broker.clock, 60_000)] == [b"later"]


def test_a_deliver_at_header_in_the_past_is_delivered_at_once(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a", headers=[(DELIVER_AT_HEADER, b"%d" % (broker.clock.now_ms() - 1))])
    assert len(broker.subscribe(spec()).receive(10)) == 1


def test_a_malformed_deliver_at_header_does_not_stop_the_subscription(broker: Broker) -> None:
    broker.create()
    broker.publish(b"bad", headers=[(DELIVER_AT_HEADER, b"tomorrow")])
    broker.publish(b"good")
    sub = broker.subscribe(spec())
    assert b"good" in [m.value for m in sub.receive(10)]


def test_the_spec_delay_holds_every_record_relative_to_its_timestamp(broker: Broker) -> None:
    broker.create()
    sub = broker.subscribe(spec(delay_ms=5_000))
    first = broker.publish(b"a")
    broker.clock.advance(1_000)
    second = broker.publish(b"b")
    assert offsets(assert_hidden_for(sub, broker.clock, 4_000)) == first
    assert offsets(assert_hidden_for(sub, broker.clock, 1_000)) == second


def test_the_spec_delay_counts_from_the_record_timestamp_not_from_its_reading(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(b"a")
    broker.clock.advance(5_000)
    assert len(broker.subscribe(spec(delay_ms=5_000)).receive(10)) == 1


def test_tick_returns_the_end_of_the_nearest_delay(broker: Broker) -> None:
    broker.create()
    now_ms = broker.clock.now_ms()
    for wait_ms in (9_000, 3_000):
        broker.publish(b"a", headers=[(DELIVER_AT_HEADER, b"%d" % (now_ms + wait_ms))])
    sub = broker.subscribe(spec())
    assert sub.receive(10) == []
    assert sub.tick() == now_ms + 3_000


def test_tick_returns_the_nearest_lease_deadline(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    sub.receive(1)
    assert sub.tick() == broker.clock.now_ms() + VISIBILITY_MS


def test_tick_returns_none_when_nothing_waits(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    assert sub.tick() is None
    assert len(sub.receive(10)) == 1


def test_tick_returns_none_once_every_lease_is_acked(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    sub.ack(receipts(sub.receive(1)))
    assert sub.tick() is None


# -- keyed mode ---------------------------------------------------------------------------------


def test_keyed_delivers_one_message_per_key_at_a_time(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a1", b"a2", b"a3", key=b"A")
    sub = broker.subscribe(spec(mode="keyed"))
    assert [m.value for m in sub.receive(10)] == [b"a1"]
    assert sub.receive(10) == []


def test_keyed_delivers_different_keys_in_parallel(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a1", b"a2", key=b"A")
    broker.publish(b"b1", b"b2", key=b"B")
    broker.publish(b"c1", key=b"C")
    sub = broker.subscribe(spec(mode="keyed"))
    assert [m.value for m in sub.receive(10)] == [b"a1", b"b1", b"c1"]


def test_keyed_delivers_each_key_in_order_as_heads_are_acked(broker: Broker) -> None:
    broker.create()
    for i in range(3):
        broker.publish(b"a%d" % i, key=b"A")
        broker.publish(b"b%d" % i, key=b"B")
    sub = broker.subscribe(spec(mode="keyed"))
    seen = []
    while messages := sub.receive(10):
        seen.append(sorted(m.value for m in messages))
        sub.ack(receipts(messages))
    assert seen == [[b"a0", b"b0"], [b"a1", b"b1"], [b"a2", b"b2"]]


def test_keyed_redelivers_a_nacked_head_before_the_rest_of_its_key(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a1", b"a2", key=b"A")
    sub = broker.subscribe(spec(mode="keyed"))
    (head,) = sub.receive(10)
    sub.nack([head.receipt], delay_ms=1_000)
    (again,) = assert_hidden_for(sub, broker.clock, 1_000)
    assert (again.value, again.delivery_count) == (b"a1", 2)


def test_keyed_redelivers_an_expired_head_before_the_rest_of_its_key(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a1", b"a2", key=b"A")
    sub = broker.subscribe(spec(mode="keyed"))
    sub.receive(10)
    (again,) = assert_hidden_for(sub, broker.clock, VISIBILITY_MS)
    assert (again.value, again.delivery_count) == (b"a1", 2)


def test_keyed_a_key_stuck_in_retries_never_holds_back_a_later_key(broker: Broker) -> None:
    broker.create()
    stuck = broker.publish(*[b"a%d" % i for i in range(5_000)], key=b"A")
    later = broker.publish(b"b1", b"b2", key=b"B")
    later += broker.publish(b"c1", key=b"C")
    sub = broker.subscribe(spec(mode="keyed"))
    (head,) = sub.receive(1)
    assert head.offset == stuck[0]
    sub.nack([head.receipt], delay_ms=HOUR_MS)
    assert offsets(sub.receive(10)) == [later[0], later[2]], "B's and C's heads, at once"
    assert sub.receive(10) == []
    assert sub.partition_state(0).read_offset == later[-1] + 1, "A's tail parked, not rescanned"


def test_keyed_a_stuck_key_releases_its_parked_tail_in_order_once_its_head_is_acked(
    broker: Broker,
) -> None:
    broker.create()
    stuck = broker.publish(*[b"a%d" % i for i in range(5_000)], key=b"A")
    broker.publish(b"b1", key=b"B")
    sub = broker.subscribe(spec(mode="keyed"))
    (head,) = sub.receive(1)
    sub.nack([head.receipt], delay_ms=HOUR_MS)
    sub.ack(receipts(sub.receive(10)))  # B
    broker.clock.advance(HOUR_MS)
    delivered = []
    for _ in range(3):
        (message,) = sub.receive(10)
        delivered.append(message.offset)
        sub.ack([message.receipt])
    assert delivered == stuck[:3]


def test_keyed_a_dead_lettered_head_unblocks_its_key(broker: Broker) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"a1", b"a2", key=b"A")
    sub = broker.subscribe(spec(mode="keyed", max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(10)))
    sub.tick()  # the dead-letter append is confirmed: a1 is done
    assert [m.value for m in sub.receive(10)] == [b"a2"]


def test_keyed_a_dead_lettered_head_unblocks_its_key_for_the_very_next_receive(
    broker: Broker,
) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"a1", b"a2", key=b"A")
    sub = broker.subscribe(spec(mode="keyed", max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(10)))
    assert [m.value for m in sub.receive(10)] == [b"a2"]


def test_keyed_records_without_a_key_form_one_group(broker: Broker) -> None:
    broker.create()
    broker.publish(b"n1", b"n2")
    broker.publish(b"k1", key=b"K")
    sub = broker.subscribe(spec(mode="keyed"))
    first = sub.receive(10)
    assert [m.value for m in first] == [b"n1", b"k1"]
    sub.ack(receipts(first))
    assert [m.value for m in sub.receive(10)] == [b"n2"]


def test_queue_mode_delivers_a_key_in_parallel(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a1", b"a2", b"a3", key=b"A")
    assert len(broker.subscribe(spec(mode="queue")).receive(10)) == 3


# -- durability ---------------------------------------------------------------------------------


def test_always_records_are_not_delivered_before_they_are_durable(broker: Broker) -> None:
    topic = broker.create(durability="always")
    published = broker.publish(b"a", b"b")
    sub = broker.subscribe(spec())
    assert sub.receive(10) == []
    topic.log(0).flush()
    assert offsets(sub.receive(10)) == published


def test_always_delivers_up_to_the_durable_offset_only(broker: Broker) -> None:
    topic = broker.create(durability="always")
    durable = broker.publish(b"a")
    topic.log(0).flush()
    broker.publish(b"b")
    assert offsets(broker.subscribe(spec()).receive(10)) == durable


def test_never_records_are_delivered_at_once(broker: Broker) -> None:
    topic = broker.create(durability="never")
    published = broker.publish(b"a", b"b")
    assert topic.log(0).durable_offset == 0, "never flushed"
    assert offsets(broker.subscribe(spec()).receive(10)) == published


# -- crash and restart --------------------------------------------------------------------------


def test_acked_messages_are_not_redelivered_after_a_crash(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a", b"b", b"c")
    sub = broker.subscribe(spec())
    a, b, c = sub.receive(3)
    sub.ack([a.receipt, c.receipt])
    broker.crash()
    assert offsets(broker.subscribe(spec()).receive(10)) == [b.offset]


def test_unacked_messages_are_redelivered_after_a_crash_with_their_delivery_count(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(b"a", b"b")
    sub = broker.subscribe(spec())
    sub.receive(1)
    broker.clock.advance(VISIBILITY_MS)
    sub.receive(2)  # a for the second time, b for the first
    broker.crash()
    again = broker.subscribe(spec()).receive(10)
    assert [(m.offset, m.delivery_count) for m in again] == [(0, 3), (1, 2)]


def test_a_receipt_from_before_a_crash_is_refused_after_it(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    (before,) = broker.subscribe(spec()).receive(1)
    broker.crash()
    sub = broker.subscribe(spec())
    (after,) = sub.receive(1)
    assert sub.ack([before.receipt]) == [before.receipt]
    assert sub.ack([after.receipt]) == [], "the delivery after the crash was still leased"


def test_a_nack_delay_survives_a_crash(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a")
    sub = broker.subscribe(spec())
    sub.nack(receipts(sub.receive(1)), delay_ms=30_000)
    broker.clock.advance(10_000)
    broker.crash()
    sub = broker.subscribe(spec())
    (again,) = assert_hidden_for(sub, broker.clock, 20_000)
    assert again.delivery_count == 2


def test_the_last_error_survives_a_crash(broker: Broker) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"a")
    the_spec = spec(max_deliveries=2)
    sub = broker.subscribe(the_spec, dead_letter="dlq")
    sub.nack(receipts(sub.receive(1)), error="smtp 550")
    broker.crash()
    broker.subscribe(the_spec, dead_letter="dlq").receive(1)  # the last delivery, lost next
    broker.crash()
    sub = broker.subscribe(the_spec, dead_letter="dlq")
    assert sub.receive(10) == []
    sub.tick()
    (dead,) = broker.dead_letters()
    assert dict(dead.headers)["x-roost-last-error"] == b"smtp 550"
    assert dict(dead.headers)["x-roost-delivery-count"] == b"2"


def test_a_message_whose_last_delivery_was_lost_in_a_crash_is_dead_lettered(
    broker: Broker,
) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"a")
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    sub.receive(1)
    broker.crash()
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    assert sub.receive(10) == []
    sub.tick()
    (dead,) = broker.dead_letters()
    assert dict(dead.headers)["x-roost-last-error"] == RESTART_ERROR.encode()
    assert 0 in sub.partition_state(0).acks


def test_a_dead_letter_not_yet_confirmed_at_a_crash_is_appended_again(broker: Broker) -> None:
    broker.create()
    broker.create("dlq", durability="always")
    broker.publish(b"a")
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(1)))
    broker.crash()
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    assert sub.receive(10) == []
    broker.engine.topic("dlq").log(0).flush()
    sub.tick()
    assert [r.value for r in broker.dead_letters()] == [b"a", b"a"], "twice, never zero times"
    assert sub.pending_dead_letters == []


def test_keyed_order_survives_a_crash(broker: Broker) -> None:
    broker.create()
    broker.publish(b"a1", b"a2", b"a3", key=b"A")
    sub = broker.subscribe(spec(mode="keyed"))
    sub.ack(receipts(sub.receive(10)))
    sub.receive(10)  # a2, unacked
    broker.crash()
    sub = broker.subscribe(spec(mode="keyed"))
    assert [(m.value, m.delivery_count) for m in sub.receive(10)] == [(b"a2", 2)]


def test_a_snapshot_then_more_entries_then_a_reopen_gives_the_same_state(
    broker: Broker,
) -> None:
    broker.create(partitions=2)
    broker.create("dlq")
    for p in (0, 1):
        broker.publish(*[b"m%d" % i for i in range(6)], partition=p)
    the_spec = spec(max_deliveries=3)
    sub = broker.subscribe(the_spec, dead_letter="dlq")
    first = sub.receive(6)
    sub.ack(receipts(first[:2]))
    sub.nack(receipts(first[2:4]), delay_ms=50_000, error="before")
    broker.engine.journal("sub-w").snapshot(sub.snapshot())
    second = sub.receive(4)
    sub.ack(receipts(second[1:2]))  # above a gap: kept as a range
    sub.nack(receipts([second[0], *second[2:]]), delay_ms=70_000, error="after")
    broker.clock.advance(1_000)
    sub.receive(2)  # leased at the crash
    expected = state_of(sub)
    broker.crash()
    snapshot, entries = broker.engine.journal("sub-w").recover()
    assert snapshot is not None and entries, "the reopen reads a snapshot and entries after it"
    reopened = broker.subscribe(the_spec, dead_letter="dlq")
    assert state_of(reopened) == expected


def test_a_reopened_subscription_delivers_what_the_snapshotted_one_would(
    broker: Broker,
) -> None:
    broker.create()
    broker.publish(*[b"m%d" % i for i in range(5)])
    sub = broker.subscribe(spec())
    a, b, c, _, _ = sub.receive(5)
    sub.ack([a.receipt])
    broker.engine.journal("sub-w").snapshot(sub.snapshot())
    sub.ack([c.receipt])
    sub.nack([b.receipt], delay_ms=5_000)
    broker.crash()
    sub = broker.subscribe(spec())
    assert [(m.offset, m.delivery_count) for m in sub.receive(10)] == [(3, 2), (4, 2)]
    assert [(m.offset, m.delivery_count) for m in assert_hidden_for(sub, broker.clock, 5_000)] == [
        (1, 2)
    ]


# -- retention ----------------------------------------------------------------------------------

SMALL_SEGMENTS = {"segment_max_bytes": 4096, "max_record_bytes": 2048}


def publish_one_by_one(broker: Broker, count: int) -> list[int]:
    """``count`` records of about 1 KB, one batch each, so segments roll every few records."""
    return [broker.publish(b"%04d" % i + b"x" * 1000)[0] for i in range(count)]


def test_records_deleted_by_retention_before_they_were_read_are_skipped(broker: Broker) -> None:
    topic = broker.create(**SMALL_SEGMENTS)
    sub = broker.subscribe(spec())
    published = publish_one_by_one(broker, 12)
    assert topic.delete_below(0, 6) > 0
    start = topic.start_offset(0)
    assert 0 < start <= 6
    assert offsets(sub.receive(20)) == published[start:]
    assert sub.partition_state(0).acks.floor == start


def test_records_removed_by_enforce_retention_are_skipped(broker: Broker) -> None:
    topic = broker.create(retention_bytes=0, **SMALL_SEGMENTS)
    sub = broker.subscribe(spec())
    published = publish_one_by_one(broker, 12)
    assert topic.enforce_retention() > 0
    start = topic.start_offset(0)
    assert offsets(sub.receive(20)) == published[start:]


def test_earliest_starts_at_the_log_start_after_retention(broker: Broker) -> None:
    topic = broker.create(**SMALL_SEGMENTS)
    published = publish_one_by_one(broker, 12)
    topic.delete_below(0, 6)
    start = topic.start_offset(0)
    assert offsets(broker.subscribe(spec()).receive(20)) == published[start:]


def test_records_skipped_for_retention_stay_skipped_after_a_crash(broker: Broker) -> None:
    topic = broker.create(**SMALL_SEGMENTS)
    sub = broker.subscribe(spec())
    published = publish_one_by_one(broker, 12)
    topic.delete_below(0, 6)
    start = topic.start_offset(0)
    sub.receive(20)  # from start on, none acked
    broker.crash()
    again = broker.subscribe(spec()).receive(20)
    assert [(m.offset, m.delivery_count) for m in again] == [(o, 2) for o in published[start:]]


def test_a_retried_message_deleted_by_retention_is_skipped(broker: Broker) -> None:
    topic = broker.create(**SMALL_SEGMENTS)
    sub = broker.subscribe(spec())
    published = publish_one_by_one(broker, 12)
    messages = sub.receive(20)
    sub.nack([m.receipt for m in messages if m.offset in (published[0], published[-1])])
    topic.delete_below(0, 6)
    assert offsets(sub.receive(20)) == [published[-1]]


def test_a_leased_message_deleted_by_retention_does_not_break_tick_at_its_last_delivery(
    broker: Broker,
) -> None:
    topic = broker.create(**SMALL_SEGMENTS)
    broker.create("dlq")
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    publish_one_by_one(broker, 12)
    sub.receive(1)
    topic.delete_below(0, 6)
    broker.clock.advance(VISIBILITY_MS)
    sub.tick()
    assert 0 in sub.partition_state(0).acks, "a record retention deleted counts as done"


def test_retention_after_a_crash_leaves_no_delivery_state_behind(broker: Broker) -> None:
    broker.create(**SMALL_SEGMENTS)
    sub = broker.subscribe(spec())
    publish_one_by_one(broker, 12)
    sub.receive(20)  # every offset delivered once, none acked
    broker.crash()
    broker.engine.topic("jobs").delete_below(0, 6)
    sub = broker.subscribe(spec())
    sub.ack(receipts(sub.receive(20)))
    assert sub.partition_state(0).attempts == {}


def test_a_record_too_large_for_the_dead_letter_topic_is_not_lost(broker: Broker) -> None:
    broker.create()
    broker.create("dlq")
    broker.publish(b"x" * (1024 * 1024 - 10))
    sub = broker.subscribe(spec(max_deliveries=1), dead_letter="dlq")
    sub.nack(receipts(sub.receive(1)))
    broker.clock.advance(HOUR_MS)
    sub.tick()
    assert broker.dead_letters() or sub.receive(1), "neither dead-lettered nor delivered: lost"
