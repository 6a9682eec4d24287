"""Backpressure: a topic's overflow policy applied before a publish appends anything.

A topic may bound its backlog — the messages (or bytes) its slowest subscription has not
consumed — per partition (policies.py). ``make_room`` runs once per publish to a limited
topic, before any append, for every partition the publish adds to, so a refused publish
appends nothing anywhere. It asks only that topic's subscriptions (its ``TopicState``):

- ``reject`` and ``block`` raise ``BacklogFull`` (the host turns ``block`` into a wait);
- ``drop_oldest`` moves every subscription's floor up past the oldest messages, never past
  what is durable: a crash could take those records back, and the ones written at their
  offsets after it would count as dropped already.
"""

from __future__ import annotations

from roost.core.policies import TopicPolicy
from roost.core.topic_state import TopicState
from roost.errors import BacklogFull
from roost.storage import Topic


def make_room(
    topic: Topic, policy: TopicPolicy, state: TopicState | None, partitions: list[int]
) -> None:
    """Apply ``policy`` for a publish of one message to each of ``partitions`` (in order,
    repeats allowed); raises ``BacklogFull`` when it refuses."""
    if not policy.limited:
        return
    adding: dict[int, int] = {}
    for partition in partitions:
        adding[partition] = adding.get(partition, 0) + 1
    for partition, count in adding.items():
        log = topic.log(partition)
        records = log.end_offset - log.start_offset
        average = log.size_bytes / records if records else 0.0
        backlog = None if state is None else state.backlog(partition)
        excess = policy.excess(backlog or 0, count, average)
        if state is None or backlog is None or excess <= 0:
            continue
        if policy.overflow != "drop_oldest":
            raise BacklogFull(topic.name, limits(policy))
        # Drop from the slowest floor up; acked ranges above it count for nothing, so go on
        # until enough not-yet-consumed messages are gone. Each round starts past the last
        # one's end: messages being dead-lettered (``dead_letter_dropped``) hold the floor
        # until their copies are durable, yet count as consumed.
        upto = 0
        while excess > 0 and (floor := state.floor(partition)) is not None:
            start = max(floor, upto)
            if start >= log.confirmed_offset:
                break
            upto = min(start + excess, log.confirmed_offset)
            state.drop_below(partition, upto)
            excess = policy.excess(state.backlog(partition) or 0, count, average)


def limits(policy: TopicPolicy) -> str:
    """The limits ``policy`` sets, as an error names them."""
    found = []
    if policy.max_backlog_messages is not None:
        found.append(f"max_backlog_messages={policy.max_backlog_messages}")
    if policy.max_backlog_bytes is not None:
        found.append(f"max_backlog_bytes={policy.max_backlog_bytes}")
    return ", ".join(found)
