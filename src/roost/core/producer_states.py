"""Every topic's producer state (idempotent sequences, dedup ids), opened on first use.

    producers = states.of(topic)         # ProducerStateQuarantined once found damaged
    states.log_cut("emails", 0, 1200)    # a repair cut the log: forget what was placed there

A topic has producer state once an idempotent or deduplicated publish needed it (or it had
some at open, where it is read at once so that damage is reported at start, not at a
producer's retry). Damage — a journal or snapshot that fails its CRC, or intact bytes that
are no state entry — puts that topic's producer state out of service
(``ProducerStateQuarantined``): idempotent and deduplicated publishes to it are refused, plain
ones and every other topic serve. Kept apart from ``TopicState``: the host snapshots producer
state by walking only the topics that have any (``all``).
"""

from __future__ import annotations

from roost.clock import Clock
from roost.core.catalog import Catalog
from roost.core.publishing import TopicProducers
from roost.core.state_codec import CorruptState
from roost.core.topic_state import TopicStates
from roost.errors import PartitionQuarantined, ProducerStateQuarantined
from roost.storage import LocalEngine, Topic


class ProducerStates:
    def __init__(
        self, engine: LocalEngine, clock: Clock, catalog: Catalog, topics: TopicStates
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._catalog = catalog
        self._topics = topics
        self._producers: dict[str, TopicProducers] = {}
        #: Topics whose producer state is damaged, with the damage.
        self._damaged: dict[str, str] = {}

    def of(self, topic: Topic) -> TopicProducers:
        """The topic's producer state, opened on first use; ``ProducerStateQuarantined`` once
        its journal or snapshot was found damaged (at open, or later by the scrub)."""
        producers = self._producers.get(topic.name)
        if producers is not None and not producers.journal.log.quarantined:
            return producers
        if producers is not None:
            self._damaged[topic.name] = producers.journal.log.quarantined
        damage = self._damaged.get(topic.name)
        if damage is not None:
            raise ProducerStateQuarantined(topic.name, damage)
        journal = self._engine.journal(
            self._catalog.producer_journal(topic.name), f"producer state of topic {topic.name}"
        )
        window_ms = self._topics.policy(topic.name).dedup_window_ms
        try:
            producers = TopicProducers.open(topic, journal, self._clock, window_ms)
        except (PartitionQuarantined, CorruptState) as e:
            damage = e.damage if isinstance(e, PartitionQuarantined) else str(e)
            self._damaged[topic.name] = damage
            raise ProducerStateQuarantined(topic.name, damage) from e
        self._producers[topic.name] = producers
        return producers

    def is_damaged(self, topic: str) -> bool:
        return topic in self._damaged

    def quarantined(self) -> dict[str, str]:
        """Topic -> the damage, for each topic whose producer state is out of service."""
        damaged = dict(self._damaged)
        for name, producers in self._producers.items():
            if producers.journal.log.quarantined:
                damaged[name] = producers.journal.log.quarantined
        return damaged

    def all(self) -> list[TopicProducers]:
        """Every topic's producer state in use (for the host's snapshots)."""
        return list(self._producers.values())

    def log_cut(self, topic: str, partition: int, end_offset: int) -> TopicProducers | None:
        """A repair cut ``topic``'s ``partition`` back to ``end_offset``: forget the producer
        sequences and dedup ids placed there; returns the state to snapshot."""
        producers = self._producers.get(topic)
        if producers is not None:
            producers.state.truncate(partition, end_offset)
        return producers

    def forget(self, topic: str) -> None:
        """The topic is deleted: drop its producer state and its journal."""
        damaged = self._damaged.pop(topic, None)
        if self._producers.pop(topic, None) is not None or damaged is not None:
            journal = self._catalog.forget_topic(topic)
            if journal:
                self._engine.drop_journal(journal)
