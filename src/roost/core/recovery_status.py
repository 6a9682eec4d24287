"""What recovery did and what is out of service now: the startup log lines and the report.

Opening the data directory recovers every log (storage/recovery.py) and each subscription's
state journal (core/broker.py); what it found and did is in ``LocalEngine.recovery``, and
stays there while the broker runs (a partition quarantined later, by a read or the scrub,
shows in it too). This module turns that into:

- ``log_recovery``: one log line per action at startup (a cut, a dropped segment, a rebuilt
  index is not an action worth a line), at WARNING for what cost data and ERROR for what is out
  of service, so no recovery is ever silent;
- ``recovery_status``: the report served by the admin API (``GET /api/v1/recovery``),
  ``LogRecovery`` by ``LogRecovery``, encoded generically: a field added to ``LogRecovery``
  shows up there without a change here.
"""

from __future__ import annotations

import logging

import msgspec

from roost.core.broker import Broker
from roost.storage.recovery import LogRecovery

log = logging.getLogger("roost.recovery")


class QuarantinedSubscription(msgspec.Struct, frozen=True):
    topic: str
    subscription: str
    #: What is wrong with its state journal or snapshot.
    damage: str


class QuarantinedProducerState(msgspec.Struct, frozen=True):
    topic: str
    #: What is wrong with its journal or snapshot.
    damage: str


class RecoveryStatus(msgspec.Struct, frozen=True):
    #: Whether the last shutdown was clean (no tail to verify after it).
    clean_shutdown: bool
    #: Whether recovery cut or dropped anything.
    lost_data: bool
    #: Every log recovery opened (topic partitions, then state journals as opened), with every
    #: field ``LogRecovery`` has; ``quarantined`` is not empty for a log out of service.
    logs: list[LogRecovery]
    #: Topic directories without metadata that recovery removed (a crash mid-create).
    orphans_removed: list[str]
    #: "topic/partition" of each partition refusing reads and writes for damage.
    quarantined_partitions: list[str]
    #: Subscriptions out of service because their state is damaged.
    quarantined_subscriptions: list[QuarantinedSubscription]
    #: Topics whose producer state is damaged: idempotent and deduplicated publishes to them
    #: are refused (plain publishes and consumers serve).
    quarantined_producer_states: list[QuarantinedProducerState] = msgspec.field(
        default_factory=list
    )


def recovery_status(broker: Broker) -> RecoveryStatus:
    report = broker.engine.recovery
    partitions = [
        f"{log.topic}/{log.partition}"
        for name in broker.list_topics()
        for log in broker.engine.topic(name).partitions
        if log.quarantined
    ]
    subscriptions = [
        QuarantinedSubscription(topic, name, damage)
        for (topic, name), damage in sorted(broker.quarantined_subscriptions().items())
    ]
    producer_states = [
        QuarantinedProducerState(topic, damage)
        for topic, damage in sorted(broker.quarantined_producer_states().items())
    ]
    return RecoveryStatus(
        report.clean_shutdown,
        report.lost_data,
        list(report.logs),
        list(report.orphans_removed),
        partitions,
        subscriptions,
        producer_states,
    )


def log_recovery(status: RecoveryStatus) -> None:
    """One line per recovery action (see the module docstring)."""
    for recovered in status.logs:
        name = _name(recovered)
        for problem in recovered.problems:
            level = logging.ERROR if problem.startswith("quarantined") else logging.WARNING
            log.log(level, "recovery of %s: %s", name, problem)
    for orphan in status.orphans_removed:
        log.warning("recovery removed topic directory %r, which no metadata named", orphan)
    for sub in status.quarantined_subscriptions:
        log.error(
            "subscription %s/%s is out of service, its state is damaged: %s; the topic and "
            "other subscriptions serve (see `roost check`)",
            sub.topic, sub.subscription, sub.damage,
        )  # fmt: skip
    for state in status.quarantined_producer_states:
        log.error(
            "the producer state of topic %s is damaged: %s; idempotent and deduplicated "
            "publishes to it are refused, plain publishes and consumers serve (see `roost "
            "check`)",
            state.topic, state.damage,
        )  # fmt: skip
    if status.lost_data:
        log.warning("recovery cut data; GET /api/v1/recovery has the full report")


def _name(recovered: LogRecovery) -> str:
    if recovered.owner:
        return f"{recovered.owner} (journal {recovered.log})"
    return f"partition {recovered.log}"
