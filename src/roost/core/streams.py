"""A `stream` subscription: a consumer group that reads partitions in order and commits offsets.

    stream = StreamSubscription.open(spec, topic, journal, clock)
    member = stream.join()                                  # the broker assigns partitions
    records = stream.fetch(member.member_id, member.generation, max_records=500)
    stream.commit(member.member_id, member.generation, {0: records[-1].offset + 1})

Rules:

- Membership and assignment are the ``ConsumerGroup``'s (balanced, sticky, fenced by
  generation). Only the owner of a partition, in the current generation, may commit it.
- A committed offset is the next offset to read, as in Kafka. Commits go through the state
  journal; membership does not (members rejoin after a restart).
- Each owned partition has a fetch position. It starts at the committed offset when a member
  gets the partition, moves forward as the member fetches, and moves anywhere with ``seek``
  (to an offset, a timestamp, the earliest or the latest). Positions are not persisted: after
  a restart or a rebalance, reading resumes from the last commit (at-least-once).
- An operator may ``reset`` committed offsets (to an offset, a time, the earliest or the
  latest), but only while the group has no members, as Kafka asks: a member reading on would
  commit over the reset. ``purge`` commits at the end with or without members.
- A new subscription's committed offsets start at ``spec.start``: the log's end ("latest") or
  its start ("earliest"), recorded in the journal so the choice survives restarts.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from roost.clock import Clock
from roost.core import state_codec
from roost.core.groups import ConsumerGroup, Membership
from roost.core.inspection import Peeked, peek_stream
from roost.core.model import Message, SubscriptionSpec
from roost.core.stats import StreamStats, stream_stats
from roost.core.subscription import PendingDeadLetter
from roost.errors import GroupActive, InvalidRequest, OffsetOutOfRange
from roost.storage import Journal, Topic
from roost.storage.log import PartitionLog

SeekTarget = int | Literal["earliest", "latest"]


class AtTime(NamedTuple):
    """A reset target: the first record at or after ``timestamp_ms`` (ms since the epoch)."""

    timestamp_ms: int


ResetTarget = SeekTarget | AtTime


class FetchedBatches(NamedTuple):
    """One partition's share of ``fetch_batches``: the records ``[first_offset, next_offset)``,
    as the stored batches that hold them (``data``, whole and CRC-verified: it may begin below
    ``first_offset`` and end past ``next_offset``; the reader skips those records)."""

    partition: int
    first_offset: int
    next_offset: int
    data: bytes


class StreamSubscription:
    def __init__(
        self,
        spec: SubscriptionSpec,
        topic: Topic,
        journal: Journal,
        clock: Clock,
        committed: dict[int, int],
    ) -> None:
        self.spec = spec
        self.topic = topic
        self.journal = journal
        #: A stream never dead-letters: a member that cannot handle a record decides.
        self.dead_letter: Topic | None = None
        self.group = ConsumerGroup(spec.name, len(topic.partitions), clock)
        self._clock = clock
        self.committed = committed
        # partition -> (owner, handovers when the position was set, next offset)
        self._positions: dict[int, tuple[str, int, int]] = {}
        #: Per partition, records fetched since the process started (for /metrics; refetches
        #: after a seek or a rebalance count again).
        self.delivered = [0] * len(topic.partitions)
        #: Per member, the last partition a fetch returned records of: its next fetch starts
        #: after it, so that a busy partition does not starve the member's others.
        self._last_served: dict[str, int] = {}
        self._entries_since_snapshot = 0
        self._on_commit: Callable[[int], None] = _ignore
        self._on_deadline: Callable[[int], None] = _ignore
        self._on_snapshot_due: Callable[[], None] = _nobody

    def watch(
        self,
        on_commit: Callable[[int], None],
        on_deadline: Callable[[int], None],
        on_snapshot_due: Callable[[], None],
    ) -> None:
        """Tell ``on_commit`` each partition whose committed offset moved (retention may delete
        more), ``on_deadline`` a session deadline that may be earlier than the last ``tick``
        returned (a member joined), and ``on_snapshot_due`` when ``snapshot_due`` becomes
        true."""
        self._on_commit = on_commit
        self._on_deadline = on_deadline
        self._on_snapshot_due = on_snapshot_due

    @classmethod
    def open(
        cls, spec: SubscriptionSpec, topic: Topic, journal: Journal, clock: Clock
    ) -> StreamSubscription:
        snapshot, entries = journal.recover()
        partitions = len(topic.partitions)
        if snapshot is None and not entries:
            entries = [
                state_codec.committed(p, _start(topic, p, spec.start)) for p in range(partitions)
            ]
            journal.append(entries)
        states = state_codec.replay(snapshot, entries, partitions)
        committed = {p: state.committed or 0 for p, state in states.items()}
        return cls(spec, topic, journal, clock, committed)

    # -- membership -----------------------------------------------------------------------

    def join(self, member_id: str | None = None, client: str = "") -> Membership:
        membership = self.group.join(member_id, client)
        deadline = self.next_deadline_ms()
        if deadline is not None:
            self._on_deadline(deadline)
        return membership

    def heartbeat(self, member_id: str, generation: int) -> Membership:
        return self.group.heartbeat(member_id, generation)

    def leave(self, member_id: str) -> None:
        self.group.leave(member_id)
        self._last_served.pop(member_id, None)

    # -- reading --------------------------------------------------------------------------

    def fetch(
        self,
        member_id: str,
        generation: int,
        max_records: int = 500,
        max_bytes: int = 1024 * 1024,
    ) -> list[Message]:
        """The next records of the member's partitions, in order per partition.

        Partitions are visited from the one after the last that returned records, so a busy
        partition does not starve the others.
        """
        if type(max_records) is not int or max_records < 1:
            raise InvalidRequest(f"max_records must be a positive int, not {max_records!r}")
        membership = self.group.heartbeat(member_id, generation)
        messages: list[Message] = []
        for partition in self._rotation(member_id, membership.partitions):
            if len(messages) >= max_records:
                break
            fetched = self._fetch_partition(
                member_id, partition, max_records - len(messages), max_bytes
            )
            if fetched:
                messages += fetched
                self._last_served[member_id] = partition
        return messages

    def _rotation(self, member_id: str, partitions: tuple[int, ...]) -> list[int]:
        """``partitions`` (sorted) from the one after the last that returned records."""
        last = self._last_served.get(member_id)
        if last is None:
            return list(partitions)
        after = bisect.bisect_right(partitions, last)
        return [*partitions[after:], *partitions[:after]]

    def _fetch_partition(
        self, member_id: str, partition: int, limit: int, max_bytes: int
    ) -> list[Message]:
        log = self.topic.log(partition)
        if log.quarantined:
            return []  # out of service (damage on disk); the member's other partitions serve
        position = self.position(member_id, partition)
        readable = log.confirmed_offset
        position = max(position, log.start_offset)
        if position >= readable:
            return []
        records = log.read(
            position, max_bytes=max_bytes, max_records=min(limit, readable - position)
        )
        if records and records[-1].offset >= readable:  # read on past a gap batch
            records = [r for r in records if r.offset < readable]
        if records:
            self._set_position(member_id, partition, records[-1].offset + 1)
            self.delivered[partition] += len(records)
        else:  # only gap batches (storage/batch.py) below what is readable
            self._set_position(member_id, partition, readable)
        return [
            Message(
                self.spec.topic, partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers, 1
            )
            for r in records
        ]

    def fetch_batches(
        self,
        member_id: str,
        generation: int,
        max_records: int = 500,
        max_bytes: int = 1024 * 1024,
    ) -> list[FetchedBatches]:
        """What ``fetch`` would return, as stored batches: no record is decoded here.

        The member's position moves exactly as with ``fetch``. ``max_bytes`` bounds the whole
        answer (each partition read gets what the ones before it left, and at least one batch).
        """
        if type(max_records) is not int or max_records < 1:
            raise InvalidRequest(f"max_records must be a positive int, not {max_records!r}")
        membership = self.group.heartbeat(member_id, generation)
        fetched: list[FetchedBatches] = []
        records = size = 0
        for partition in self._rotation(member_id, membership.partitions):
            if records >= max_records or size >= max_bytes:
                break
            log = self.topic.log(partition)
            if log.quarantined:
                continue  # out of service (damage on disk); the other partitions serve
            position = max(self.position(member_id, partition), log.start_offset)
            raw = log.read_batches(
                position, max_bytes - size, max_records - records, log.confirmed_offset
            )
            if raw.next_offset > position:
                self._set_position(member_id, partition, raw.next_offset)
                if raw.next_offset > raw.first_offset:  # else a gap only: nothing to send
                    fetched.append(
                        FetchedBatches(partition, raw.first_offset, raw.next_offset, raw.data)
                    )
                    self._last_served[member_id] = partition
                count = raw.next_offset - raw.first_offset
                self.delivered[partition] += count
                records += count
                size += len(raw.data)
        return fetched

    def position(self, member_id: str, partition: int) -> int:
        """Where ``member_id`` reads ``partition`` next: its own position if the partition has
        been its own ever since, else the commit (a partition that went to another member and
        came back resumes from the commit, as in Kafka)."""
        owner, handovers, offset = self._positions.get(partition, ("", -1, -1))
        if owner == member_id and handovers == self.group.handovers(partition):
            return offset
        return self.committed[partition]

    def _set_position(self, member_id: str, partition: int, offset: int) -> None:
        self._positions[partition] = (member_id, self.group.handovers(partition), offset)

    def seek(self, member_id: str, generation: int, partition: int, to: SeekTarget) -> int:
        """Move the member's position on a partition it owns; returns the new position."""
        self.group.check_owner(member_id, generation, partition)
        log = self.topic.log(partition)
        if to == "earliest":
            offset = log.start_offset
        elif to == "latest":
            offset = log.end_offset
        elif type(to) is int and log.start_offset <= to <= log.end_offset:
            offset = to
        else:
            raise OffsetOutOfRange(
                self.spec.topic, partition, to if type(to) is int else -1,
                log.start_offset, log.end_offset,
            )  # fmt: skip
        self._set_position(member_id, partition, offset)
        return offset

    def seek_to_timestamp(
        self, member_id: str, generation: int, partition: int, timestamp_ms: int
    ) -> int:
        """Position at the first record with a timestamp >= ``timestamp_ms`` (else the end)."""
        self.group.check_owner(member_id, generation, partition)
        log = self.topic.log(partition)
        offset = log.offset_for_timestamp(timestamp_ms)
        return self.seek(
            member_id, generation, partition, log.end_offset if offset is None else offset
        )

    # -- committing -----------------------------------------------------------------------

    def commit(self, member_id: str, generation: int, offsets: dict[int, int]) -> None:
        """Record, for each partition, the next offset to read; only its owner may."""
        for partition, offset in offsets.items():
            self.group.check_owner(member_id, generation, partition)
            log = self.topic.log(partition)
            if type(offset) is not int or not log.start_offset <= offset <= log.end_offset:
                raise OffsetOutOfRange(
                    self.spec.topic, partition, offset, log.start_offset, log.end_offset
                )
        entries = []
        for partition, offset in offsets.items():
            self.committed[partition] = offset
            entries.append(state_codec.committed(partition, offset))
            self._on_commit(partition)
        if entries:
            self.journal.append(entries)
            self._journaled(len(entries))

    def force_commit(self, partition: int, offset: int) -> None:
        """Move the committed offset without an owner: the broker dropping old messages."""
        self.committed[partition] = offset
        owner, handovers, position = self._positions.get(partition, ("", -1, -1))
        if position < offset:
            self._positions[partition] = (owner, handovers, offset)
        self.journal.append([state_codec.committed(partition, offset)])
        self._journaled(1)
        self._on_commit(partition)

    def drop_below(self, partition: int, offset: int) -> int:
        """Commit at ``offset`` if the group is below it (overflow ``drop_oldest``); returns
        how many records that skipped."""
        committed = self.committed[partition]
        if committed >= offset:
            return 0
        self.force_commit(partition, offset)
        return offset - committed

    def purge(self) -> int:
        """Commit every partition at its confirmed end, as if the group had read everything
        published so far; returns how many records it skipped."""
        skipped = 0
        for partition, log in enumerate(self.topic.partitions):
            end = log.confirmed_offset
            if self.committed[partition] < end:
                skipped += end - max(self.committed[partition], log.start_offset)
                self.force_commit(partition, end)
        return skipped

    def reset(self, to: ResetTarget, partitions: Sequence[int] | None = None) -> dict[int, int]:
        """Move the committed offsets of ``partitions`` (default: all) while the group is empty.

        ``to`` is an offset, ``"earliest"``, ``"latest"`` or ``AtTime(timestamp_ms)`` (the first
        record at or after it, else the end). Every target is checked before anything moves;
        returns the new committed offset per partition. ``GroupActive`` if the group has
        members: a member reading on would commit over the reset.
        """
        members = self.group.members()
        if members:
            raise GroupActive(self.spec.name, len(members))
        chosen = range(len(self.topic.partitions)) if partitions is None else partitions
        offsets = {p: self._reset_offset(p, to) for p in chosen}
        for partition, offset in offsets.items():
            self.committed[partition] = offset
            self._positions.pop(partition, None)
            self._on_commit(partition)
        if offsets:
            entries = [state_codec.committed(p, o) for p, o in offsets.items()]
            self.journal.append(entries)
            self._journaled(len(entries))
        return offsets

    def _reset_offset(self, partition: int, to: ResetTarget) -> int:
        log = self.topic.log(partition)
        if isinstance(to, AtTime):
            found = log.offset_for_timestamp(to.timestamp_ms)
            return log.end_offset if found is None else found
        if to == "earliest":
            return log.start_offset
        if to == "latest":
            return log.end_offset
        if type(to) is int and log.start_offset <= to <= log.end_offset:
            return to
        offset = to if type(to) is int else -1
        raise OffsetOutOfRange(self.spec.topic, partition, offset, log.start_offset, log.end_offset)

    # -- time and state -------------------------------------------------------------------

    def tick(self) -> int | None:
        """Expire silent members; the next session deadline on the wall clock (ms)."""
        for member_id in self.group.expire():
            self._last_served.pop(member_id, None)
        return self.next_deadline_ms()

    def next_deadline_ms(self) -> int | None:
        """When ``tick`` may next expire a member (wall clock, ms), None without members."""
        deadline = self.group.next_deadline_ms()
        if deadline is None:
            return None
        # ``expire`` removes a member once the monotonic clock is past its deadline.
        return self._clock.now_ms() + max(0, deadline + 1 - self._clock.monotonic_ms())

    def lag(self) -> dict[int, int]:
        """Per partition: records after the committed offset."""
        return {
            p: max(0, log.end_offset - max(self.committed[p], log.start_offset))
            for p, log in enumerate(self.topic.partitions)
        }

    # -- the broker's view (core/delivery_modes.py) ----------------------------------------

    def floor(self, partition: int) -> int:
        """The committed offset: the group is done with everything below it."""
        return self.committed[partition]

    def unconsumed(self, partition: int) -> int:
        return self.topic.log(partition).end_offset - self.committed[partition]

    def seen_ends(self) -> list[int]:
        """The committed offsets: a group has seen what it committed past."""
        return [self.committed[p] for p in range(len(self.topic.partitions))]

    def skip(self, partition: int, start: int, end: int) -> None:
        """A gap batch needs nothing of a group: it reads on from its commit, past the gap."""

    def announce_delays(
        self, partition: int, delays: list[tuple[int, int]]
    ) -> list[tuple[PartitionLog, int]]:
        """A stream reads delayed records in order, as it reads every other."""
        return []

    @property
    def pending_dead_letters(self) -> list[PendingDeadLetter]:
        return []

    def stats(self, now_ms: int) -> StreamStats:
        return stream_stats(self)

    def peek(self, now_ms: int, max_messages: int, partition: int | None) -> list[Peeked]:
        return peek_stream(self, max_messages, partition)

    def _journaled(self, entries: int) -> None:
        due_before = self.snapshot_due
        self._entries_since_snapshot += entries
        if not due_before and self.snapshot_due:
            self._on_snapshot_due()

    @property
    def snapshot_due(self) -> bool:
        return self._entries_since_snapshot >= state_codec.SNAPSHOT_EVERY

    def snapshot(self) -> bytes:
        self._entries_since_snapshot = 0
        return state_codec.snapshot([], self.committed)


def _start(topic: Topic, partition: int, start: str) -> int:
    log = topic.log(partition)
    return log.confirmed_offset if start == "latest" else log.start_offset


def _ignore(value: int) -> None:
    """Nobody watches this subscription (used on its own, as in tests)."""


def _nobody() -> None:
    """Nobody watches for this subscription's snapshots."""
