"""Delivery rate limits (core/rate_limits.py, issue 15 item 7): a token bucket on the broker's
clock per `queue`/`keyed` subscription, over all its consumers.

Pinned: the bucket against a reference model (hypothesis: in any stretch of time no more than
``burst + rate x time`` go, and what may go does); a subscription's receives on a driven clock,
its stats; that readers held back are woken when the next message may go (a long poll and a
push finish, though nothing new is published); settings refused with what they take.
"""

from __future__ import annotations

import asyncio
import copy
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import roost
from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.rate_limits import TokenBucket
from roost.errors import ConfigConflict, InvalidConfig
from roost.storage import LocalEngine


@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.integers(min_value=1, max_value=50),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3_000), st.integers(min_value=0, max_value=60)
        ),
        max_size=40,
    ),
)
def test_the_bucket_never_lets_more_go_than_its_rate_and_burst(
    rate: float, burst: int, steps: list[tuple[int, int]]
) -> None:
    bucket = TokenBucket(rate, burst, now_ms=0)
    now, went = 0, []  # (time, count) of what went
    for advance, wanted in steps:
        now += advance
        allowed = bucket.available(now)
        taken = min(wanted, allowed)
        bucket.spend(taken, now)
        went.append((now, taken))
        # Reference: what a full bucket refilled at ``rate`` allows, never more.
        for start, _ in went:
            sent = sum(n for t, n in went if start <= t <= now)
            assert sent <= burst + rate * (now - start) / 1000 + 1e-6
        wake = bucket.next_token_ms(now)
        assert wake >= now
        assert copy.copy(bucket).available(wake) >= 1, "at the time it names, one may go"
        if wake > now:
            assert copy.copy(bucket).available(wake - 1) == 0, "not a millisecond earlier"


def test_a_full_bucket_lets_a_burst_go_then_the_rate(clock: ManualClock) -> None:
    bucket = TokenBucket(10, 5, now_ms=clock.now_ms())
    assert bucket.available(clock.now_ms()) == 5
    bucket.spend(5, clock.now_ms())
    assert bucket.next_token_ms(clock.now_ms()) == clock.now_ms() + 100
    assert bucket.available(clock.now_ms() + 99) == 0
    assert bucket.available(clock.now_ms() + 100) == 1
    assert bucket.available(clock.now_ms() + 60_000) == 5, "never more than the burst"


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    return Broker.open(engine, clock)


def test_receives_are_paced_on_the_clock(broker: Broker, clock: ManualClock) -> None:
    broker.create_queue("q", durability="never", rate_limit_per_s=10, rate_burst=5)
    broker.publish("q", [Outgoing(value=b"%d" % i) for i in range(20)])
    assert len(broker.receive("q", "q", 20)) == 5, "the burst"
    assert broker.receive("q", "q", 20) == [], "then nothing until a token"
    clock.advance(100)
    assert len(broker.receive("q", "q", 20)) == 1
    clock.advance(10_000)
    assert len(broker.receive("q", "q", 20)) == 5, "a long pause refills the burst only"
    stats = broker.stats("q", "q")
    assert (stats.rate_limit_per_s, stats.throttled) == (10, 4)  # type: ignore[union-attr]
    assert stats.in_flight == 11  # type: ignore[union-attr]


def test_an_empty_queue_spends_nothing(broker: Broker, clock: ManualClock) -> None:
    broker.create_queue("q", durability="never", rate_limit_per_s=1, rate_burst=3)
    assert broker.receive("q", "q", 10) == []
    broker.publish("q", [Outgoing(value=b"%d" % i) for i in range(3)])
    assert len(broker.receive("q", "q", 10)) == 3, "the tokens waited"


def test_the_limit_is_a_setting_checked_like_the_others(broker: Broker) -> None:
    for rate, burst in ((0, None), (-1, None), (math.inf, None), (1, 0), (None, 5)):
        with pytest.raises(InvalidConfig):
            broker.create_queue("q", durability="never", rate_limit_per_s=rate, rate_burst=burst)
    with pytest.raises(InvalidConfig, match="queue and keyed"):
        SubscriptionSpec(name="s", topic="t", mode="stream", rate_limit_per_s=5)
    spec = broker.create_queue("q", durability="never", rate_limit_per_s=2.5)
    assert (spec.rate_limit_per_s, spec.rate_burst) == (2.5, None)
    assert broker.create_queue("q", durability="never", rate_limit_per_s=2.5) == spec
    with pytest.raises(ConfigConflict, match=r"rate_limit_per_s is 2\.5, not 3"):
        broker.create_queue("q", durability="never", rate_limit_per_s=3)


def test_held_back_readers_are_woken_when_the_next_may_go(tmp_path: Path) -> None:
    """Nothing is published after the first five: a long poll and a push subscriber still get
    the rest, each when the rate lets it go (a deadline the broker's tick keeps)."""

    async def body() -> None:
        async with roost.open(str(tmp_path / "data")) as broker:
            await broker.create_queue("q", durability="never", rate_limit=50, rate_burst=1)
            for n in range(5):
                await broker.publish("q", b"%d" % n)
            got = []
            async with asyncio.timeout(10):
                while len(got) < 2:  # long polls: the first at once, the next when allowed
                    for delivery in await broker.receive("q", max_messages=5, wait=5):
                        got.append(delivery.value)
                        await delivery.ack()
                async with broker.subscribe("q", prefetch=10) as deliveries:
                    async for delivery in deliveries:
                        got.append(delivery.value)
                        await delivery.ack()
                        if len(got) == 5:
                            break
            assert sorted(got) == [b"%d" % n for n in range(5)]
            stats = await broker.queue_stats("q")
            assert stats.throttled >= 1 and stats.rate_limit_per_s == 50

    asyncio.run(body())
