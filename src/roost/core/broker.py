"""The broker's core: topics, queues, subscriptions and exchanges over one storage engine.

Synchronous, single-threaded, and never waits: every command runs to completion and returns
values. Two of them tell the caller (the asyncio host) what to wait for:

- ``publish`` returns, with the offsets, the ``(log, next_offset)`` pairs that must become
  durable before the publish may be confirmed (only for ``always`` topics);
- ``tick`` returns the next time (ms) something is due — a lease expiry or a delay ending —
  and the dead-letter appends whose durability would let a subscription finish a message.

A tick costs what is due, not what exists (docs/design.md, "The tick"): it visits only the
subscriptions whose deadline has come (core/timers.py), and deletes consumed segments only of
the partitions whose floor may have moved since the last tick (``_retention_due``).

    broker = Broker.open(engine, clock)
    broker.create_queue("emails", dead_letter="emails.dlq")
    outcome = broker.publish("emails", [Outgoing(value=b"hi")])
    [message] = broker.receive("emails", "emails", max_messages=1)
    broker.ack("emails", "emails", [message.receipt])
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec

from roost.clock import Clock
from roost.core.catalog import Catalog
from roost.core.inspection import Peeked, peek_queue, peek_stream, peek_topic, read_log
from roost.core.model import DEFAULT_MAX_DELIVERIES, Message, SubscriptionSpec
from roost.core.policies import DEFAULT_POLICY, QUEUE_POLICY, TopicPolicy
from roost.core.publishing import (
    Outgoing,
    Published,
    Publisher,
    PublishOutcome,
    TopicProducers,
    deliver_at,
)
from roost.core.redrive import (
    HOLD_MS,
    REDRIVE_SUBSCRIPTION,
    RedriveBatch,
    RedriveFilter,
    original_headers,
    redrive_spec,
    source_of,
)
from roost.core.retention import Retention
from roost.core.retry import DEFAULT_RETRY, RetryPolicy
from roost.core.routing import MAX_KEY_BYTES, BindingSpec, ExchangeSpec, Router
from roost.core.state_codec import CorruptState
from roost.core.stats import (
    GroupDescription,
    StreamStats,
    SubscriptionStats,
    describe_group,
    stream_stats,
    subscription_stats,
)
from roost.core.streams import ResetTarget, StreamSubscription
from roost.core.subscription import PendingDeadLetter, QueueSubscription
from roost.core.timers import Timers
from roost.errors import (
    BacklogFull,
    InvalidConfig,
    InvalidRequest,
    PartitionQuarantined,
    ProducerStateQuarantined,
    RoostError,
    StorageFailure,
    SubscriptionExists,
    SubscriptionQuarantined,
    TopicExists,
    UnknownSubscription,
    UnknownTopic,
    error_from,
)
from roost.receipt import Receipt
from roost.storage import LocalEngine, Topic, TopicConfig, TopicInfo
from roost.storage.log import PartitionLog

logger = logging.getLogger("roost.broker")


class Tick(NamedTuple):
    next_deadline_ms: int | None
    pending_dead_letters: list[PendingDeadLetter]
    #: Topics whose subscriptions this tick visited or whose segments it deleted: long polls
    #: may find messages there now, blocked publishers room.
    topics: set[str]


class Broker:
    def __init__(self, engine: LocalEngine, clock: Clock, catalog: Catalog, router: Router) -> None:
        self.engine = engine
        self.clock = clock
        self._catalog = catalog
        self._router = router
        self._subscriptions: dict[tuple[str, str], QueueSubscription] = {}
        self._producers: dict[str, TopicProducers] = {}
        self._publisher = Publisher(clock, self._topic_producers)
        self._streams: dict[tuple[str, str], StreamSubscription] = {}
        self._policies: dict[str, TopicPolicy] = catalog.policies()
        #: Subscriptions whose state journal or snapshot is damaged, with the damage: out of
        #: service (``SubscriptionQuarantined``) while the topic and the others serve.
        self._quarantined: dict[tuple[str, str], str] = {}
        #: Topics whose producer state is damaged, with the damage (``ProducerStateQuarantined``).
        self._damaged_producers: dict[str, str] = {}
        #: Topic -> subscription name -> subscription: whatever asks about one topic's
        #: subscriptions (floors, backlogs, drops) costs that topic's, not the broker's.
        self._queues_by_topic: dict[str, dict[str, QueueSubscription]] = {}
        self._streams_by_topic: dict[str, dict[str, StreamSubscription]] = {}
        #: When each subscription next has something due; the tick visits only those.
        self._timers: Timers[tuple[str, str]] = Timers()
        #: The subscription the tick is visiting: its own reports wait for its ``tick()``'s
        #: answer, which counts them all.
        self._visiting: tuple[str, str] | None = None
        #: (topic, partition) whose until-consumed floor may have moved, or which rolled a
        #: segment, since the last tick: the only ones retention looks at.
        self._retention_due: set[tuple[str, int]] = set()
        #: Time and size retention: deadlines per partition, applied by the tick and on a
        #: segment roll (core/retention.py).
        self._retention = Retention(clock)
        #: Subscriptions that said their journal is due a snapshot (``journals_due``).
        self._snapshots_due: set[tuple[str, str]] = set()
        #: Set to a Counter, it counts the tick's visits per subscription (tests; off by
        #: default, so that production keeps nothing per subscription for it).
        self.visits: Counter[tuple[str, str]] | None = None

    @classmethod
    def open(cls, engine: LocalEngine, clock: Clock) -> Broker:
        """Load every definition from the engine's metadata and resume every subscription."""
        catalog = Catalog(engine.metadata)
        router = Router.from_specs(catalog.exchanges(), catalog.bindings())
        broker = cls(engine, clock, catalog, router)
        broker._drop_dangling_bindings()
        for spec in catalog.subscriptions():
            broker._open_subscription(spec)
        for topic in catalog.topics_with_producer_state():
            # Read now, so damage is reported at start rather than at a producer's retry.
            with contextlib.suppress(ProducerStateQuarantined):
                broker._topic_producers(broker.engine.topic(topic))
        broker.continue_past_seen()
        for name in engine.list_topics():
            broker._retention.watch(engine.topic(name))  # what expired while we were down
        read = broker.topics_with_subscriptions()
        for name, policy in broker._policies.items():
            if policy.retain_until_consumed and name in read:
                partitions = len(broker.engine.topic(name).partitions)
                broker._retention_due.update((name, p) for p in range(partitions))
        return broker

    def continue_past_seen(self, only: str | None = None) -> None:
        """Where a log ends below an offset a subscription or group has seen (recovery cut
        it, or a power failure took an unsynced suffix while acks were journaled), move its
        end past that offset with a gap batch, before anything is published.

        Reusing those offsets would hand new records to journal state meant for the lost
        ones: a queue that counts them as acked never delivers them, a group that committed
        past them skips them. Blocking (journal and log fsyncs): at open, and (``only`` a
        topic) after one of its logs is reopened by a repair.
        """
        seen: dict[tuple[str, int], list[tuple[int, str]]] = {}
        for (topic_name, name), queue in self._subscriptions.items():  # at open or a repair
            for partition, end in enumerate(queue.seen_ends()):
                seen.setdefault((topic_name, partition), []).append((end, name))
        for (topic_name, name), stream in self._streams.items():
            for partition, end in stream.committed.items():
                seen.setdefault((topic_name, partition), []).append((end, name))
        for (name, partition), ends in sorted(seen.items()):
            if only is not None and name != only:
                continue
            topic = self.engine.topic(name)
            log = topic.log(partition)
            start = log.end_offset
            high = max(end for end, _ in ends)
            if high <= start or log.quarantined:
                # A quarantined log takes no write (its end may be short of the damage only);
                # once repaired, the next open skips what it must.
                continue
            who = sorted({subscription for end, subscription in ends if end > start})
            try:
                with contextlib.suppress(ProducerStateQuarantined):
                    # Damaged, it refuses idempotent and deduplicated publishes anyway; the
                    # gap still goes in, or plain publishes would reuse the offsets.
                    self._topic_producers(topic)  # forgets the lost records' placements, durably
                if name in self._damaged_producers:
                    log.recovery.problems.append(
                        f"offsets {start}..{high - 1} skipped while the producer state of topic "
                        f"{name} is quarantined: repair it by removing its journal (`roost "
                        "check` names it), not by cutting it, or a retry of a batch placed "
                        "there could be told it is stored"
                    )
                for queue in self._queues_of(name):
                    queue.skip(partition, start, high)
                log.skip_to(high)
            except (StorageFailure, PartitionQuarantined) as e:
                # The log (or a journal) refuses writes: so do publishes to it, until it is
                # repaired and the broker opened again, which tries this again.
                log.recovery.problems.append(
                    f"offsets {start}..{high - 1} must be skipped ({', '.join(who)} had seen "
                    f"them) but writing the gap failed: {e}"
                )
                continue
            log.recovery.offsets_skipped += high - start
            log.recovery.problems.append(
                f"offsets {start}..{high - 1} skipped (a gap batch): the log ended at {start} "
                f"but {', '.join(who)} had seen offsets up to {high - 1}; new "
                f"records start at {high}"
            )

    # -- topics ---------------------------------------------------------------------------

    def create_topic(
        self, name: str, config: TopicConfig | None = None, policy: TopicPolicy | None = None
    ) -> TopicInfo:
        """A topic of partition logs; ``policy`` bounds its backlog (see policies.py).

        One metadata transaction (joined to the caller's, if one is open)."""
        with self.engine.metadata.transaction() as txn:
            info = self.engine.create_topic(name, config).describe()
            if policy is not None and policy != DEFAULT_POLICY:
                self._catalog.save_policy(name, policy)
                self._policies[name] = policy
                txn.on_abort(lambda: self._policies.pop(name, None))
        return info

    def policy(self, topic: str) -> TopicPolicy:
        self.engine.topic(topic)
        return self._policies.get(topic, DEFAULT_POLICY)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and every subscription on it. A topic that another topic's
        subscription dead-letters into cannot go before that subscription."""
        self.engine.topic(name)
        users = [
            f"{sub.spec.topic}/{sub.spec.name}"
            for sub in self._subscriptions.values()
            if sub.spec.dead_letter == name and sub.spec.topic != name
        ]
        if users:
            raise InvalidRequest(
                f"topic {name!r} is the dead-letter topic of {', '.join(users)}: delete or "
                "change those subscriptions first"
            )
        names = [*self._queues_by_topic.get(name, ()), *self._streams_by_topic.get(name, ())]
        names += [subscription for topic, subscription in self._quarantined if topic == name]
        for subscription in names:
            self.delete_subscription(name, subscription)
        partitions = len(self.engine.topic(name).partitions)
        with self.engine.metadata.transaction() as txn:
            # One commit: the topic never goes while an exchange still routes to it.
            dropped = self._unbind_topic(name)
            txn.on_abort(lambda: [self._router.bind(binding) for binding in dropped])
            self.engine.delete_topic(name)
        self._retention.forget(name, partitions)
        damaged = self._damaged_producers.pop(name, None)
        if self._producers.pop(name, None) is not None or damaged is not None:
            journal = self._catalog.forget_topic(name)
            if journal:
                self.engine.drop_journal(journal)
        if self._policies.pop(name, None) is not None:
            self._catalog.remove_policy(name)

    def _unbind_topic(self, name: str) -> list[BindingSpec]:
        """Remove the bindings to topic ``name`` from the router and the catalog (in the open
        transaction, if any); returns them."""
        dropped = self._router.drop_topic(name)
        for exchange in sorted({binding.exchange for binding in dropped}):
            self._catalog.save_bindings(exchange, self._router.bindings(exchange))
        return dropped

    def _drop_dangling_bindings(self) -> None:
        """At open: a topic deleted before its bindings went with it (older versions left
        them) made its exchanges fail every publish with ``UnknownTopic``; drop them."""
        gone = {b.topic for b in self._router.bindings() if not self.engine.has_topic(b.topic)}
        if not gone:
            return
        try:
            with self.engine.metadata.transaction():
                for topic in sorted(gone):
                    for binding in self._unbind_topic(topic):
                        logger.warning(
                            "exchange %r: dropped its binding to topic %r, which no longer "
                            "exists", binding.exchange, topic,
                        )  # fmt: skip
        except StorageFailure as e:
            # Gone from the router all the same (they route nowhere); the next start stores it.
            logger.warning("could not store the dropped bindings (%s); dropped until restart", e)

    def list_topics(self) -> list[str]:
        return self.engine.list_topics()

    def describe_topic(self, name: str) -> TopicInfo:
        return self.engine.describe_topic(name)

    # -- subscriptions and queues ---------------------------------------------------------

    def create_subscription(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        """Start reading ``spec.topic`` as ``spec.name``; the dead-letter topic must exist."""
        self.engine.topic(spec.topic)
        if spec.dead_letter is not None:
            self.engine.topic(spec.dead_letter)
        elif spec.mode != "stream" and spec.max_deliveries is not None:
            raise InvalidConfig(
                "dead_letter", None,
                f"max_deliveries={spec.max_deliveries} needs a dead-letter topic; to retry a "
                "failing message forever, say max_deliveries=None",
            )  # fmt: skip
        with self.engine.metadata.transaction():
            stored = self._define_subscription(spec)
        self._open_subscription(stored)
        return stored

    def _define_subscription(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        """Put ``spec`` in the open metadata transaction and make its journal (undone if the
        transaction does not commit); ``_open_subscription`` serves it once committed."""
        key = (spec.topic, spec.name)
        if key in self._subscriptions or key in self._streams or key in self._quarantined:
            raise SubscriptionExists(spec.topic, spec.name)
        stored = self._catalog.add_subscription(spec)
        self.engine.journal(stored.journal, f"subscription {spec.topic}/{spec.name}", new=True)
        return stored

    def create_queue(
        self,
        name: str,
        *,
        fifo: bool = False,
        partitions: int = 1,
        visibility_timeout_ms: int = 30_000,
        max_deliveries: int | None = DEFAULT_MAX_DELIVERIES,
        dead_letter: str | None = "",
        delay_ms: int = 0,
        durability: str = "always",
        policy: TopicPolicy = QUEUE_POLICY,
        retention_ms: int | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> SubscriptionSpec:
        """A topic and one subscription of the same name: the SQS or RabbitMQ queue.

        ``fifo`` makes it `keyed` (per key in order, one in flight per key). The dead-letter
        topic defaults to ``<name>.dlq`` (made if missing); ``dead_letter=None`` with
        ``max_deliveries=None`` retries a failing message forever, deliberately.
        """
        if dead_letter is None and max_deliveries is not None:
            raise InvalidConfig(
                "dead_letter", None,
                "a queue without a dead-letter topic needs max_deliveries=None (retry forever)",
            )  # fmt: skip
        dead_letter_topic = f"{name}.dlq" if dead_letter == "" else dead_letter
        # Everything is checked before anything is made: a refused queue leaves nothing behind.
        try:
            config = msgspec.convert(
                {"partitions": partitions, "durability": durability, "retention_ms": retention_ms},
                TopicConfig,
            )
        except msgspec.ValidationError as e:
            raise InvalidConfig("queue", name, str(e)) from None
        spec = SubscriptionSpec(
            name=name,
            topic=name,
            mode="keyed" if fifo else "queue",
            start="earliest",
            visibility_timeout_ms=visibility_timeout_ms,
            max_deliveries=max_deliveries,
            dead_letter=dead_letter_topic,
            delay_ms=delay_ms,
            retry=retry,
        )
        if self.engine.has_topic(name):
            raise TopicExists(name)
        # One metadata transaction, so one durable write: the queue is wholly there after a
        # crash or wholly absent. No file is made: each log makes its own on its first write.
        with self.engine.metadata.transaction():
            self.create_topic(name, config, policy)
            if dead_letter_topic is not None and not self.engine.has_topic(dead_letter_topic):
                dead_letters = TopicConfig(durability=config.durability)
                self.engine.create_topic(dead_letter_topic, dead_letters)
            stored = self._define_subscription(spec)
        self._open_subscription(stored)
        return stored

    def delete_queue(self, name: str) -> None:
        """Delete a queue's topic (and so its subscription); its dead-letter topic stays."""
        self._subscription(name, name)
        self.delete_topic(name)

    def delete_subscription(self, topic: str, name: str) -> None:
        """Delete a subscription; a quarantined one too (an operator's way out of damage)."""
        if (topic, name) not in self._streams and (topic, name) not in self._quarantined:
            self._subscription(topic, name)
        self._quarantined.pop((topic, name), None)
        journal = self._catalog.remove_subscription(topic, name)
        if journal:
            self.engine.drop_journal(journal)
        self._subscriptions.pop((topic, name), None)
        self._streams.pop((topic, name), None)
        for index in (self._queues_by_topic, self._streams_by_topic):
            named = index.get(topic)
            if named is not None and named.pop(name, None) is not None and not named:
                del index[topic]
        self._timers.cancel((topic, name))
        with contextlib.suppress(UnknownTopic):
            # The floor was the slowest subscription's: without this one it may be higher.
            partitions = len(self.engine.topic(topic).partitions)
            self._retention_due.update((topic, p) for p in range(partitions))

    def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionSpec]:
        if topic is None:
            specs = [sub.spec for sub in self._subscriptions.values()]
            specs += [stream.spec for stream in self._streams.values()]
        else:
            specs = [sub.spec for sub in self._queues_of(topic)]
            specs += [stream.spec for stream in self._streams_of(topic)]
        return sorted(specs, key=lambda s: (s.topic, s.name))

    def topics_with_subscriptions(self) -> set[str]:
        return {*self._queues_by_topic, *self._streams_by_topic}

    def _queues_of(self, topic: str) -> list[QueueSubscription]:
        return list(self._queues_by_topic.get(topic, {}).values())

    def _streams_of(self, topic: str) -> list[StreamSubscription]:
        return list(self._streams_by_topic.get(topic, {}).values())

    def _open_subscription(self, spec: SubscriptionSpec) -> None:
        journal = self.engine.journal(spec.journal, f"subscription {spec.topic}/{spec.name}")
        try:
            key = (spec.topic, spec.name)
            if spec.mode == "stream":
                stream = StreamSubscription.open(
                    spec, self.engine.topic(spec.topic), journal, self.clock
                )
                stream.watch(
                    self._floor_watch(spec.topic),
                    self._deadline_watch(key),
                    self._snapshot_watch(key),
                )
                self._streams[key] = stream
                self._streams_by_topic.setdefault(spec.topic, {})[spec.name] = stream
            else:
                dead_letter = self.engine.topic(spec.dead_letter) if spec.dead_letter else None
                queue = QueueSubscription.open(
                    spec, self.engine.topic(spec.topic), journal, self.clock, dead_letter
                )
                queue.watch(
                    self._floor_watch(spec.topic),
                    self._deadline_watch(key),
                    self._snapshot_watch(key),
                )
                self._subscriptions[key] = queue
                self._queues_by_topic.setdefault(spec.topic, {})[spec.name] = queue
            # What it restored (retries due, a dead letter to finish) is looked at once.
            self._timers.schedule(key, self.clock.now_ms())
        except PartitionQuarantined as e:
            # Its journal is damaged: this subscription is out of service, nothing else is.
            self._quarantined[(spec.topic, spec.name)] = e.damage
        except CorruptState as e:
            # Intact bytes (the CRCs hold) that are no state entry: as out of service.
            self._quarantined[(spec.topic, spec.name)] = str(e)

    def _floor_watch(self, topic: str) -> Callable[[int], None]:
        due = self._retention_due

        def floor_may_have_moved(partition: int) -> None:
            due.add((topic, partition))

        return floor_may_have_moved

    def _deadline_watch(self, key: tuple[str, str]) -> Callable[[int], None]:
        def deadline(deadline_ms: int) -> None:
            if self._visiting != key:
                self._timers.schedule(key, deadline_ms)

        return deadline

    def _snapshot_watch(self, key: tuple[str, str]) -> Callable[[], None]:
        def snapshot_due() -> None:
            self._snapshots_due.add(key)

        return snapshot_due

    def journals_due(self) -> list[QueueSubscription | StreamSubscription]:
        """The subscriptions whose journal is due a snapshot (for the host), found without
        looking at the others: each says when it becomes due, and stays listed until it is
        not (a failed journal waits for its repair, and is listed until then)."""
        due: list[QueueSubscription | StreamSubscription] = []
        for key in list(self._snapshots_due):
            sub = self._subscriptions.get(key) or self._streams.get(key)
            if sub is None or not sub.snapshot_due:
                self._snapshots_due.discard(key)
            else:
                due.append(sub)
        return due

    def quarantined_subscriptions(self) -> dict[tuple[str, str], str]:
        """(topic, subscription) -> the damage, for each subscription out of service."""
        return dict(self._quarantined)

    def _subscription(self, topic: str, name: str) -> QueueSubscription:
        sub = self._subscriptions.get((topic, name))
        if sub is None:
            self.engine.topic(topic)  # UnknownTopic first, when it is the topic that is missing
            self._check_quarantine(topic, name)
            if (topic, name) in self._streams:
                raise InvalidRequest(f"{topic!r}/{name!r} is a stream: fetch and commit instead")
            raise UnknownSubscription(topic, name)
        return sub

    def _check_quarantine(self, topic: str, name: str) -> None:
        damage = self._quarantined.get((topic, name))
        if damage is not None:
            raise SubscriptionQuarantined(topic, name, damage)

    def stream(self, topic: str, name: str) -> StreamSubscription:
        """The `stream` subscription ``name`` on ``topic``: join, fetch, commit, seek on it."""
        stream = self._streams.get((topic, name))
        if stream is None:
            self.engine.topic(topic)
            self._check_quarantine(topic, name)
            if (topic, name) in self._subscriptions:
                mode = self._subscriptions[(topic, name)].spec.mode
                raise InvalidRequest(f"{topic!r}/{name!r} is a {mode} subscription: receive it")
            raise UnknownSubscription(topic, name)
        return stream

    # -- exchanges ------------------------------------------------------------------------

    def declare_exchange(self, spec: ExchangeSpec) -> ExchangeSpec:
        declared = self._router.declare(spec)
        self._catalog.save_exchange(declared)
        return declared

    def delete_exchange(self, name: str) -> None:
        self._router.delete(name)
        self._catalog.remove_exchange(name)

    def list_exchanges(self) -> list[ExchangeSpec]:
        return self._router.exchanges()

    def bind(self, spec: BindingSpec) -> bool:
        """Bind an exchange to a topic that exists; False if that binding was already there."""
        if not self.engine.has_topic(spec.topic):
            raise UnknownTopic(spec.topic)
        added = self._router.bind(spec)
        if added:
            self._catalog.save_bindings(spec.exchange, self._router.bindings(spec.exchange))
        return added

    def unbind(self, spec: BindingSpec) -> bool:
        removed = self._router.unbind(spec)
        if removed:
            self._catalog.save_bindings(spec.exchange, self._router.bindings(spec.exchange))
        return removed

    def list_bindings(self, exchange: str | None = None) -> list[BindingSpec]:
        return self._router.bindings(exchange)

    # -- publish --------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> PublishOutcome:
        """Append ``messages`` to ``topic`` (see publishing.py); results in message order.

        With ``producer_id`` and ``sequence`` (the first message's), a retried publish is
        confirmed with its first offsets instead of being appended twice.
        """
        target, policy, partitions = self._plan(topic, messages)
        outcome = self._publisher.publish(
            target, policy, messages, partitions, producer_id, sequence
        )
        self._appended(target, policy, partitions)
        self._announce_delays(topic, messages, outcome.published)
        return outcome

    def _announce_delays(
        self, topic: str, messages: Sequence[Outgoing], published: Sequence[Published]
    ) -> None:
        """Tell the topic's queue subscriptions which records just appended are delayed, so
        that their stats do not count them as ready before a receive reads them."""
        queues = self._queues_by_topic.get(topic)
        if not queues or all(m.delay_ms is None and m.deliver_at_ms is None for m in messages):
            return
        now_ms = self.clock.now_ms()
        delays: dict[int, list[tuple[int, int]]] = {}
        for message, placed in zip(messages, published, strict=False):
            when = deliver_at(message, now_ms)
            if when is not None and when > now_ms:
                delays.setdefault(placed.partition, []).append((placed.offset, when))
        for sub in queues.values():
            for partition, announced in delays.items():
                sub.announce_delays(partition, announced)

    def _appended(self, topic: Topic, policy: TopicPolicy, partitions: list[int]) -> None:
        """Retention's part in a publish: a roll may have made segments deletable."""
        if policy.retain_until_consumed:
            self._note_segments(topic, partitions)
        self._retention.appended(topic, partitions)

    def _note_segments(self, topic: Topic, partitions: list[int]) -> None:
        """A partition with sealed segments may have rolled just now, its old active segment
        wholly below a floor that will not move again until the next ack: look at it."""
        for partition in set(partitions):
            if topic.log(partition).segment_count > 1:
                self._retention_due.add((topic.name, partition))

    def _plan(
        self, topic: str, messages: Sequence[Outgoing]
    ) -> tuple[Topic, TopicPolicy, list[int]]:
        """Where ``messages`` go, once their topic's backlog policy has made room or refused."""
        target = self.engine.topic(topic)
        partitions = self._publisher.plan(target, messages)
        policy = self._policies.get(topic, DEFAULT_POLICY)
        self._room_for(target, policy, partitions)
        return target, policy, partitions

    def _room_for(self, target: Topic, policy: TopicPolicy, partitions: list[int]) -> None:
        if policy.limited:
            counts: dict[int, int] = {}
            for partition in partitions:
                counts[partition] = counts.get(partition, 0) + 1
            self._make_room(target, policy, counts)

    def _topic_producers(self, topic: Topic) -> TopicProducers:
        """The topic's producer state, opened on first use; ``ProducerStateQuarantined`` once
        its journal or snapshot was found damaged (at open, or later by the scrub)."""
        producers = self._producers.get(topic.name)
        if producers is not None and not producers.journal.log.quarantined:
            return producers
        if producers is not None:
            self._damaged_producers[topic.name] = producers.journal.log.quarantined
        damage = self._damaged_producers.get(topic.name)
        if damage is not None:
            raise ProducerStateQuarantined(topic.name, damage)
        journal = self.engine.journal(
            self._catalog.producer_journal(topic.name), f"producer state of topic {topic.name}"
        )
        window_ms = self._policies.get(topic.name, DEFAULT_POLICY).dedup_window_ms
        try:
            producers = TopicProducers.open(topic, journal, self.clock, window_ms)
        except (PartitionQuarantined, CorruptState) as e:
            damage = e.damage if isinstance(e, PartitionQuarantined) else str(e)
            self._damaged_producers[topic.name] = damage
            raise ProducerStateQuarantined(topic.name, damage) from e
        self._producers[topic.name] = producers
        return producers

    def quarantined_producer_states(self) -> dict[str, str]:
        """Topic -> the damage, for each topic whose producer state is out of service."""
        damaged = dict(self._damaged_producers)
        for name, producers in self._producers.items():
            if producers.journal.log.quarantined:
                damaged[name] = producers.journal.log.quarantined
        return damaged

    def publish_to_exchange(
        self, exchange: str, routing_key: str, messages: Sequence[Outgoing]
    ) -> PublishOutcome:
        """Route each message through ``exchange`` and publish it to every topic it matches.

        All or nothing: when it goes to several topics, every one is checked first (the
        records against its limits, its partitions and producer state for writes, then its
        backlog policy), so a topic that refuses leaves every other one without the message
        too, and the producer's retry duplicates nothing. An append that fails after those
        checks (an I/O error) raises its error with ``stored``: what was stored before it.
        """
        if len(routing_key.encode()) > MAX_KEY_BYTES:
            raise InvalidRequest(f"a routing key is at most {MAX_KEY_BYTES} bytes")
        per_topic: dict[str, list[Outgoing]] = {}
        for message in messages:
            for topic in self._router.route(exchange, routing_key, message.headers, message.key):
                per_topic.setdefault(topic, []).append(message)
        plans: list[tuple[Topic, TopicPolicy, list[int], list[Outgoing]]] = []
        for topic, routed in per_topic.items():
            target = self.engine.topic(topic)
            partitions = self._publisher.plan(target, routed)
            policy = self._policies.get(topic, DEFAULT_POLICY)
            if len(per_topic) > 1:
                self._publisher.check(target, policy, routed, partitions)
            plans.append((target, policy, partitions, routed))
        for target, policy, partitions, _ in plans:
            self._room_for(target, policy, partitions)
        published: list[Published] = []
        durability: list[tuple[PartitionLog, int]] = []
        for target, policy, partitions, routed in plans:
            try:
                part = self._publisher.publish(target, policy, routed, partitions)
            except RoostError as e:
                if published:
                    raise _partly_stored(e, published) from e
                raise
            self._appended(target, policy, partitions)
            self._announce_delays(target.name, routed, part.published)
            published.extend(part.published)
            durability.extend(part.durability)
        return PublishOutcome(published, durability)

    def _make_room(self, topic: Topic, policy: TopicPolicy, adding: dict[int, int]) -> None:
        """Apply the overflow policy to every partition first, so a refused publish appends
        nothing anywhere."""
        for partition, count in adding.items():
            log = topic.log(partition)
            records = log.end_offset - log.start_offset
            average = log.size_bytes / records if records else 0.0
            backlog = self.backlog(topic.name, partition)
            excess = policy.excess(backlog or 0, count, average)
            if backlog is None or excess <= 0:
                continue
            if policy.overflow != "drop_oldest":
                raise BacklogFull(topic.name, _limits(policy))
            # Drop from the slowest floor up; acked ranges above it count for nothing, so
            # go on until enough not-yet-consumed messages are gone. Never past what is
            # durable: a crash could take those records back, and the ones written at their
            # offsets after it would count as dropped already.
            while excess > 0 and (floor := self.floor(topic.name, partition)) is not None:
                if floor >= log.confirmed_offset:
                    break
                self._drop_below(topic.name, partition, min(floor + excess, log.confirmed_offset))
                excess = policy.excess(self.backlog(topic.name, partition) or 0, count, average)

    def backlog(self, topic: str, partition: int) -> int | None:
        """Messages of a partition the slowest subscription has not consumed (acked, dead-
        lettered or committed past). None when the topic has no subscriptions."""
        end = self.engine.topic(topic).log(partition).end_offset
        backlogs = []
        for sub in self._queues_of(topic):
            acks = sub.partition_state(partition).acks
            backlogs.append(end - acks.floor - acks.done_between(acks.floor, end))
        backlogs += [end - s.committed[partition] for s in self._streams_of(topic)]
        return max(backlogs) if backlogs else None

    def floor(self, topic: str, partition: int) -> int | None:
        """The slowest subscription's position on a partition: below it, everything is
        consumed. None when the topic has no subscriptions."""
        floors = [sub.partition_state(partition).acks.floor for sub in self._queues_of(topic)]
        floors += [s.committed[partition] for s in self._streams_of(topic)]
        return min(floors) if floors else None

    def _drop_below(self, topic: str, partition: int, offset: int) -> None:
        for sub in self._queues_of(topic):
            sub.drop_below(partition, offset)
        for stream in self._streams_of(topic):
            if stream.committed[partition] < offset:
                stream.force_commit(partition, offset)

    # -- consume --------------------------------------------------------------------------

    def receive(
        self,
        topic: str,
        subscription: str,
        max_messages: int = 1,
        visibility_ms: int | None = None,
        consumer: str = "",
    ) -> list[Message]:
        return self._subscription(topic, subscription).receive(
            max_messages, visibility_ms, consumer
        )

    def ack(self, topic: str, subscription: str, receipts: Sequence[Receipt]) -> list[Receipt]:
        """Returns the receipts that were refused (their lease had expired)."""
        return self._subscription(topic, subscription).ack(receipts)

    def nack(
        self,
        topic: str,
        subscription: str,
        receipts: Sequence[Receipt],
        delay_ms: int | None = None,
        error: str | None = None,
        undelivered: bool = False,
        reject: bool = False,
    ) -> list[Receipt]:
        """Give messages back (see ``QueueSubscription.nack``); returns refused receipts."""
        return self._subscription(topic, subscription).nack(
            receipts, delay_ms, error, undelivered, reject
        )

    def extend(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], visibility_ms: int
    ) -> list[Receipt]:
        return self._subscription(topic, subscription).extend(receipts, visibility_ms)

    # -- redrive --------------------------------------------------------------------------

    def redrive_batch(
        self,
        dead_letter_topic: str,
        where: RedriveFilter,
        max_messages: int = 100,
        to: str | None = None,
    ) -> tuple[RedriveBatch, PublishOutcome]:
        """Copy one batch of matching dead letters back (see redrive.py). Nothing is acked
        here: once the outcome is durable, ``finish_redrive`` acks ``batch.moved``.

        A dead letter that cannot be moved (no source header, a destination that is gone or
        full) is skipped like a non-matching one, with the reason in ``batch.errors``.
        """
        key = (dead_letter_topic, REDRIVE_SUBSCRIPTION)
        if key not in self._subscriptions:
            self.create_subscription(redrive_spec(dead_letter_topic))
        sub = self._subscriptions[key]
        messages = sub.receive(max_messages, HOLD_MS)
        published: list[Published] = []
        durability: list[tuple[PartitionLog, int]] = []
        moved: list[Receipt] = []
        skipped: list[Receipt] = []
        errors: list[str] = []
        for message in messages:
            if not where.matches(message):
                skipped.append(message.receipt)
                continue
            try:
                part = self.publish(
                    to or source_of(message),
                    [Outgoing(value=message.value, key=message.key,
                              headers=original_headers(message))],
                )  # fmt: skip
            except RoostError as e:
                skipped.append(message.receipt)
                errors.append(f"{message.topic}/{message.partition}@{message.offset}: {e}")
                continue
            published.extend(part.published)
            durability.extend(part.durability)
            moved.append(message.receipt)
        outcome = PublishOutcome(published, durability)
        return RedriveBatch(moved, skipped, errors, exhausted=not messages), outcome

    def finish_redrive(self, dead_letter_topic: str, moved: Sequence[Receipt]) -> None:
        """The copies of ``moved`` are durable at their destination: ack the dead letters."""
        sub = self._subscriptions.get((dead_letter_topic, REDRIVE_SUBSCRIPTION))
        if sub is not None and moved:
            sub.ack(moved)

    def release_redrive(self, dead_letter_topic: str, receipts: Sequence[Receipt]) -> None:
        """End a redrive run: the dead letters it skipped are visible to the next run."""
        sub = self._subscriptions.get((dead_letter_topic, REDRIVE_SUBSCRIPTION))
        if sub is not None and receipts:
            sub.nack(receipts, delay_ms=0)

    # -- time and state -------------------------------------------------------------------

    def tick(self) -> Tick:
        """Expire leases, end delays, settle dead letters where they are due, and delete
        consumed segments where floors moved; what is due next and what to await.

        Visits only the subscriptions whose deadline has come: one with nothing due costs
        nothing, however many there are.
        """
        now_ms = self.clock.now_ms()
        pending: list[PendingDeadLetter] = []
        topics: set[str] = set()
        due = self._timers.due(now_ms)
        for i, key in enumerate(due):
            sub: QueueSubscription | StreamSubscription | None
            sub = self._subscriptions.get(key) or self._streams.get(key)
            if sub is None:
                continue  # deleted, or quarantined
            if self.visits is not None:
                self.visits[key] += 1
            topics.add(key[0])
            self._visiting = key
            try:
                deadline = sub.tick()
            except BaseException:
                # Popped means forgotten: whatever was due stays due (the host retries the
                # tick), the ones not visited yet first, so that one failing subscription
                # does not keep the others' leases from expiring.
                for later in due[i + 1 :]:
                    self._timers.schedule(later, now_ms)
                self._timers.schedule(key, now_ms)
                raise
            finally:
                self._visiting = None
            if isinstance(sub, QueueSubscription) and sub.dead_letter is not None:
                topics.add(sub.dead_letter.name)  # it may have appended dead letters there
                dead_letters = sub.dead_letter
                self._retention.appended(dead_letters, range(len(dead_letters.partitions)))
                if sub.pending_dead_letters:
                    pending += sub.pending_dead_letters
                    deadline = now_ms  # the host awaits them, then ticks: settle them then
            if deadline is not None:
                self._timers.schedule(key, deadline)
        topics |= self._retain_until_consumed()
        topics |= self._retention.tick(self.engine)
        deadlines = [self._timers.next_deadline_ms(), self._retention.next_deadline_ms()]
        next_deadline_ms = min((d for d in deadlines if d is not None), default=None)
        return Tick(next_deadline_ms, pending, topics)

    def retention_deleted_segments(self, topic: str, partition: int) -> int:
        """Segments of a partition retention deleted since the broker opened (time, size and
        until consumed alike)."""
        return self._retention.deleted.get((topic, partition), 0)

    def _retain_until_consumed(self) -> set[str]:
        """Delete segments every subscription is done with, where a floor may have moved,
        on topics that ask for it; returns the topics that lost segments."""
        topics: set[str] = set()
        # The same set throughout: the subscriptions' watches hold it. A pair leaves it once
        # looked at; a failure puts it back, and the ones not looked at yet stay.
        due = self._retention_due
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
        policy = self._policies.get(name)
        if policy is None or not policy.retain_until_consumed:
            return False  # deleted since, or a topic that keeps what is consumed
        if any(topic == name for topic, _ in self._quarantined):
            # A subscription out of service for damage has a position nobody can read: what
            # it has not consumed stays until it is restored, repaired or deleted (which
            # marks the topic due again).
            return False
        floor = self.floor(name, partition)
        if floor is None:
            return False
        log = self.engine.topic(name).log(partition)
        deleted = log.delete_below(floor)
        self._retention.count((name, partition), deleted)
        if log.segment_count > 1 and log.oldest_segment_end <= floor:
            # Deletable but still there: a flush holds it, or the log failed and waits for
            # its repair. Look again next tick.
            self._retention_due.add((name, partition))
        return deleted > 0

    def stats(self, topic: str, subscription: str) -> SubscriptionStats | StreamStats:
        """Depth, in flight, delayed, oldest age, dead letters; or, for a stream, lag."""
        if (topic, subscription) in self._streams:
            return stream_stats(self._streams[(topic, subscription)])
        stats = subscription_stats(self._subscription(topic, subscription), self.clock.now_ms())
        redrive = self._subscriptions.get((stats.dead_letter_topic or "", REDRIVE_SUBSCRIPTION))
        if redrive is not None:
            # Once redriven, a dead letter is gone from the count, though its record stays.
            waiting = subscription_stats(redrive, self.clock.now_ms()).backlog
            stats = msgspec.structs.replace(stats, dead_letters=waiting)
        return stats

    # -- inspection and repair (operators) --------------------------------------------------

    def peek(
        self, topic: str, subscription: str, max_messages: int = 10, partition: int | None = None
    ) -> list[Peeked]:
        """What ``subscription`` has not finished with, without taking it (inspection.py)."""
        if (topic, subscription) in self._streams:
            return peek_stream(self._streams[(topic, subscription)], max_messages, partition)
        sub = self._subscription(topic, subscription)
        return peek_queue(sub, self.clock.now_ms(), max_messages, partition)

    def read(
        self, topic: str, partition: int, offset: int | None = None, max_messages: int = 10
    ) -> list[Message]:
        """Records of one partition from ``offset`` (default: its start), as stored."""
        return read_log(self.engine.topic(topic), partition, offset, max_messages)

    def peek_dead_letters(
        self, dead_letter_topic: str, max_messages: int = 10, partition: int | None = None
    ) -> list[Peeked]:
        """The dead letters of a topic not yet redriven, with the headers saying why they died.

        Those a running redrive holds are ``leased``; without any redrive so far, every record
        of the topic."""
        redrive = self._subscriptions.get((dead_letter_topic, REDRIVE_SUBSCRIPTION))
        if redrive is not None:
            return peek_queue(redrive, self.clock.now_ms(), max_messages, partition)
        return peek_topic(self.engine.topic(dead_letter_topic), max_messages, partition)

    def purge(self, topic: str, subscription: str) -> int:
        """Finish every confirmed message of ``subscription``, leased and delayed ones too;
        for a stream, commit at the end. Returns how many messages it skipped."""
        if (topic, subscription) in self._streams:
            return self._streams[(topic, subscription)].purge()
        return self._subscription(topic, subscription).purge()

    def describe_group(self, topic: str, group: str) -> GroupDescription:
        """Members, their partitions and sessions, committed offsets and lag per partition."""
        return describe_group(self.stream(topic, group))

    def reset_group(
        self, topic: str, group: str, to: ResetTarget, partitions: Sequence[int] | None = None
    ) -> dict[int, int]:
        """Move an idle group's committed offsets (see ``StreamSubscription.reset``)."""
        return self.stream(topic, group).reset(to, partitions)

    def subscriptions(self) -> list[QueueSubscription | StreamSubscription]:
        """Every open subscription (for the host's snapshots)."""
        return [*self._subscriptions.values(), *self._streams.values()]

    def producer_states(self) -> list[TopicProducers]:
        """Every topic's producer state in use (for the host's snapshots)."""
        return list(self._producers.values())

    def log_cut(self, topic: str, partition: int, end_offset: int) -> TopicProducers | None:
        """A repair cut ``topic``'s ``partition`` back to ``end_offset`` (records whose
        publishes got an error): forget the producer sequences and dedup ids placed there, so
        a retry appends again instead of being confirmed at offsets that now hold nothing (or
        other records). Returns the state to snapshot, so the journal forgets them too."""
        producers = self._producers.get(topic)
        if producers is not None:
            producers.state.truncate(partition, end_offset)
        return producers


def _partly_stored(error: RoostError, stored: Sequence[Published]) -> RoostError:
    """``error``, saying what a publish to several topics stored before it failed (as
    ``topic/partition@offset``, in its message and as ``stored``): a retry stores those again."""
    where = [f"{p.topic}/{p.partition}@{p.offset}" for p in stored]
    message = f"{error} (stored before this failed, and again by a retry: {', '.join(where)})"
    return error_from(error.code, message, {**error.details(), "stored": where})


def _limits(policy: TopicPolicy) -> str:
    limits = []
    if policy.max_backlog_messages is not None:
        limits.append(f"max_backlog_messages={policy.max_backlog_messages}")
    if policy.max_backlog_bytes is not None:
        limits.append(f"max_backlog_bytes={policy.max_backlog_bytes}")
    return ", ".join(limits)
