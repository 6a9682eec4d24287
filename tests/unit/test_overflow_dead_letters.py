"""Dead letters say why (issue 15, item 9), ``overflow``: a topic whose ``drop_oldest``
overflow says ``dead_letter_dropped`` copies each message it drops to the dead-letter topic of
each subscription, as RabbitMQ's drop-head does with a dead-letter exchange; without the
setting a drop leaves nothing behind, as before."""

from __future__ import annotations

from pathlib import Path

import pytest

import roost
from roost.clock import ManualClock
from roost.core.stats import SubscriptionStats
from roost.errors import InvalidConfig
from tests.embedded_support import WAYS, run, run_either
from tests.unit.test_message_ttl import letters


async def dropping(broker: roost.Client) -> None:
    await broker.create_queue(
        "jobs", max_backlog=2, overflow="drop_oldest", dead_letter_dropped=True
    )
    await broker.create_subscription("jobs.dlq", "read", start="earliest", dead_letter=None,
                                     max_deliveries=None)  # fmt: skip
    await broker.publish("jobs", b"1")
    [one] = await broker.receive("jobs")  # leased: dropped all the same, its count kept
    for value in (b"2", b"3", b"4"):
        await broker.publish("jobs", value)

    found = await letters(broker, 2)
    assert set(found) == {b"1", b"2"}
    assert {h["x-roost-death-reason"] for h in found.values()} == {b"overflow"}
    assert found[b"1"]["x-roost-delivery-count"] == b"1"
    assert found[b"2"]["x-roost-delivery-count"] == b"0"
    assert found[b"2"]["x-roost-source-offset"] == b"1"
    assert [m.message.value for m in await broker.receive("jobs", max_messages=5)] == [b"3", b"4"]
    assert await broker.ack("jobs", "jobs", [one.receipt]) == [one.receipt], "it was dropped"


async def dropping_without_the_setting(broker: roost.Client) -> None:
    await broker.create_queue("jobs", max_backlog=2, overflow="drop_oldest")
    for value in (b"1", b"2", b"3"):
        await broker.publish("jobs", value)
    stats = await broker.stats("jobs")
    assert isinstance(stats, SubscriptionStats)
    assert (stats.backlog, stats.dead_letters) == (2, 0)


async def refused(broker: roost.Client) -> None:
    with pytest.raises(InvalidConfig, match="only with overflow='drop_oldest'"):
        await broker.create_queue("jobs", max_backlog=2, dead_letter_dropped=True)
    with pytest.raises(InvalidConfig, match="only with overflow='drop_oldest'"):
        await broker.create_topic("t", max_backlog=2, overflow="block", dead_letter_dropped=True)
    assert await broker.list_topics() == []


BODIES = [dropping, dropping_without_the_setting, refused]


@pytest.mark.parametrize("where", WAYS)
@pytest.mark.parametrize("body", BODIES, ids=lambda b: b.__name__)
def test_both_ways(body, where: str, tmp_path: Path, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    run_either(where, tmp_path, clock, body)


def test_the_setting_and_the_letters_survive_a_restart(data_dir: str, clock: ManualClock) -> None:
    async def before(broker: roost.Client) -> None:
        await broker.create_queue(
            "jobs", max_backlog=1, overflow="drop_oldest", dead_letter_dropped=True
        )
        await broker.publish("jobs", b"1")
        await broker.publish("jobs", b"2")

    async def after(broker: roost.Client) -> None:
        await broker.publish("jobs", b"3")
        await broker.create_subscription("jobs.dlq", "read", start="earliest",
                                         dead_letter=None, max_deliveries=None)  # fmt: skip
        found = await letters(broker, 2)
        assert set(found) == {b"1", b"2"}
        assert [m.message.value for m in await broker.receive("jobs")] == [b"3"]

    run(data_dir, clock, before)
    run(data_dir, clock, after)
