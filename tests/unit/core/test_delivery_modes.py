"""The core's structure: one subscription protocol for every mode, state kept per topic."""

from __future__ import annotations

from typing import get_args

import pytest

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.delivery_modes import OPENERS
from roost.core.model import Mode, SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing
from roost.errors import BacklogFull, InvalidRequest
from roost.storage import LocalEngine, TopicConfig

NEVER = TopicConfig(durability="never")


@pytest.fixture
def broker(engine: LocalEngine, clock: ManualClock) -> Broker:
    return Broker.open(engine, clock)


def subscribe(broker: Broker, topic: str, name: str, mode: Mode = "queue") -> None:
    broker.create_subscription(
        SubscriptionSpec(name=name, topic=topic, mode=mode, start="earliest", max_deliveries=None)
    )


def fill(broker: Broker, topic: str, count: int) -> None:
    broker.publish(topic, [Outgoing(value=b"%d" % i, key=b"k%d" % i) for i in range(count)])


def test_every_mode_has_an_opener() -> None:
    assert set(OPENERS) == set(get_args(Mode))


def test_every_mode_is_one_subscription_to_the_broker(broker: Broker) -> None:
    broker.create_topic("t", NEVER)
    for mode in get_args(Mode):
        subscribe(broker, "t", mode, mode)
    assert sorted(s.spec.mode for s in broker.subscriptions()) == ["keyed", "queue", "stream"]
    assert [s.name for s in broker.list_subscriptions("t")] == ["keyed", "queue", "stream"]
    fill(broker, "t", 3)
    # Operator commands take any mode, without asking which it is first.
    assert [len(broker.peek("t", name)) for name in ("keyed", "queue", "stream")] == [3, 3, 3]
    assert [broker.purge("t", name) for name in ("keyed", "queue", "stream")] == [3, 3, 3]
    assert broker.backlog("t", 0) == 0


def test_a_command_for_another_mode_names_the_mode(broker: Broker) -> None:
    broker.create_topic("t", NEVER)
    subscribe(broker, "t", "q", "keyed")
    subscribe(broker, "t", "s", "stream")
    with pytest.raises(InvalidRequest, match="'t'/'s' is a stream: fetch and commit instead"):
        broker.receive("t", "s")
    with pytest.raises(InvalidRequest, match="'t'/'q' is a keyed subscription: receive it"):
        broker.stream("t", "q")


def test_the_floor_is_the_slowest_of_every_mode_on_that_topic_only(broker: Broker) -> None:
    broker.create_topic("t", NEVER)
    broker.create_topic("other", NEVER)
    subscribe(broker, "t", "q")
    subscribe(broker, "t", "s", "stream")
    subscribe(broker, "other", "behind")
    fill(broker, "t", 5)
    fill(broker, "other", 5)
    broker.ack("t", "q", [m.receipt for m in broker.receive("t", "q", 3)])
    stream = broker.stream("t", "s")
    member = stream.join()
    stream.commit(member.member_id, member.generation, {0: 1})
    assert (broker.floor("t", 0), broker.backlog("t", 0)) == (1, 4), "the stream is slowest"
    stream.commit(member.member_id, member.generation, {0: 5})
    assert (broker.floor("t", 0), broker.backlog("t", 0)) == (3, 2), "now the queue is"
    assert (broker.floor("other", 0), broker.backlog("other", 0)) == (0, 5)


def test_a_backlog_limit_counts_its_own_topics_subscriptions(broker: Broker) -> None:
    """A subscription far behind on another topic does not fill a limited one."""
    broker.create_topic("busy", NEVER)
    subscribe(broker, "busy", "behind")
    fill(broker, "busy", 50)
    broker.create_topic("limited", NEVER, TopicPolicy(max_backlog_messages=3))
    subscribe(broker, "limited", "s", "stream")
    fill(broker, "limited", 3)
    with pytest.raises(BacklogFull):
        fill(broker, "limited", 1)
    broker.purge("limited", "s")
    fill(broker, "limited", 3)
    assert broker.backlog("busy", 0) == 50


def test_deleting_a_topic_forgets_its_state(broker: Broker) -> None:
    broker.create_topic("t", NEVER, TopicPolicy(max_backlog_messages=1))
    subscribe(broker, "t", "q")
    broker.delete_topic("t")
    assert broker.subscriptions() == []
    assert broker.topics_with_subscriptions() == set()
    broker.create_topic("t", NEVER)  # made again: no limit and no subscription left over
    fill(broker, "t", 5)
    assert broker.floor("t", 0) is None
    assert broker.policy("t") == TopicPolicy()


def test_a_dead_letter_topic_goes_only_after_the_subscriptions_that_use_it(
    broker: Broker,
) -> None:
    broker.create_queue("jobs", dead_letter="shared.dlq")
    broker.create_topic("t", NEVER)
    broker.create_subscription(
        SubscriptionSpec(name="s", topic="t", dead_letter="shared.dlq", max_deliveries=3)
    )
    with pytest.raises(InvalidRequest, match=r"dead-letter topic of jobs/jobs, t/s: delete"):
        broker.delete_topic("shared.dlq")
    broker.delete_queue("jobs")
    with pytest.raises(InvalidRequest, match=r"dead-letter topic of t/s: delete"):
        broker.delete_topic("shared.dlq")
    broker.delete_subscription("t", "s")
    broker.delete_topic("shared.dlq")
    assert "shared.dlq" not in broker.list_topics()
