"""Producer sequences and the dedup window against a model (roost.core.producers), by hypothesis.

The machine plays the broker on a topic of two partitions: idempotent batches (new, retries of
recent batches, gaps, stale sequences) from a few producers, publishes of records carrying dedup
ids from a small pool (so that ids repeat), clock advances short and long, snapshots, crashes
(restore the last snapshot and replay the journal after it, sometimes cutting a partition's tail
as recovery would) — with small bounds so that expiry and eviction happen often.

The model is plain dicts in insertion order: producer -> (next sequence, last batches, last
used) per partition, and dedup id -> (remembered at, placement). After every step every
producer's expected sequence appends, each of its last batches is a Duplicate with its offsets,
and every id in the pool is seen exactly where the model says.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from roost.clock import ManualClock
from roost.core.producers import (
    APPEND,
    BATCHES_PER_PRODUCER,
    MIN_PRODUCER_EXPIRY_MS,
    Duplicate,
    Placement,
    ProducerState,
)
from roost.errors import InvalidRequest

PARTITIONS = 2
PRODUCERS = ["a", "b", "c", "d"]
IDS = [f"id-{n}" for n in range(12)]
WINDOW_MS = 10_000
EXPIRY_MS = MIN_PRODUCER_EXPIRY_MS
LIMITS = {
    "window_ms": WINDOW_MS,
    "max_dedup_ids": 6,
    "producer_expiry_ms": EXPIRY_MS,
    "max_producers": 3,
}

Batch = tuple[int, int, int]  # first sequence, count, base offset


class ModelProducer:
    def __init__(self) -> None:
        self.next_sequence = 0
        self.batches: list[Batch] = []
        self.last_used_ms = 0


class DedupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.state = ProducerState("t", self.clock, **LIMITS)
        self.ends = [0] * PARTITIONS
        self.snapshot: bytes | None = None
        self.journal: list[bytes] = []  # entries after the snapshot
        self.producers: list[dict[str, ModelProducer]] = [{} for _ in range(PARTITIONS)]
        self.ids: dict[str, tuple[int, Placement]] = {}

    # -- the model ------------------------------------------------------------------------------

    def live_producers(self, partition: int) -> dict[str, ModelProducer]:
        now = self.clock.now_ms()
        table = self.producers[partition]
        for pid in [p for p, m in table.items() if now >= m.last_used_ms + EXPIRY_MS]:
            del table[pid]
        return table

    def live_ids(self) -> dict[str, tuple[int, Placement]]:
        now = self.clock.now_ms()
        for dedup_id in [d for d, (at, _) in self.ids.items() if now >= at + WINDOW_MS]:
            del self.ids[dedup_id]
        return self.ids

    def model_record(self, pid: str, partition: int, first: int, count: int, base: int) -> None:
        table = self.live_producers(partition)
        producer = table.pop(pid, None) or ModelProducer()
        producer.batches = [*producer.batches, (first, count, base)][-BATCHES_PER_PRODUCER:]
        producer.next_sequence = first + count
        producer.last_used_ms = self.clock.now_ms()
        table[pid] = producer
        while len(table) > LIMITS["max_producers"]:
            del table[next(iter(table))]

    def model_remember(self, dedup_id: str, placement: Placement) -> None:
        ids = self.live_ids()
        if dedup_id not in ids:
            ids[dedup_id] = (self.clock.now_ms(), placement)
            while len(ids) > LIMITS["max_dedup_ids"]:
                del ids[next(iter(ids))]

    def append(self, partition: int, count: int) -> int:
        base = self.ends[partition]
        self.ends[partition] += count
        return base

    def journaled(self, entry: bytes, via_entry: bool) -> None:
        self.journal.append(entry)
        if via_entry:
            self.state.apply(entry)

    # -- rules ----------------------------------------------------------------------------------

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        kind=st.sampled_from(["next", "next", "retry", "gap", "stale", "fresh"]),
        pick=st.integers(0, 10),
        count=st.integers(1, 3),
        via_entry=st.booleans(),
    )
    def produce(
        self, pid: str, partition: int, kind: str, pick: int, count: int, via_entry: bool
    ) -> None:
        producer = self.live_producers(partition).get(pid)
        expected = producer.next_sequence if producer else 0
        batches = producer.batches if producer else []
        if kind == "retry" and batches:
            first, count, _ = batches[pick % len(batches)]
        elif kind == "gap":
            first = expected + 1 + pick
        elif kind == "stale" and expected:
            first = pick % expected
        elif kind == "fresh":
            first = pick  # what a producer the broker forgot might send
        else:
            first = expected
        known = {(f, c): base for f, c, base in batches}
        try:
            decision = self.state.check(pid, partition, first, count)
        except InvalidRequest as e:
            assert first != expected
            assert (first, count) not in known
            assert f"expected sequence {expected}, got {first} " in str(e)
            return
        if first != expected:
            assert decision == Duplicate(known[first, count], count)
            return
        assert decision is APPEND
        base = self.append(partition, count)
        entry = self.state.entry(partition, base, count, producer_id=pid, first_sequence=first)
        if not via_entry:
            self.state.record(pid, partition, first, count, base)
        self.journaled(entry, via_entry)
        self.model_record(pid, partition, first, count, base)

    @rule(
        partition=st.integers(0, PARTITIONS - 1),
        ids=st.lists(st.none() | st.sampled_from(IDS), min_size=1, max_size=4),
        via_entry=st.booleans(),
    )
    def publish(self, partition: int, ids: list[str | None], via_entry: bool) -> None:
        """Records with dedup ids: the seen ones are confirmed again, the rest appended."""
        fresh: list[str | None] = []
        for dedup_id in ids:
            if dedup_id is None:
                fresh.append(None)
                continue
            placed = self.state.seen(dedup_id)
            model = self.live_ids().get(dedup_id)
            assert placed == (model[1] if model else None)
            if placed is None and dedup_id not in fresh:  # the broker collapses a batch's own
                fresh.append(dedup_id)
        if not fresh:
            return
        base = self.append(partition, len(fresh))
        entry = self.state.entry(partition, base, len(fresh), dedup_ids=fresh)
        for i, dedup_id in enumerate(fresh):
            if dedup_id is not None:
                if not via_entry:
                    self.state.remember(dedup_id, partition, base + i)
                self.model_remember(dedup_id, Placement(partition, base + i))
        self.journaled(entry, via_entry)

    @rule(ms=st.integers(0, 3_000) | st.integers(WINDOW_MS - 1, WINDOW_MS + 1) | st.just(EXPIRY_MS))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def snapshot_now(self) -> None:
        self.snapshot = self.state.export()
        self.journal = []

    @rule(cut=st.none() | st.tuples(st.integers(0, PARTITIONS - 1), st.integers(1, 4)))
    def crash(self, cut: tuple[int, int] | None) -> None:
        """Restart from the snapshot and the journal; recovery may cut a partition's tail."""
        self.state = ProducerState("t", self.clock, **LIMITS)
        if self.snapshot is not None:
            self.state.restore(self.snapshot)
        for entry in self.journal:
            self.state.apply(entry)
        if cut is not None:
            partition, records = cut
            self.ends[partition] = end = max(0, self.ends[partition] - records)
            self.state.truncate(partition, end)
            self.model_truncate(partition, end)
            self.snapshot_now()  # as the module asks: entries about cut offsets never replay

    def model_truncate(self, partition: int, end: int) -> None:
        table = self.live_producers(partition)
        for pid, producer in list(table.items()):
            while producer.batches and sum(producer.batches[-1][1:]) > end:
                producer.next_sequence = producer.batches.pop()[0]
            if producer.next_sequence == 0:
                del table[pid]
        for dedup_id, (_, placed) in list(self.live_ids().items()):
            if placed.partition == partition and placed.offset >= end:
                del self.ids[dedup_id]

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def producers_agree(self) -> None:
        for partition in range(PARTITIONS):
            table = self.live_producers(partition)
            assert self.state.tracked_producers(partition) == len(table)
            for pid in PRODUCERS:
                producer = table.get(pid)
                expected = producer.next_sequence if producer else 0
                assert self.state.check(pid, partition, expected, 1) is APPEND
                for first, count, base in producer.batches if producer else []:
                    assert self.state.check(pid, partition, first, count) == Duplicate(base, count)

    @invariant()
    def ids_agree(self) -> None:
        ids = self.live_ids()
        assert self.state.tracked_dedup_ids() == len(ids)
        for dedup_id in IDS:
            model = ids.get(dedup_id)
            assert self.state.seen(dedup_id) == (model[1] if model else None)


DedupMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestDedupWindow = DedupMachine.TestCase
