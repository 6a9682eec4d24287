"""Power loss, through the fs seam: what was confirmed survives, byte for byte.

A SIGKILL (tests/crash) leaves every written page to the OS. A power cut is harsher: writes not
yet fsynced may be gone or torn, and directory changes not yet fsynced (a new segment, a
deleted one, a renamed snapshot) may be undone. ``PowerLossFS`` models exactly that, and these
tests drive the storage engine over it: random appends (durability ``always``: a flush that
returned confirms what it covered), rolls, deletions, journal entries and snapshots, metadata
transactions and clean restarts, with the power cut at a random call. After each cut the engine
is reopened on what a real disk could hold, and:

- every confirmed record not deleted is there, at its offset, byte for byte, and offsets run
  dense from the log's start; any other record there is one that was appended at that offset
  (never a torn or corrupt one, never one from nowhere);
- the journal recovers a prefix of its entries that covers every entry fsynced or snapshotted;
- the metadata store holds the last committed document, or the one being committed.

Then the run goes on from the recovered state, so one example may cut the power many times.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from roost.clock import ManualClock
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage import segment as segment_module
from roost.storage.journal import Journal
from roost.storage.log import PartitionLog
from tests.property.power_loss_fs import PowerCut, PowerLossFS


@pytest.fixture(autouse=True)
def small_recovery_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recovery point every few batches (segment.py), written as the flush that synced it
    ends: power cuts land around them too."""
    monkeypatch.setattr(segment_module, "INDEX_CHECKPOINT_BYTES", 600)


#: Small segments and a dense index, so rolls, deletions and index hints happen often.
CONFIG = TopicConfig(
    durability="always", segment_max_bytes=4096, max_record_bytes=2048, index_interval_bytes=512
)


def journal_state(entries: list[bytes]) -> bytes:
    return msgspec.msgpack.encode(entries)


def close_lock(path: str) -> None:
    """Close the descriptor an engine that died inside ``open`` left on its LOCK file."""
    lock = os.path.join(path, "LOCK")
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == lock:
                os.close(int(fd))


class PowerLoss(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="roost-power-")
        self.fs = PowerLossFS(self.root)
        self.path = os.path.join(self.root, "data")
        self.clock = ManualClock()
        self.write_behind = False
        self.cut_seed = 0
        self.counter = 0
        self.engine: LocalEngine | None = None
        # The topic's log: what was appended at each offset (this life), what is confirmed.
        self.appended: dict[int, tuple[bytes | None, bytes]] = {}
        self.confirmed = 0
        self.start = 0
        # The journal: every entry in order; how many a power cut may not lose.
        self.entries: list[bytes] = []
        self.entries_kept = 0
        # The metadata document's one test value: committed, and being committed.
        self.committed: int | None = None
        self.committing: int | None = None

    @property
    def log(self) -> PartitionLog:
        assert self.engine is not None
        return self.engine.topic("t").log(0)

    @property
    def journal(self) -> Journal:
        assert self.engine is not None
        return self.engine.journal("j")

    def _open(self) -> LocalEngine:
        engine = LocalEngine.open(self.path, self.clock, self.fs)
        if self.write_behind:
            # As with a flusher attached: ``always`` appends are held back and written by the
            # flush, through an O_DSYNC descriptor.
            engine.on_dirty = lambda log, urgent: None
        return engine

    # -- steps ----------------------------------------------------------------------------

    @initialize(write_behind=st.booleans())
    def start_engine(self, write_behind: bool) -> None:
        self.write_behind = write_behind
        self.engine = self._open()
        self.engine.create_topic("t", CONFIG)
        self.journal.recover()

    def _step(self, body: Callable[[], Any]) -> None:
        try:
            body()
        except PowerCut:
            self._crash()

    @rule(calls=st.integers(1, 40), seed=st.integers(0, 2**32))
    def arm_a_power_cut(self, calls: int, seed: int) -> None:
        """The power goes out at one of the next calls, wherever in a step it lands."""
        self.fs.cut_after(calls)
        self.cut_seed = seed

    @rule(seed=st.integers(0, 2**32))
    def cut_the_power_now(self, seed: int) -> None:
        self.cut_seed = seed
        self._crash()

    # At most 3 x 1300 bytes: a batch stays below segment_max_bytes, which refuses bigger ones.
    @rule(sizes=st.lists(st.integers(0, 1300), min_size=1, max_size=3), keyed=st.booleans())
    def append(self, sizes: list[int], keyed: bool) -> None:
        records = []
        for size in sizes:
            self.counter += 1
            key = b"k%d" % self.counter if keyed else None
            value = (b"%d:" % self.counter + b"v" * size)[: max(size, 1)]
            records.append((key, value))
        self.clock.advance(1)

        def body() -> None:
            result = self.log.append([Record(value=v, key=k) for k, v in records])
            for offset, record in enumerate(records, result.base_offset):
                self.appended[offset] = record

        self._step(body)

    @rule()
    def flush(self) -> None:
        def body() -> None:
            self.log.flush()
            assert self.log.durable_offset == self.log.end_offset
            self.confirmed = self.log.durable_offset

        self._step(body)

    @rule()
    def roll(self) -> None:
        self._step(self.log.roll)

    @rule(fraction=st.floats(0, 1))
    def delete_old_segments(self, fraction: float) -> None:
        def body() -> None:
            log = self.log
            log.delete_below(log.start_offset + int((log.end_offset - log.start_offset) * fraction))
            self.start = log.start_offset

        self._step(body)

    @rule(count=st.integers(1, 4))
    def journal_append(self, count: int) -> None:
        entries = []
        for _ in range(count):
            self.counter += 1
            entries.append(b"entry %d" % self.counter)

        def body() -> None:
            self.journal.append(entries)
            self.entries.extend(entries)

        self._step(body)

    @rule()
    def journal_flush(self) -> None:
        def body() -> None:
            self.journal.log.flush()
            self.entries_kept = max(self.entries_kept, self.journal.log.durable_offset)

        self._step(body)

    @rule()
    def journal_snapshot(self) -> None:
        def body() -> None:
            job = self.journal.snapshot_job(journal_state(self.entries))
            job.run()
            self.entries_kept = max(self.entries_kept, job.next_seq)
            self.journal.snapshot_done(job)

        self._step(body)

    @rule(value=st.integers(0, 1000))
    def metadata_transaction(self, value: int) -> None:
        def body() -> None:
            assert self.engine is not None
            self.committing = value
            with self.engine.metadata.transaction() as txn:
                txn.put("test", "value", value)
            self.committed, self.committing = value, None

        self._step(body)

    @rule(then_cut=st.booleans(), seed=st.integers(0, 2**32))
    def clean_restart(self, then_cut: bool, seed: int) -> None:
        """Close cleanly (flush everything, indexes, the marker), maybe lose power, reopen."""
        assert self.engine is not None
        engine = self.engine
        try:
            engine.close()
        except PowerCut:
            if not engine._closed:
                self._crash()
            else:  # the marker's write lost the power; the lock is still held
                os.close(engine._lock_fd)
                self._crash(closed=True)
            return
        self.confirmed = max(self.appended, default=-1) + 1
        self.entries_kept = len(self.entries)
        if then_cut:
            self.cut_seed = seed
            self._crash(closed=True)
        else:
            self._reopen_and_check()

    # -- the cut and the checks -----------------------------------------------------------

    def _crash(self, closed: bool = False) -> None:
        """The machine is off: drop the engine as it is, cut, reopen, check."""
        assert self.engine is not None
        if not closed:
            self.fs.cut_after(1)  # a dead machine writes nothing more
            self.engine.close(clean=False)
        self.fs.close_all()
        self.fs.power_cut(random.Random(self.cut_seed))
        self._reopen_and_check()

    def _reopen_and_check(self) -> None:
        """Open and check; the power may go out again during recovery: then again."""
        while True:
            self.engine = None
            try:
                self.engine = self._open()
                self._check_log()
                self._check_journal()
                self._check_metadata()
                return
            except PowerCut:
                if self.engine is not None:
                    self.engine.close(clean=False)
                else:
                    close_lock(self.path)  # it died inside open, holding the lock
                self.fs.close_all()
                self.fs.power_cut(random.Random(self.cut_seed + 1))

    def _check_log(self) -> None:
        log = self.log
        assert log.start_offset <= self.start, "a segment still needed is gone"
        assert log.end_offset >= self.confirmed, (
            f"confirmed up to {self.confirmed}, recovered up to {log.end_offset}"
        )
        offset, kept = log.start_offset, {}
        while offset < log.end_offset:
            records = log.read(offset)
            for record in records:
                assert record.offset == offset, "offsets run dense"
                assert offset in self.appended, f"offset {offset}: a record nobody appended"
                assert (record.key, record.value) == self.appended[offset], (
                    f"offset {offset} holds another record than was appended there"
                )
                kept[offset] = self.appended[offset]
                offset += 1
        assert log.durable_offset == log.end_offset, "what recovery kept is synced"
        self.appended, self.confirmed, self.start = kept, log.end_offset, log.start_offset

    def _check_journal(self) -> None:
        state, entries = self.journal.recover()
        recovered = (msgspec.msgpack.decode(state, type=list[bytes]) if state else []) + entries
        assert recovered == self.entries[: len(recovered)], "the journal is a prefix of entries"
        assert len(recovered) >= self.entries_kept, (
            f"{self.entries_kept} entries were synced or snapshotted, {len(recovered)} recovered"
        )
        assert self.journal.log.end_offset == len(recovered), "the next entry's number"
        self.entries = self.entries[: len(recovered)]
        self.entries_kept = len(recovered)

    def _check_metadata(self) -> None:
        assert self.engine is not None
        value = self.engine.metadata.get("test", "value")
        assert value == self.committed or (
            self.committing is not None and value == self.committing
        ), f"metadata holds {value}, committed {self.committed}, committing {self.committing}"
        self.committed, self.committing = value, None
        assert self.engine.list_topics() == ["t"], "the topic survives"

    def teardown(self) -> None:
        if self.engine is not None:
            with contextlib.suppress(PowerCut):
                self.fs.cut_after(1)
                self.engine.close(clean=False)
            self.fs.close_all()
        shutil.rmtree(self.root, ignore_errors=True)


#: A bounded run in the suite; ROOST_POWER_EXAMPLES=1000 for a long hunt.
PowerLoss.TestCase.settings = settings(
    max_examples=int(os.environ.get("ROOST_POWER_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPowerLoss = PowerLoss.TestCase


def test_segments_recovery_dropped_stay_dropped(tmp_path: Path) -> None:
    """Recovery drops the segments after a cut; a second power loss must not bring them back.

    Life 1: offset 0 synced, offset 1 not, a roll to segment 2 holding offset 2, and a cut that
    tears offset 1 but keeps segment 2's entry: recovery cuts segment 0 at offset 1 and drops
    segment 2. Life 2: offset 1 is appended again and synced, so segment 0 ends where the
    dropped one began. If the drop was never synced, a second cut may restore segment 2, which
    then continues the log exactly: life 1's offset 2, reported lost, would be back.
    """
    scenes = 0
    for seed in range(30):
        root = tmp_path / str(seed)
        root.mkdir()
        fs = PowerLossFS(str(root))
        path = str(root / "data")
        clock = ManualClock()
        engine = LocalEngine.open(path, clock, fs)
        log = engine.create_topic("t", CONFIG).log(0)
        log.append([Record(value=b"life 1, offset 0")])
        log.flush()
        log.append([Record(value=b"life 1, offset 1")])
        log.roll()
        log.append([Record(value=b"life 1, offset 2")])
        fs.cut_after(1)
        engine.close(clean=False)
        fs.close_all()
        fs.power_cut(random.Random(seed))

        engine = LocalEngine.open(path, clock, fs)
        log = engine.topic("t").log(0)
        if (log.end_offset, log.recovery.segments_dropped) != (1, 1):
            engine.close()
            continue  # this seed's cut did not set the scene
        log.append([Record(value=b"life 2, offset 1")])
        log.flush()
        fs.cut_after(1)
        engine.close(clean=False)
        fs.close_all()
        fs.power_cut(random.Random(seed))

        engine = LocalEngine.open(path, clock, fs)
        log = engine.topic("t").log(0)
        values = [r.value for o in range(log.end_offset) for r in log.read(o, max_records=1)]
        engine.close()
        assert values == [b"life 1, offset 0", b"life 2, offset 1"], f"seed {seed}"
        scenes += 1
    assert scenes >= 3, "the cuts set the scene often enough to mean something"
