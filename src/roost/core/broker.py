"""The broker's core: topics, queues, subscriptions and exchanges over one storage engine.

Synchronous, single-threaded, and never waits: every command runs to completion and returns
values. Two of them tell the caller (the asyncio host) what to wait for:

- ``publish`` returns, with the offsets, the ``(log, next_offset)`` pairs that must become
  durable before the publish may be confirmed (only for ``always`` topics);
- ``tick`` returns the next time (ms) something is due — a lease expiry or a delay ending —
  and the dead-letter appends whose durability would let a subscription finish a message.

A tick costs what is due, not what exists (docs/design.md, "The tick"): it visits only the
subscriptions whose deadline has come (core/timers.py), and deletes consumed segments only of
the partitions whose floor may have moved since the last tick (core/until_consumed.py).

The broker composes; the work is done where it is named. Every subscription, in any mode, is a
``Subscription`` (core/delivery_modes.py) kept in its topic's ``TopicState``
(core/topic_state.py) by the ``Registry`` (core/registry.py), which opens, finds, forgets and
times them. A publish asks only its topic's state (core/backpressure.py for limits); redrive is
core/redrive.py's ``Redrives``; retention core/retention.py and core/until_consumed.py.

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
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from roost.clock import Clock
from roost.core.backpressure import make_room
from roost.core.catalog import Catalog
from roost.core.declares import differences
from roost.core.delivery_modes import Subscription
from roost.core.gaps import continue_past_seen
from roost.core.inspection import Cursor, Peeked, read_log
from roost.core.model import DEFAULT_MAX_DELIVERIES, Message, SubscriptionSpec
from roost.core.policies import DEFAULT_POLICY, QUEUE_POLICY, TopicPolicy
from roost.core.producer_states import ProducerStates
from roost.core.publishing import (
    Outgoing,
    Published,
    Publisher,
    PublishOutcome,
    TopicProducers,
    deliver_at,
)
from roost.core.redrive import RedriveBatch, RedriveFilter, Redrives
from roost.core.registry import Registry
from roost.core.retention import Retention
from roost.core.retry import DEFAULT_RETRY, RetryPolicy
from roost.core.routing import MAX_KEY_BYTES, BindingSpec, ExchangeSpec, Router
from roost.core.stats import GroupDescription, StreamStats, SubscriptionStats, describe_group
from roost.core.streams import ResetTarget, StreamSubscription
from roost.core.subscription import PendingDeadLetter
from roost.core.topic_state import TopicStates
from roost.core.until_consumed import UntilConsumed
from roost.errors import (
    ConfigConflict,
    InvalidConfig,
    InvalidRequest,
    ProducerStateQuarantined,
    RoostError,
    StorageFailure,
    SubscriptionExists,
    TopicExists,
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
        #: Topic -> its subscriptions and policy: whatever asks about one topic (a publish,
        #: a floor, a backlog) costs that topic's subscriptions, not the broker's.
        self._topics = TopicStates()
        for name, policy in catalog.policies().items():
            state = self._topics.of(name)
            state.policy, state.policy_saved = policy, True
        self._producers = ProducerStates(engine, clock, catalog, self._topics)
        self._publisher = Publisher(clock, self._producers.of)
        self._registry = Registry(engine, clock, self._topics)
        #: Time and size retention: deadlines per partition, applied by the tick and on a
        #: segment roll (core/retention.py).
        self._retention = Retention(clock)
        #: Until-consumed retention, where a floor moved or a segment rolled; its ``due`` is
        #: the set the subscriptions' floor watches mark.
        self._until_consumed = UntilConsumed(
            engine, self._topics, self._retention, self._registry.floors_moved
        )
        self._redrives = Redrives(
            engine, clock, self._registry, self.create_subscription, self.publish
        )

    @property
    def visits(self) -> Counter[tuple[str, str]] | None:
        """Set to a Counter, it counts the tick's visits per subscription (tests; off by
        default, so that production keeps nothing per subscription for it)."""
        return self._registry.visits

    @visits.setter
    def visits(self, counter: Counter[tuple[str, str]] | None) -> None:
        self._registry.visits = counter

    @classmethod
    def open(cls, engine: LocalEngine, clock: Clock) -> Broker:
        """Load every definition from the engine's metadata and resume every subscription."""
        catalog = Catalog(engine.metadata)
        router = Router.from_specs(catalog.exchanges(), catalog.bindings())
        broker = cls(engine, clock, catalog, router)
        broker._drop_dangling_bindings()
        for spec in catalog.subscriptions():
            broker._registry.open(spec)
        for topic in catalog.topics_with_producer_state():
            # Read now, so damage is reported at start rather than at a producer's retry.
            with contextlib.suppress(ProducerStateQuarantined):
                broker._producers.of(broker.engine.topic(topic))
        broker.continue_past_seen()
        for name in engine.list_topics():
            broker._retention.watch(engine.topic(name))  # what expired while we were down
        for state in broker._topics:
            if state.policy.retain_until_consumed and state.subscriptions:
                partitions = len(broker.engine.topic(state.name).partitions)
                broker._until_consumed.mark(state.name, partitions)
        return broker

    def continue_past_seen(self, only: str | None = None) -> None:
        """Where a log ends below an offset a subscription or group has seen, move its end
        past that offset with a gap batch, before anything is published (core/gaps.py).
        Blocking: at open, and (``only`` a topic) after one of its logs is reopened by a
        repair."""
        continue_past_seen(self.engine, self._registry.all(), self._producers, only)

    # -- topics ---------------------------------------------------------------------------

    def create_topic(
        self, name: str, config: TopicConfig | None = None, policy: TopicPolicy | None = None
    ) -> TopicInfo:
        """A topic of partition logs; ``policy`` bounds its backlog (see policies.py).

        One metadata transaction (joined to the caller's, if one is open). A topic that
        exists with the same settings is returned as it is; other settings raise
        ``TopicExists`` naming each one (core/declares.py)."""
        if self.engine.has_topic(name):
            self._check_declared(name, config, policy)
            return self.engine.describe_topic(name)
        with self.engine.metadata.transaction() as txn:
            info = self.engine.create_topic(name, config).describe()
            if policy is not None and policy != DEFAULT_POLICY:
                self._catalog.save_policy(name, policy)
                state = self._topics.of(name)
                state.policy, state.policy_saved = policy, True
                txn.on_abort(lambda: self._topics.drop(name))
        return info

    def _check_declared(
        self, name: str, config: TopicConfig | None, policy: TopicPolicy | None
    ) -> None:
        """``TopicExists`` unless topic ``name`` has this config and policy."""
        found = differences(self.engine.topic(name).config, config or TopicConfig())
        found += differences(self._topics.policy(name), policy or DEFAULT_POLICY)
        if found:
            raise TopicExists(name, found)

    def policy(self, topic: str) -> TopicPolicy:
        self.engine.topic(topic)
        return self._topics.policy(topic)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and every subscription on it. A topic that another topic's
        subscription dead-letters into cannot go before that subscription."""
        self.engine.topic(name)
        users = [
            f"{sub.spec.topic}/{sub.spec.name}"
            for sub in self._registry.dead_letter_users(name)
            if sub.spec.topic != name
        ]
        if users:
            raise InvalidRequest(
                f"topic {name!r} is the dead-letter topic of {', '.join(users)}: delete or "
                "change those subscriptions first"
            )
        state = self._topics.get(name)
        if state is not None:
            for subscription in [*state.subscriptions, *state.quarantined]:
                self.delete_subscription(name, subscription)
        partitions = len(self.engine.topic(name).partitions)
        with self.engine.metadata.transaction() as txn:
            # One commit: the topic never goes while an exchange still routes to it.
            dropped = self._unbind_topic(name)
            txn.on_abort(lambda: [self._router.bind(binding) for binding in dropped])
            self.engine.delete_topic(name)
        self._retention.forget(name, partitions)
        self._producers.forget(name)
        state = self._topics.drop(name)
        if state is not None and state.policy_saved:
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
        """Start reading ``spec.topic`` as ``spec.name``; the dead-letter topic must exist.

        One that exists with the same settings is returned as it is; other settings raise
        ``SubscriptionExists`` naming each one."""
        self.engine.topic(spec.topic)
        if spec.dead_letter is not None:
            self.engine.topic(spec.dead_letter)
        elif spec.mode != "stream" and spec.max_deliveries is not None:
            raise InvalidConfig(
                "dead_letter", None,
                f"max_deliveries={spec.max_deliveries} needs a dead-letter topic; to retry a "
                "failing message forever, say max_deliveries=None",
            )  # fmt: skip
        existing = self._declared_subscription(spec)
        if existing is not None:
            return existing
        with self.engine.metadata.transaction():
            return self._define_subscription(spec)

    def _declared_subscription(self, spec: SubscriptionSpec) -> SubscriptionSpec | None:
        """The stored spec if ``spec`` names a subscription that exists with its settings;
        None if there is none; ``SubscriptionExists`` if it has others."""
        if not self._registry.exists(spec.topic, spec.name):
            return None
        stored = self._catalog.subscription(spec.topic, spec.name)
        assert stored is not None, "the registry serves only what the catalog holds"
        found = differences(stored, spec, skip=("journal",))
        if found:
            raise SubscriptionExists(spec.topic, spec.name, found)
        return stored

    def _define_subscription(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        """Put ``spec`` in the open metadata transaction, make its journal and serve it, all
        undone if the transaction does not commit (or, a group commit, its sync fails)."""
        if self._registry.exists(spec.topic, spec.name):
            raise SubscriptionExists(spec.topic, spec.name)
        stored = self._catalog.add_subscription(spec)
        self.engine.journal(stored.journal, f"subscription {spec.topic}/{spec.name}", new=True)
        with self.engine.metadata.transaction() as txn:
            txn.on_abort(lambda: self._registry.forget(spec.topic, spec.name))
            self._registry.open(stored)
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
        rate_limit_per_s: float | None = None,
        rate_burst: int | None = None,
    ) -> SubscriptionSpec:
        """A topic and one subscription of the same name: the SQS or RabbitMQ queue.

        ``fifo`` makes it `keyed` (per key in order, one in flight per key). The dead-letter
        topic defaults to ``<name>.dlq`` (made if missing); ``dead_letter=None`` with
        ``max_deliveries=None`` retries a failing message forever, deliberately.

        A declare: a queue that exists with these settings is returned as it is; other
        settings (or a topic of that name that is not a queue) raise ``ConfigConflict``
        naming each one, and change nothing.
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
            rate_limit_per_s=rate_limit_per_s,
            rate_burst=rate_burst,
        )
        if self.engine.has_topic(name):
            return self._declared_queue(spec, config, policy)
        # One metadata transaction, so one durable write: the queue is wholly there after a
        # crash or wholly absent. No file is made: each log makes its own on its first write.
        with self.engine.metadata.transaction():
            self.create_topic(name, config, policy)
            if dead_letter_topic is not None and not self.engine.has_topic(dead_letter_topic):
                dead_letters = TopicConfig(durability=config.durability)
                self.engine.create_topic(dead_letter_topic, dead_letters)
            return self._define_subscription(spec)

    def _declared_queue(
        self, spec: SubscriptionSpec, config: TopicConfig, policy: TopicPolicy
    ) -> SubscriptionSpec:
        """The queue ``spec`` names, if it exists with these settings; else ConfigConflict."""
        found = differences(self.engine.topic(spec.topic).config, config)
        found += differences(self._topics.policy(spec.topic), policy)
        stored = self._catalog.subscription(spec.topic, spec.name)
        if stored is None:
            found.append(("kind", "topic", "queue"))
        else:
            found += differences(stored, spec, skip=("journal",))
        if found:
            raise ConfigConflict("queue", spec.name, found)
        assert stored is not None
        return stored

    def delete_queue(self, name: str) -> None:
        """Delete a queue's topic (and so its subscription); its dead-letter topic stays."""
        self._registry.queue(name, name)
        self.delete_topic(name)

    def delete_subscription(self, topic: str, name: str) -> None:
        """Delete a subscription; a quarantined one too (an operator's way out of damage)."""
        if not self._registry.exists(topic, name):
            self._registry.require(topic, name)  # the error that says what is missing
        journal = self._catalog.remove_subscription(topic, name)
        if journal:
            self.engine.drop_journal(journal)
        self._registry.forget(topic, name)
        with contextlib.suppress(UnknownTopic):
            # The floor was the slowest subscription's: without this one it may be higher.
            self._until_consumed.mark(topic, len(self.engine.topic(topic).partitions))

    def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionSpec]:
        subscriptions = self._registry.all() if topic is None else self._subscriptions_of(topic)
        return sorted((sub.spec for sub in subscriptions), key=lambda s: (s.topic, s.name))

    def topics_with_subscriptions(self) -> set[str]:
        return {state.name for state in self._topics if state.subscriptions}

    def _subscriptions_of(self, topic: str) -> list[Subscription]:
        state = self._topics.get(topic)
        return [] if state is None else list(state.subscriptions.values())

    def journals_due(self) -> list[Subscription]:
        """The subscriptions whose journal is due a snapshot (for the host), found without
        looking at the others (core/registry.py)."""
        return self._registry.journals_due()

    def quarantined_subscriptions(self) -> dict[tuple[str, str], str]:
        """(topic, subscription) -> the damage, for each subscription out of service."""
        return self._registry.quarantined()

    def stream(self, topic: str, name: str) -> StreamSubscription:
        """The `stream` subscription ``name`` on ``topic``: join, fetch, commit, seek on it."""
        return self._registry.stream(topic, name)

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
        ends = _ends_before(target, messages, partitions)
        outcome = self._publisher.publish(
            target, policy, messages, partitions, producer_id, sequence
        )
        self._appended(target, policy, partitions)
        outcome.durability.extend(self._announce_delays(topic, messages, outcome.published, ends))
        return outcome

    def _announce_delays(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        published: Sequence[Published],
        ends_before: dict[int, int] | None,
    ) -> list[tuple[PartitionLog, int]]:
        """Tell the topic's subscriptions which records just appended are delayed, so that
        a receive never reads through them (core/scheduled.py) and their stats do not count
        them as ready; returns the journal writes the confirm must await too."""
        state = self._topics.get(topic)
        if state is None or not state.subscriptions or ends_before is None:
            return []
        now_ms = self.clock.now_ms()
        delays: dict[int, list[tuple[int, int]]] = {}
        for message, placed in zip(messages, published, strict=False):
            when = deliver_at(message, now_ms)
            # Below the end before this publish: confirmed again (a dedup hit, an idempotent
            # retry), appended and told of before.
            if (
                when is not None
                and when > now_ms
                and placed.offset >= ends_before[placed.partition]
            ):
                delays.setdefault(placed.partition, []).append((placed.offset, when))
        for announced in delays.values():
            announced.sort()  # one publish may place its messages out of offset order
        return state.announce_delays(delays)

    def _appended(self, topic: Topic, policy: TopicPolicy, partitions: list[int]) -> None:
        """Retention's part in a publish: a roll may have made segments deletable."""
        if policy.retain_until_consumed:
            self._until_consumed.note_rolls(topic, partitions)
        self._retention.appended(topic, partitions)

    def _plan(
        self, topic: str, messages: Sequence[Outgoing]
    ) -> tuple[Topic, TopicPolicy, list[int]]:
        """Where ``messages`` go, once their topic's backlog policy has made room or refused."""
        target = self.engine.topic(topic)
        partitions = self._publisher.plan(target, messages)
        state = self._topics.get(topic)
        policy = DEFAULT_POLICY if state is None else state.policy
        make_room(target, policy, state, partitions)
        return target, policy, partitions

    def quarantined_producer_states(self) -> dict[str, str]:
        """Topic -> the damage, for each topic whose producer state is out of service."""
        return self._producers.quarantined()

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
            policy = self._topics.policy(topic)
            if len(per_topic) > 1:
                self._publisher.check(target, policy, routed, partitions)
            plans.append((target, policy, partitions, routed))
        for target, policy, partitions, _ in plans:
            make_room(target, policy, self._topics.get(target.name), partitions)
        published: list[Published] = []
        durability: list[tuple[PartitionLog, int]] = []
        for target, policy, partitions, routed in plans:
            ends = _ends_before(target, routed, partitions)
            try:
                part = self._publisher.publish(target, policy, routed, partitions)
            except RoostError as e:
                if published:
                    raise _partly_stored(e, published) from e
                raise
            self._appended(target, policy, partitions)
            published.extend(part.published)
            durability.extend(part.durability)
            durability.extend(self._announce_delays(target.name, routed, part.published, ends))
        return PublishOutcome(published, durability)

    def backlog(self, topic: str, partition: int) -> int | None:
        """Messages of a partition the slowest subscription has not consumed (acked, dead-
        lettered or committed past). None when the topic has no subscriptions."""
        self.engine.topic(topic).log(partition)  # UnknownTopic, UnknownPartition
        state = self._topics.get(topic)
        return None if state is None else state.backlog(partition)

    def floor(self, topic: str, partition: int) -> int | None:
        """The slowest subscription's position on a partition: below it, everything is
        consumed. None when the topic has no subscriptions."""
        state = self._topics.get(topic)
        return None if state is None else state.floor(partition)

    # -- consume --------------------------------------------------------------------------

    def receive(
        self,
        topic: str,
        subscription: str,
        max_messages: int = 1,
        visibility_ms: int | None = None,
        consumer: str = "",
    ) -> list[Message]:
        return self._registry.queue(topic, subscription).receive(
            max_messages, visibility_ms, consumer
        )

    def ack(self, topic: str, subscription: str, receipts: Sequence[Receipt]) -> list[Receipt]:
        """Returns the receipts that were refused (their lease had expired)."""
        return self._registry.queue(topic, subscription).ack(receipts)

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
        return self._registry.queue(topic, subscription).nack(
            receipts, delay_ms, error, undelivered, reject
        )

    def extend(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], visibility_ms: int
    ) -> list[Receipt]:
        return self._registry.queue(topic, subscription).extend(receipts, visibility_ms)

    # -- redrive (core/redrive.py) ---------------------------------------------------------

    def redrive_batch(
        self,
        dead_letter_topic: str,
        where: RedriveFilter,
        max_messages: int = 100,
        to: str | None = None,
    ) -> tuple[RedriveBatch, PublishOutcome]:
        """Copy one batch of matching dead letters back (see ``Redrives.batch``). Nothing is
        acked here: once the outcome is durable, ``finish_redrive`` acks ``batch.moved``."""
        return self._redrives.batch(dead_letter_topic, where, max_messages, to)

    def finish_redrive(self, dead_letter_topic: str, moved: Sequence[Receipt]) -> None:
        """The copies of ``moved`` are durable at their destination: ack the dead letters."""
        self._redrives.finish(dead_letter_topic, moved)

    def dead_letters_waiting(self, dead_letter_topic: str) -> int:
        """Dead letters of ``dead_letter_topic`` not yet redriven."""
        return self._redrives.waiting(dead_letter_topic)

    def release_redrive(self, dead_letter_topic: str, receipts: Sequence[Receipt]) -> None:
        """End a redrive run: the dead letters it skipped are visible to the next run."""
        self._redrives.release(dead_letter_topic, receipts)

    # -- time and state -------------------------------------------------------------------

    def tick(self) -> Tick:
        """Expire leases, end delays, settle dead letters where they are due, and delete
        consumed segments where floors moved; what is due next and what to await.

        Visits only the subscriptions whose deadline has come: one with nothing due costs
        nothing, however many there are.
        """
        now_ms = self.clock.now_ms()
        pending, topics = self._registry.tick(now_ms, self._dead_lettered_into)
        topics |= self._until_consumed.tick()
        topics |= self._retention.tick(self.engine)
        deadlines = [self._registry.next_deadline_ms(), self._retention.next_deadline_ms()]
        next_deadline_ms = min((d for d in deadlines if d is not None), default=None)
        return Tick(next_deadline_ms, pending, topics)

    def _dead_lettered_into(self, dead_letters: Topic) -> None:
        self._retention.appended(dead_letters, range(len(dead_letters.partitions)))

    def retention_deleted_segments(self, topic: str, partition: int) -> int:
        """Segments of a partition retention deleted since the broker opened (time, size and
        until consumed alike)."""
        return self._retention.deleted.get((topic, partition), 0)

    def stats(self, topic: str, subscription: str) -> SubscriptionStats | StreamStats:
        """Depth, in flight, delayed, oldest age, dead letters; or, for a stream, lag."""
        stats = self._registry.require(topic, subscription).stats(self.clock.now_ms())
        if isinstance(stats, SubscriptionStats):
            stats = self._redrives.uncount_redriven(stats)
        return stats

    # -- inspection and repair (operators) --------------------------------------------------

    def peek(
        self, topic: str, subscription: str, max_messages: int = 10, partition: int | None = None
    ) -> list[Peeked]:
        """What ``subscription`` has not finished with, without taking it (inspection.py)."""
        sub = self._registry.require(topic, subscription)
        return sub.peek(self.clock.now_ms(), max_messages, partition)

    def read(
        self, topic: str, partition: int, offset: int | None = None, max_messages: int = 10
    ) -> list[Message]:
        """Records of one partition from ``offset`` (default: its start), as stored."""
        return read_log(self.engine.topic(topic), partition, offset, max_messages)

    def peek_dead_letters(
        self,
        dead_letter_topic: str,
        max_messages: int = 10,
        partition: int | None = None,
        after: Cursor | None = None,
    ) -> list[Peeked]:
        """The dead letters of a topic not yet redriven, with the headers saying why they died.

        Those a running redrive holds are ``leased``; without any redrive so far, every record
        of the topic. ``after`` (partition, offset): the page after the one that ended there."""
        return self._redrives.peek(dead_letter_topic, max_messages, partition, after)

    def purge(self, topic: str, subscription: str) -> int:
        """Finish every confirmed message of ``subscription``, leased and delayed ones too;
        for a stream, commit at the end. Returns how many messages it skipped."""
        return self._registry.require(topic, subscription).purge()

    def describe_group(self, topic: str, group: str) -> GroupDescription:
        """Members, their partitions and sessions, committed offsets and lag per partition."""
        return describe_group(self.stream(topic, group))

    def reset_group(
        self, topic: str, group: str, to: ResetTarget, partitions: Sequence[int] | None = None
    ) -> dict[int, int]:
        """Move an idle group's committed offsets (see ``StreamSubscription.reset``)."""
        return self.stream(topic, group).reset(to, partitions)

    def subscriptions(self) -> list[Subscription]:
        """Every open subscription, in any mode (for the host's snapshots)."""
        return self._registry.all()

    def producer_states(self) -> list[TopicProducers]:
        """Every topic's producer state in use (for the host's snapshots)."""
        return self._producers.all()

    def log_cut(self, topic: str, partition: int, end_offset: int) -> TopicProducers | None:
        """A repair cut ``topic``'s ``partition`` back to ``end_offset`` (records whose
        publishes got an error): forget the producer sequences and dedup ids placed there, so
        a retry appends again instead of being confirmed at offsets that now hold nothing (or
        other records). Returns the state to snapshot, so the journal forgets them too."""
        return self._producers.log_cut(topic, partition, end_offset)


def _ends_before(
    target: Topic, messages: Sequence[Outgoing], partitions: list[int]
) -> dict[int, int] | None:
    """Where each partition a publish goes to ends before it, when it delays anything."""
    if all(m.delay_ms is None and m.deliver_at_ms is None for m in messages):
        return None
    return {p: target.log(p).end_offset for p in set(partitions)}


def _partly_stored(error: RoostError, stored: Sequence[Published]) -> RoostError:
    """``error``, saying what a publish to several topics stored before it failed (as
    ``topic/partition@offset``, in its message and as ``stored``): a retry stores those again."""
    where = [f"{p.topic}/{p.partition}@{p.offset}" for p in stored]
    message = f"{error} (stored before this failed, and again by a retry: {', '.join(where)})"
    return error_from(error.code, message, {**error.details(), "stored": where})
