"""Gap batches: never reuse an offset a subscription or group has seen.

Where a log ends below an offset a subscription's journal names (recovery cut a torn tail, or
a power failure took an unsynced suffix while acks were journaled), the log's end moves past
that offset with a gap batch before anything is published. Reusing those offsets would hand
new records to journal state meant for the lost ones: a queue that counts them as acked never
delivers them, a group that committed past them skips them.

Each skip is written into the partition's recovery report (``log.recovery``), which the admin
API and ``roost check`` show: what was skipped and who had seen it, or why it could not be.
"""

from __future__ import annotations

import contextlib

from roost.core.delivery_modes import Subscription
from roost.core.producer_states import ProducerStates
from roost.errors import PartitionQuarantined, ProducerStateQuarantined, StorageFailure
from roost.storage import LocalEngine


def continue_past_seen(
    engine: LocalEngine,
    subscriptions: list[Subscription],
    producers: ProducerStates,
    only: str | None = None,
) -> None:
    """Write the gap batches ``subscriptions`` need (of topic ``only``, if given). Blocking
    (journal and log fsyncs): at open, and after a log is reopened by a repair."""
    seen: dict[tuple[str, int], list[tuple[int, Subscription]]] = {}
    for sub in subscriptions:
        for partition, end in enumerate(sub.seen_ends()):
            seen.setdefault((sub.spec.topic, partition), []).append((end, sub))
    for (name, partition), ends in sorted(seen.items(), key=lambda item: item[0]):
        if only is not None and name != only:
            continue
        topic = engine.topic(name)
        log = topic.log(partition)
        start = log.end_offset
        high = max(end for end, _ in ends)
        if high <= start or log.quarantined:
            # A quarantined log takes no write (its end may be short of the damage only);
            # once repaired, the next open skips what it must.
            continue
        who = sorted({sub.spec.name for end, sub in ends if end > start})
        try:
            with contextlib.suppress(ProducerStateQuarantined):
                # Damaged, it refuses idempotent and deduplicated publishes anyway; the gap
                # still goes in, or plain publishes would reuse the offsets.
                producers.of(topic)  # forgets the lost records' placements, durably
            if producers.is_damaged(name):
                log.recovery.problems.append(
                    f"offsets {start}..{high - 1} skipped while the producer state of topic "
                    f"{name} is quarantined: repair it by removing its journal (`roost "
                    "check` names it), not by cutting it, or a retry of a batch placed "
                    "there could be told it is stored"
                )
            for _, sub in ends:
                sub.skip(partition, start, high)
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
