"""The Python client does what the admin API does (issue 15, item 11): ``peek`` (no lease, no
delivery counted), ``purge``, and ``create_queue(retry=...)`` — embedded and over the network
alike, and refused before anything is sent to a broker that cannot take them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import roost
from roost.client.api import PEEK_VERSION, Client
from roost.clock import ManualClock
from roost.core.retry import RetryPolicy
from roost.errors import LeaseExpired, ProtocolError, UnknownSubscription
from tests.embedded_support import WAYS, OlderBroker, run_either

#: Both ways of running a body start their broker on a clock that reads this and never moves.
NOW_MS = ManualClock().now_ms()


async def peek_sees_every_state_and_takes_nothing(broker: roost.Client) -> None:
    await broker.create_queue("jobs", visibility_timeout=30)
    await broker.publish("jobs", b"leased")
    await broker.publish("jobs", b"pending")
    await broker.publish("jobs", b"later", delay=60)
    [leased] = await broker.receive("jobs")
    assert leased.message.value == b"leased"

    peeked = await broker.peek("jobs")
    assert [(p.message.value, p.state, p.until_ms) for p in peeked] == [
        (b"leased", "leased", NOW_MS + 30_000),
        (b"pending", "pending", None),
        (b"later", "delayed", NOW_MS + 60_000),
    ]
    assert [p.message.offset for p in peeked] == [0, 1, 2]
    assert [p.message.value for p in await broker.peek("jobs", max_messages=1)] == [b"leased"]

    # Peeking twice leased nothing and counted no delivery.
    [pending] = await broker.receive("jobs")
    assert (pending.message.value, pending.message.delivery_count) == (b"pending", 1)
    stats = await broker.stats("jobs")
    assert (stats.in_flight, stats.delayed) == (2, 1)  # type: ignore[union-attr]

    with pytest.raises(UnknownSubscription):
        await broker.peek("jobs", "nobody")


async def purge_finishes_everything(broker: roost.Client) -> None:
    await broker.create_queue("jobs")
    for value in (b"a", b"b", b"c"):
        await broker.publish("jobs", value)
    await broker.publish("jobs", b"later", delay=60)
    [leased] = await broker.receive("jobs")

    assert await broker.purge("jobs") == 4
    assert await broker.peek("jobs") == []
    stats = await broker.stats("jobs")
    assert (stats.depth, stats.in_flight, stats.delayed) == (0, 0, 0)  # type: ignore[union-attr]
    with pytest.raises(LeaseExpired):  # the purged lease is refused at its ack
        await leased.ack()

    await broker.publish("jobs", b"after")
    [after] = await broker.receive("jobs")
    assert after.message.value == b"after"
    assert await broker.purge("jobs") == 1


async def a_queue_takes_its_retry_policy(broker: roost.Client) -> None:
    policy = RetryPolicy(kind="fixed", base_ms=7_000, max_ms=7_000, jitter=0.0)
    spec = await broker.create_queue("jobs", retry=policy)
    assert spec.retry == policy
    [listed] = [s for s in await broker.list_subscriptions("jobs") if s.name == "jobs"]
    assert listed.retry == policy

    await broker.publish("jobs", b"job")
    [delivery] = await broker.receive("jobs")
    await delivery.nack()  # no delay given: the queue's policy says 7 s
    [peeked] = await broker.peek("jobs")
    assert (peeked.state, peeked.until_ms) == ("delayed", NOW_MS + 7_000)

    default = await broker.create_queue("other")
    assert default.retry == RetryPolicy()


BODIES = [
    peek_sees_every_state_and_takes_nothing,
    purge_finishes_everything,
    a_queue_takes_its_retry_policy,
]


@pytest.mark.parametrize("where", WAYS)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__)
def test_both_ways(body, where: str, tmp_path: Path, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    run_either(where, tmp_path, clock, body)


def test_an_older_broker_is_never_sent_what_it_cannot_decode() -> None:
    client = Client(OlderBroker(PEEK_VERSION - 1))  # type: ignore[arg-type]

    async def main() -> None:
        for call in (
            client.peek("jobs"),
            client.purge("jobs"),
            client.create_queue("jobs", retry=RetryPolicy()),
        ):
            with pytest.raises(ProtocolError, match="needs a broker speaking protocol version 7"):
                await call

    asyncio.run(main())
