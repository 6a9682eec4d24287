"""Every open subscription, kept in its topic's state: open, find, forget, and what is due.

    registry.open(spec)                        # resume from its journal, in its mode
    sub = registry.queue("emails", "workers")  # or .stream(...), .require(...) for any mode
    pending, topics = registry.tick(now_ms, on_dead_letters)

One registry for every mode: a subscription is found by (topic, name) in its topic's
``TopicState`` and held as a ``Subscription`` (core/delivery_modes.py). The mode is checked
once, where a command needs one (``queue``, ``stream``), with an error that says which it is.

The registry wires each subscription it opens to three watches: a floor that may have moved
marks (topic, partition) in ``floors_moved`` (until-consumed retention looks only there), a
deadline goes into ``Timers`` (the tick visits only what is due: docs/design.md, "The tick"),
and a journal due a snapshot is remembered for ``journals_due``. A subscription whose journal
is damaged is quarantined instead: listed with its damage, out of service, the rest serve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from roost.clock import Clock
from roost.core.delivery_modes import Subscription, open_subscription
from roost.core.model import SubscriptionSpec
from roost.core.state_codec import CorruptState
from roost.core.streams import StreamSubscription
from roost.core.subscription import PendingDeadLetter, QueueSubscription
from roost.core.timers import Timers
from roost.core.topic_state import TopicStates
from roost.errors import (
    InvalidRequest,
    PartitionQuarantined,
    SubscriptionQuarantined,
    UnknownSubscription,
)
from roost.storage import LocalEngine, Topic

Key = tuple[str, str]  # (topic, subscription)


class Registry:
    def __init__(self, engine: LocalEngine, clock: Clock, topics: TopicStates) -> None:
        self._engine = engine
        self._clock = clock
        self._topics = topics
        #: (topic, partition) whose floor may have moved since until-consumed retention last
        #: looked (the subscriptions' watches add to this very set).
        self.floors_moved: set[tuple[str, int]] = set()
        #: When each subscription next has something due; the tick visits only those.
        self._timers: Timers[Key] = Timers()
        #: The subscription the tick is visiting: its own reports wait for its ``tick()``'s
        #: answer, which counts them all.
        self._visiting: Key | None = None
        #: Subscriptions that said their journal is due a snapshot (``journals_due``).
        self._snapshots_due: set[Key] = set()
        #: Set to a Counter, it counts the tick's visits per subscription (tests; off by
        #: default, so that production keeps nothing per subscription for it).
        self.visits: Counter[Key] | None = None
        #: Topics with a quarantined subscription, so that listing them costs the damaged.
        self._damaged_topics: set[str] = set()
        #: Dead-letter topic -> the subscriptions that dead-letter into it.
        self._dead_letter_users: dict[str, set[Key]] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def open(self, spec: SubscriptionSpec) -> None:
        """Serve ``spec`` (committed in the catalog): resume it from its journal, or
        quarantine it if that journal is damaged."""
        journal = self._engine.journal(spec.journal, f"subscription {spec.topic}/{spec.name}")
        state = self._topics.of(spec.topic)
        try:
            sub = open_subscription(spec, self._engine, journal, self._clock)
        except PartitionQuarantined as e:
            # Its journal is damaged: this subscription is out of service, nothing else is.
            state.quarantined[spec.name] = e.damage
            self._damaged_topics.add(spec.topic)
            return
        except CorruptState as e:
            # Intact bytes (the CRCs hold) that are no state entry: as out of service.
            state.quarantined[spec.name] = str(e)
            self._damaged_topics.add(spec.topic)
            return
        key = (spec.topic, spec.name)
        sub.watch(self._floor_watch(spec.topic), self._deadline_watch(key),
                  self._snapshot_watch(key))  # fmt: skip
        state.subscriptions[spec.name] = sub
        if sub.dead_letter is not None:
            self._dead_letter_users.setdefault(sub.dead_letter.name, set()).add(key)
        # What it restored (retries due, a dead letter to finish) is looked at once.
        self._timers.schedule(key, self._clock.now_ms())

    def forget(self, topic: str, name: str) -> None:
        """Stop serving a subscription (deleted), quarantined or not."""
        state = self._topics.get(topic)
        if state is not None:
            sub = state.subscriptions.pop(name, None)
            if sub is not None and sub.dead_letter is not None:
                users = self._dead_letter_users.get(sub.dead_letter.name, set())
                users.discard((topic, name))
                if not users:
                    self._dead_letter_users.pop(sub.dead_letter.name, None)
            state.quarantined.pop(name, None)
            if not state.quarantined:
                self._damaged_topics.discard(topic)
        self._timers.cancel((topic, name))

    def exists(self, topic: str, name: str) -> bool:
        """Serving or quarantined."""
        state = self._topics.get(topic)
        return state is not None and (name in state.subscriptions or name in state.quarantined)

    def _floor_watch(self, topic: str) -> Callable[[int], None]:
        moved = self.floors_moved

        def floor_may_have_moved(partition: int) -> None:
            moved.add((topic, partition))

        return floor_may_have_moved

    def _deadline_watch(self, key: Key) -> Callable[[int], None]:
        def deadline(deadline_ms: int) -> None:
            if self._visiting != key:
                self._timers.schedule(key, deadline_ms)

        return deadline

    def _snapshot_watch(self, key: Key) -> Callable[[], None]:
        def snapshot_due() -> None:
            self._snapshots_due.add(key)

        return snapshot_due

    # -- finding --------------------------------------------------------------------------

    def find(self, topic: str, name: str) -> Subscription | None:
        state = self._topics.get(topic)
        return None if state is None else state.subscriptions.get(name)

    def dead_letter_users(self, topic: str) -> list[Subscription]:
        """The serving subscriptions that dead-letter into ``topic``."""
        users = sorted(self._dead_letter_users.get(topic, ()))
        return [sub for key in users if (sub := self.find(*key)) is not None]

    def all(self) -> list[Subscription]:
        return [sub for state in self._topics for sub in state.subscriptions.values()]

    def require(self, topic: str, name: str) -> Subscription:
        """The subscription ``name`` on ``topic``, in any mode; ``UnknownTopic``,
        ``SubscriptionQuarantined`` or ``UnknownSubscription`` when it cannot serve."""
        sub = self.find(topic, name)
        if sub is None:
            self._engine.topic(topic)  # UnknownTopic first, when it is the topic that is missing
            self._check_quarantine(topic, name)
            raise UnknownSubscription(topic, name)
        return sub

    def queue(self, topic: str, name: str) -> QueueSubscription:
        """A `queue` or `keyed` subscription: receive, ack, nack, extend on it."""
        sub = self.require(topic, name)
        if not isinstance(sub, QueueSubscription):
            raise InvalidRequest(f"{topic!r}/{name!r} is a stream: fetch and commit instead")
        return sub

    def stream(self, topic: str, name: str) -> StreamSubscription:
        """A `stream` subscription: join, fetch, commit, seek on it."""
        sub = self.require(topic, name)
        if not isinstance(sub, StreamSubscription):
            mode = sub.spec.mode
            raise InvalidRequest(f"{topic!r}/{name!r} is a {mode} subscription: receive it")
        return sub

    def _check_quarantine(self, topic: str, name: str) -> None:
        state = self._topics.get(topic)
        damage = None if state is None else state.quarantined.get(name)
        if damage is not None:
            raise SubscriptionQuarantined(topic, name, damage)

    def quarantined(self) -> dict[Key, str]:
        """(topic, subscription) -> the damage, for each subscription out of service."""
        found: dict[Key, str] = {}
        for topic in self._damaged_topics:
            state = self._topics.get(topic)
            for name, damage in state.quarantined.items() if state is not None else ():
                found[(topic, name)] = damage
        return found

    # -- time and journals ----------------------------------------------------------------

    def tick(
        self, now_ms: int, on_dead_letters: Callable[[Topic], None]
    ) -> tuple[list[PendingDeadLetter], set[str]]:
        """Visit the subscriptions whose deadline has come: the dead-letter appends to await,
        and the topics visited or dead-lettered into. ``on_dead_letters`` hears of each
        dead-letter topic a visited subscription may have appended to."""
        pending: list[PendingDeadLetter] = []
        topics: set[str] = set()
        due = self._timers.due(now_ms)
        for i, key in enumerate(due):
            sub = self.find(*key)
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
            if sub.dead_letter is not None:
                topics.add(sub.dead_letter.name)  # it may have appended dead letters there
                on_dead_letters(sub.dead_letter)
                if sub.pending_dead_letters:
                    pending += sub.pending_dead_letters
                    deadline = now_ms  # the host awaits them, then ticks: settle them then
            if deadline is not None:
                self._timers.schedule(key, deadline)
        return pending, topics

    def next_deadline_ms(self) -> int | None:
        return self._timers.next_deadline_ms()

    def journals_due(self) -> list[Subscription]:
        """The subscriptions whose journal is due a snapshot (for the host), found without
        looking at the others: each says when it becomes due, and stays listed until it is
        not (a failed journal waits for its repair, and is listed until then)."""
        due: list[Subscription] = []
        for key in list(self._snapshots_due):
            sub = self.find(*key)
            if sub is None or not sub.snapshot_due:
                self._snapshots_due.discard(key)
            else:
                due.append(sub)
        return due
