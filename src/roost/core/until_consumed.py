"""Until-consumed retention: delete a partition's segments every subscription is done with.

A topic whose policy says ``retain_until_consumed`` (a queue's) keeps a segment only while
some subscription's floor is inside it. Looking at every partition each tick would cost what
exists; instead the partitions whose floor may have moved are marked (``due``: an ack, a dead
letter settled, a drop, a commit, a subscription deleted — the subscriptions' watches add to
this very set) and so are those that may have rolled a segment (``note_rolls``: a roll can
leave a wholly consumed segment behind with no ack to follow). ``tick`` looks only at those.

The floor is always the slowest of *every* subscription of the topic, and a topic with a
quarantined subscription deletes nothing: its position cannot be read (docs/durability.md).
"""

from __future__ import annotations

from roost.core.retention import Retention
from roost.core.topic_state import TopicStates
from roost.storage import LocalEngine, Topic


class UntilConsumed:
    def __init__(
        self,
        engine: LocalEngine,
        topics: TopicStates,
        retention: Retention,
        due: set[tuple[str, int]],
    ) -> None:
        self._engine = engine
        self._topics = topics
        self._retention = retention
        #: (topic, partition) to look at next tick. The same set throughout: the
        #: subscriptions' watches hold it.
        self.due = due

    def mark(self, topic: str, partitions: int) -> None:
        """Look at every partition of ``topic`` next tick (a floor may be higher now)."""
        self.due.update((topic, p) for p in range(partitions))

    def note_rolls(self, topic: Topic, partitions: list[int]) -> None:
        """A partition with sealed segments may have rolled just now, its old active segment
        wholly below a floor that will not move again until the next ack: look at it."""
        for partition in set(partitions):
            if topic.log(partition).segment_count > 1:
                self.due.add((topic.name, partition))

    def tick(self) -> set[str]:
        """Delete segments every subscription is done with, where a floor may have moved,
        on topics that ask for it; returns the topics that lost segments."""
        topics: set[str] = set()
        # A pair leaves the set once looked at; a failure puts it back, and the ones not
        # looked at yet stay.
        due = self.due
        for pair in list(due):
            due.discard(pair)
            try:
                if self._delete_consumed(*pair):
                    topics.add(pair[0])
            except BaseException:
                due.add(pair)
                raise
        return topics

    def _delete_consumed(self, name: str, partition: int) -> bool:
        state = self._topics.get(name)
        if state is None or not state.policy.retain_until_consumed:
            return False  # deleted since, or a topic that keeps what is consumed
        if state.quarantined:
            # A subscription out of service for damage has a position nobody can read: what
            # it has not consumed stays until it is restored, repaired or deleted (which
            # marks the topic due again).
            return False
        floor = state.floor(partition)
        if floor is None:
            return False
        log = self._engine.topic(name).log(partition)
        deleted = log.delete_below(floor)
        self._retention.count((name, partition), deleted)
        if log.segment_count > 1 and log.oldest_segment_end <= floor:
            # Deletable but still there: a flush holds it, or the log failed and waits for
            # its repair. Look again next tick.
            self.due.add((name, partition))
        return deleted > 0
