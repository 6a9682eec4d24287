"""What operators page on, per subscription and partition: depth, in flight, delayed, age of
the oldest message, lag, dead letters.

``depth`` counts messages not done (acked or dead-lettered) that are neither leased nor
waiting on a delay: what a consumer could take now. ``delayed`` counts the delayed messages
the subscription has read and those it has not read yet (core/unread_delays.py), so a
delayed message is never depth, before any receive and after a restart alike. ``backlog`` is
everything not done.
``oldest_age_ms`` is measured from the timestamp of the first message not done.
``dead_letters`` counts the records of the dead-letter topic, less those redriven (the broker
corrects it when a redrive subscription exists). ``describe_group`` adds to a stream's lag who
is in the group, what each member owns, and where each owner reads next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from roost.core.groups import MemberState

if TYPE_CHECKING:  # the subscriptions call these, so they are imported only for their types
    from roost.core.streams import StreamSubscription
    from roost.core.subscription import QueueSubscription


class PartitionStats(msgspec.Struct, frozen=True):
    partition: int
    end_offset: int
    ack_floor: int
    backlog: int
    in_flight: int
    delayed: int
    depth: int
    oldest_age_ms: int | None


class SubscriptionStats(msgspec.Struct, frozen=True):
    topic: str
    subscription: str
    mode: str
    backlog: int
    in_flight: int
    delayed: int
    depth: int
    oldest_age_ms: int | None
    dead_letter_topic: str | None
    dead_letters: int
    partitions: list[PartitionStats]
    #: Its delivery rate limit (messages a second), and how many receives it refused or cut
    #: short (one that took all the tokens there were counts, more may have been ready).
    rate_limit_per_s: float | None = None
    throttled: int = 0


def subscription_stats(sub: QueueSubscription, now_ms: int) -> SubscriptionStats:
    partitions = [_partition(sub, p, now_ms) for p in range(len(sub.topic.partitions))]
    ages = [p.oldest_age_ms for p in partitions if p.oldest_age_ms is not None]
    dead_letter = sub.dead_letter
    return SubscriptionStats(
        sub.spec.topic,
        sub.spec.name,
        sub.spec.mode,
        sum(p.backlog for p in partitions),
        sum(p.in_flight for p in partitions),
        sum(p.delayed for p in partitions),
        sum(p.depth for p in partitions),
        max(ages) if ages else None,
        dead_letter.name if dead_letter is not None else None,
        sum(log.confirmed_offset - log.start_offset for log in dead_letter.partitions)
        if dead_letter is not None
        else 0,
        partitions,
        rate_limit_per_s=sub.spec.rate_limit_per_s,
        throttled=sub.throttled,
    )


def _partition(sub: QueueSubscription, partition: int, now_ms: int) -> PartitionStats:
    state = sub.partition_state(partition)
    log = sub.topic.log(partition)
    end = log.end_offset
    floor = max(state.acks.floor, log.start_offset)
    backlog = (end - floor) - state.acks.done_between(floor, end)
    delayed = state.delayed + sub.unread_delayed(partition, now_ms)
    # On their way to the dead-letter topic: in flight there, never ready depth here.
    in_flight = state.in_flight + len(sub.dead_lettering(partition))
    oldest = None
    if backlog and floor < end and not log.quarantined:
        first = log.read(floor, max_records=1)
        if first:
            oldest = max(0, now_ms - first[0].timestamp_ms)
    return PartitionStats(
        partition,
        end,
        state.acks.floor,
        backlog,
        in_flight,
        delayed,
        max(0, backlog - in_flight - delayed),
        oldest,
    )


class StreamPartitionStats(msgspec.Struct, frozen=True):
    partition: int
    end_offset: int
    committed: int
    lag: int
    owner: str | None


class StreamStats(msgspec.Struct, frozen=True):
    topic: str
    subscription: str
    mode: str
    members: list[str]
    generation: int
    lag: int
    partitions: list[StreamPartitionStats]


def stream_stats(stream: StreamSubscription) -> StreamStats:
    lag = stream.lag()
    partitions = [
        StreamPartitionStats(p, log.end_offset, stream.committed[p], lag[p], stream.group.owner(p))
        for p, log in enumerate(stream.topic.partitions)
    ]
    return StreamStats(
        stream.spec.topic,
        stream.spec.name,
        "stream",
        stream.group.members(),
        stream.group.generation,
        sum(lag.values()),
        partitions,
    )


class GroupPartition(msgspec.Struct, frozen=True):
    partition: int
    start_offset: int
    end_offset: int
    committed: int
    lag: int
    #: The member that owns the partition; None while the group has no members.
    owner: str | None
    #: Where the owner reads next (its fetch position, else the commit); None without owner.
    position: int | None


class GroupDescription(msgspec.Struct, frozen=True):
    """A consumer group (a `stream` subscription) as an operator looks at it."""

    topic: str
    group: str
    generation: int
    lag: int
    members: list[MemberState]
    partitions: list[GroupPartition]


def describe_group(stream: StreamSubscription) -> GroupDescription:
    lag = stream.lag()
    partitions = []
    for p, log in enumerate(stream.topic.partitions):
        owner = stream.group.owner(p)
        position = stream.position(owner, p) if owner is not None else None
        partitions.append(
            GroupPartition(
                p, log.start_offset, log.end_offset, stream.committed[p], lag[p], owner, position
            )
        )
    return GroupDescription(
        stream.spec.topic,
        stream.spec.name,
        stream.group.generation,
        sum(lag.values()),
        stream.group.member_states(),
        partitions,
    )
