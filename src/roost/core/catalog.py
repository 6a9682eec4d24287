"""What the broker has defined, kept in the storage engine's metadata store.

Namespaces: ``subscriptions`` (``<topic>/<name>`` -> ``SubscriptionSpec``), ``exchanges``,
``bindings`` (exchange name -> its bindings, as the router lists them), ``topic_policies``
(topic -> ``TopicPolicy``, only where not the default) and ``counters``. Each
change is one metadata transaction, so a crash leaves a definition wholly there or wholly absent.
"""

from __future__ import annotations

import msgspec

from roost.core.model import SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.storage.metadata import MetadataStore

SUBSCRIPTIONS = "subscriptions"
EXCHANGES = "exchanges"
BINDINGS = "bindings"
COUNTERS = "counters"
POLICIES = "topic_policies"
PRODUCER_JOURNALS = "producer_journals"


def subscription_id(topic: str, name: str) -> str:
    return f"{topic}/{name}"


class Catalog:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata

    def subscriptions(self) -> list[SubscriptionSpec]:
        return [
            msgspec.convert(self._metadata.get(SUBSCRIPTIONS, name), SubscriptionSpec)
            for name in self._metadata.names(SUBSCRIPTIONS)
        ]

    def subscription(self, topic: str, name: str) -> SubscriptionSpec | None:
        stored = self._metadata.get(SUBSCRIPTIONS, subscription_id(topic, name))
        return None if stored is None else msgspec.convert(stored, SubscriptionSpec)

    def add_subscription(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        """Persist ``spec`` with a fresh journal name; returns the spec as stored."""
        with self._metadata.transaction() as txn:
            number = (txn.get(COUNTERS, "journals") or 0) + 1
            txn.put(COUNTERS, "journals", number)
            stored = msgspec.structs.replace(spec, journal=f"sub-{number}")
            txn.put(
                SUBSCRIPTIONS, subscription_id(spec.topic, spec.name), msgspec.to_builtins(stored)
            )
        return stored

    def journal_owners(self) -> dict[str, str]:
        """Journal name -> whom it serves, in words, for reports (``roost check``)."""
        owners = {
            spec.journal: f"subscription {spec.topic}/{spec.name}" for spec in self.subscriptions()
        }
        for topic in self._metadata.names(PRODUCER_JOURNALS):
            owners[str(self._metadata.get(PRODUCER_JOURNALS, topic))] = (
                f"producer state of topic {topic}"
            )
        return owners

    def topics_with_producer_state(self) -> list[str]:
        """Topics whose producer state has a journal (named by ``producer_journal``)."""
        return [str(topic) for topic in self._metadata.names(PRODUCER_JOURNALS)]

    def producer_journal(self, topic: str) -> str:
        """The journal of ``topic``'s producer and dedup state, named on first use."""
        name = self._metadata.get(PRODUCER_JOURNALS, topic)
        if name is not None:
            return str(name)
        with self._metadata.transaction() as txn:
            number = (txn.get(COUNTERS, "journals") or 0) + 1
            txn.put(COUNTERS, "journals", number)
            txn.put(PRODUCER_JOURNALS, topic, f"producers-{number}")
        return f"producers-{number}"

    def remove_subscription(self, topic: str, name: str) -> str:
        """Remove a subscription's definition; the name of the journal it had ("" if none)."""
        key = subscription_id(topic, name)
        stored = self._metadata.get(SUBSCRIPTIONS, key)
        with self._metadata.transaction() as txn:
            txn.delete(SUBSCRIPTIONS, key)
        return str(stored.get("journal", "")) if isinstance(stored, dict) else ""

    def exchanges(self) -> list[ExchangeSpec]:
        return [
            msgspec.convert(self._metadata.get(EXCHANGES, name), ExchangeSpec)
            for name in self._metadata.names(EXCHANGES)
        ]

    def bindings(self) -> list[BindingSpec]:
        return [
            msgspec.convert(binding, BindingSpec)
            for name in self._metadata.names(BINDINGS)
            for binding in self._metadata.get(BINDINGS, name)
        ]

    def save_exchange(self, spec: ExchangeSpec) -> None:
        with self._metadata.transaction() as txn:
            txn.put(EXCHANGES, spec.name, msgspec.to_builtins(spec))

    def remove_exchange(self, name: str) -> None:
        with self._metadata.transaction() as txn:
            txn.delete(EXCHANGES, name)
            txn.delete(BINDINGS, name)

    def save_bindings(self, exchange: str, bindings: list[BindingSpec]) -> None:
        """Replace every binding of ``exchange`` with ``bindings``."""
        with self._metadata.transaction() as txn:
            txn.put(BINDINGS, exchange, [msgspec.to_builtins(b) for b in bindings])

    def policies(self) -> dict[str, TopicPolicy]:
        return {
            topic: msgspec.convert(self._metadata.get(POLICIES, topic), TopicPolicy)
            for topic in self._metadata.names(POLICIES)
        }

    def save_policy(self, topic: str, policy: TopicPolicy) -> None:
        with self._metadata.transaction() as txn:
            txn.put(POLICIES, topic, msgspec.to_builtins(policy))

    def remove_policy(self, topic: str) -> None:
        with self._metadata.transaction() as txn:
            txn.delete(POLICIES, topic)

    def forget_topic(self, topic: str) -> str:
        """A deleted topic's producer journal name goes; a new topic of that name starts
        afresh. The name it had ("" if none)."""
        name = self._metadata.get(PRODUCER_JOURNALS, topic)
        with self._metadata.transaction() as txn:
            txn.delete(PRODUCER_JOURNALS, topic)
        return "" if name is None else str(name)
