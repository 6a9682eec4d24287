"""Dead letters say why (issue 15, item 9): ``x-roost-death-reason`` is ``max-deliveries`` for
a message that used up its deliveries (by nacks or by leases that ran out, also across a
restart) and ``rejected`` for one a consumer sent straight to the dead-letter topic (RabbitMQ's
reject without requeue) — embedded and over the network alike."""

from __future__ import annotations

from pathlib import Path

import pytest

import roost
from roost.client.api import REJECT_VERSION, Client
from roost.clock import ManualClock
from roost.errors import InvalidRequest, ProtocolError
from tests.embedded_support import WAYS, OlderBroker, run, run_either


async def dead_letters(broker: roost.Client, count: int) -> dict[bytes, dict[str, bytes]]:
    """The first ``count`` letters of ``jobs.dlq``, by value: their headers. A letter is
    readable once it is durable; each receive returns as soon as one is."""
    letters: dict[bytes, dict[str, bytes]] = {}
    for _ in range(count):
        if len(letters) == count:
            break
        for letter in await broker.receive("jobs.dlq", "read", max_messages=count, wait=5):
            letters[letter.message.value] = dict(letter.message.headers)
    return letters


async def reasons(broker: roost.Client) -> None:
    await broker.create_queue("jobs", max_deliveries=2)
    await broker.create_subscription("jobs.dlq", "read", start="earliest", dead_letter=None,
                                     max_deliveries=None)  # fmt: skip
    for value in (b"poison", b"flaky"):
        await broker.publish("jobs", value)

    [poison, flaky] = await broker.receive("jobs", max_messages=2)
    await poison.reject(error="cannot parse")
    await flaky.nack(delay=0, error="timeout 1")
    [flaky] = await broker.receive("jobs")
    assert flaky.message.delivery_count == 2
    await flaky.nack(delay=0, error="timeout 2")

    letters = await dead_letters(broker, 2)
    assert set(letters) == {b"poison", b"flaky"}
    assert letters[b"poison"]["x-roost-death-reason"] == b"rejected"
    assert letters[b"poison"]["x-roost-delivery-count"] == b"1"
    assert letters[b"poison"]["x-roost-last-error"] == b"cannot parse"
    assert letters[b"flaky"]["x-roost-death-reason"] == b"max-deliveries"
    assert letters[b"flaky"]["x-roost-last-error"] == b"timeout 2"
    stats = await broker.stats("jobs")
    assert (stats.depth, stats.in_flight, stats.dead_letters) == (0, 0, 2)  # type: ignore[union-attr]


async def refused_rejects_change_nothing(broker: roost.Client) -> None:
    await broker.create_queue("forever", max_deliveries=None, dead_letter=None)
    await broker.publish("forever", b"job")
    [job] = await broker.receive("forever")
    with pytest.raises(InvalidRequest, match="no dead-letter topic to reject to"):
        await job.reject()

    await broker.create_queue("jobs")
    await broker.publish("jobs", b"job")
    [job] = await broker.receive("jobs")
    with pytest.raises(InvalidRequest, match="a reject takes no delay"):
        await broker.nack("jobs", "jobs", [job.receipt], delay=5, reject=True)
    with pytest.raises(InvalidRequest, match="no reject"):
        await broker.nack("jobs", "jobs", [job.receipt], undelivered=True, reject=True)
    stats = await broker.stats("jobs")
    assert (stats.in_flight, stats.dead_letters) == (1, 0)  # type: ignore[union-attr]
    await job.ack()  # still leased: nothing changed


async def a_letter_on_its_way_is_not_ready_depth(broker: roost.Client) -> None:
    """Between the reject and its dead-letter copy being durable, the message is neither the
    queue's to deliver (peek, depth) nor gone: it counts as in flight."""
    await broker.create_queue("jobs")
    await broker.publish("jobs", b"poison")
    await broker.publish("jobs", b"fine")
    [poison] = await broker.receive("jobs")
    await poison.reject()
    stats = await broker.stats("jobs")
    assert stats.depth + stats.in_flight + stats.dead_letters == 2  # type: ignore[union-attr]
    assert stats.depth == 1, "only b'fine' is ready"  # type: ignore[union-attr]
    assert [p.message.value for p in await broker.peek("jobs")] == [b"fine"]


BODIES = [reasons, refused_rejects_change_nothing, a_letter_on_its_way_is_not_ready_depth]


@pytest.mark.parametrize("where", WAYS)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__)
def test_both_ways(body, where: str, tmp_path: Path, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    run_either(where, tmp_path, clock, body)


def test_a_lease_that_runs_out_for_the_last_time_says_max_deliveries(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.Client) -> None:
        await broker.create_queue("jobs", max_deliveries=1, visibility_timeout=10)
        await broker.create_subscription("jobs.dlq", "read", start="earliest",
                                         dead_letter=None, max_deliveries=None)  # fmt: skip
        await broker.publish("jobs", b"slow")
        [_slow] = await broker.receive("jobs")
        clock.advance(11_000)
        assert await broker.receive("jobs") == []  # the expired lease ends it
        letters = await dead_letters(broker, 1)
        assert letters[b"slow"]["x-roost-death-reason"] == b"max-deliveries"
        assert letters[b"slow"]["x-roost-last-error"] == b"lease expired"

    run(data_dir, clock, body)


def test_an_older_broker_is_never_sent_a_reject() -> None:
    import asyncio

    client = Client(OlderBroker(REJECT_VERSION - 1))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="nack\\(reject=True\\) needs a broker speaking"):
        asyncio.run(client.nack("jobs", "jobs", [], reject=True))
