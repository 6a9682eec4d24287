"""What the broker keeps per topic: its subscriptions and its policy.

    state = topics.of("emails")             # made on first use
    state.subscriptions["workers"]          # every mode, as a ``Subscription``
    floor = state.floor(partition)          # the slowest subscription's position

Whatever a publish, a retention pass or a backpressure check asks about one topic costs that
topic's subscriptions, never the broker's: a topic's state is found by name, and holds its
own. (It is also the unit a clustered engine would hand from broker to broker: nothing here
refers to another topic.)

A topic's state exists while the broker keeps anything for it — a subscription (serving or
quarantined), a policy other than the default — and goes with the topic (``TopicStates.drop``).
Reads never make one: ``get`` answers None for a topic with nothing. (Producer state stays in
the broker's own map: the host snapshots it by walking only the topics that have any.)
"""

from __future__ import annotations

from collections.abc import Iterator

from roost.core.delivery_modes import Subscription
from roost.core.policies import DEFAULT_POLICY, TopicPolicy
from roost.storage.log import PartitionLog


class TopicState:
    def __init__(self, name: str, policy: TopicPolicy = DEFAULT_POLICY) -> None:
        self.name = name
        #: Backlog limits, overflow, until-consumed retention, dedup window (policies.py).
        self.policy = policy
        #: Whether ``policy`` is in the catalog (deleting the topic removes it there).
        self.policy_saved = False
        #: Name -> subscription, in any mode; the ones that serve.
        self.subscriptions: dict[str, Subscription] = {}
        #: Name -> the damage, for subscriptions whose journal or snapshot is damaged: out of
        #: service (``SubscriptionQuarantined``) while the topic and the others serve.
        self.quarantined: dict[str, str] = {}

    def floor(self, partition: int) -> int | None:
        """The slowest subscription's position on ``partition``: below it, everything is
        consumed. None without subscriptions."""
        subscriptions = self.subscriptions.values()
        return min((sub.floor(partition) for sub in subscriptions), default=None)

    def backlog(self, partition: int) -> int | None:
        """Messages of ``partition`` the slowest subscription has not consumed (acked, dead-
        lettered or committed past). None without subscriptions."""
        subscriptions = self.subscriptions.values()
        return max((sub.unconsumed(partition) for sub in subscriptions), default=None)

    def drop_below(self, partition: int, offset: int) -> None:
        """Every subscription counts what is below ``offset`` as consumed (``drop_oldest``)."""
        for sub in self.subscriptions.values():
            sub.drop_below(partition, offset)

    def announce_delays(
        self, delays: dict[int, list[tuple[int, int]]]
    ) -> list[tuple[PartitionLog, int]]:
        """Partition -> ``(offset, visible_at_ms)`` of delayed records just published; returns
        what the publish's confirm must await besides its records."""
        durability: list[tuple[PartitionLog, int]] = []
        for sub in self.subscriptions.values():
            for partition, announced in delays.items():
                durability += sub.announce_delays(partition, announced)
        return durability


class TopicStates:
    """Topic name -> ``TopicState``, for the topics the broker keeps anything for."""

    def __init__(self) -> None:
        self._states: dict[str, TopicState] = {}

    def get(self, name: str) -> TopicState | None:
        return self._states.get(name)

    def of(self, name: str) -> TopicState:
        """The state of topic ``name`` (which must exist), made on first use."""
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = TopicState(name)
        return state

    def policy(self, name: str) -> TopicPolicy:
        state = self._states.get(name)
        return DEFAULT_POLICY if state is None else state.policy

    def drop(self, name: str) -> TopicState | None:
        return self._states.pop(name, None)

    def __iter__(self) -> Iterator[TopicState]:
        return iter(list(self._states.values()))
