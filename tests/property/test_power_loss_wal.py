"""Power loss over many logs flushed through the shared write-ahead log (storage/wal.py).

The machine below drives several ``always`` topics and a journal the way the flusher does with
a WAL: a round takes every dirty log's bytes, writes them as records in one O_DSYNC write, then
pwrites each log's bytes to its own file without a sync, then confirms. It rolls segments,
deletes old ones, checkpoints (the WAL is tiny here, so rounds rotate files often), deletes a
topic and creates it again under the same name (its files take the old ones' names: no old
record may replay into them), restarts cleanly, and cuts the power at any call, over
``PowerLossFS`` (tests/property/power_loss_fs.py). After each cut the engine is reopened on what
a real disk could hold (the power may go out during that recovery too) and:

- every record a round confirmed is there, byte for byte, at its offset; any other record is
  one that was appended at that offset;
- the journal recovers a prefix of its entries covering every entry a round confirmed.

Beside it, the named cases: a cut between the WAL write and the segments' writes, a torn WAL
tail, a damaged record in the middle, a cut in the middle of a checkpoint, and replay done
twice (cut during the first) ending where one replay ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from roost.clock import ManualClock
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage import segment as segment_module
from roost.storage.log import PartitionLog
from roost.storage.wal import RECORD_HEADER, WAL_DIRECTORY, WAL_SUFFIX, Wal
from tests.property.power_loss_fs import PowerCut, PowerLossFS
from tests.property.test_power_loss import close_lock


@pytest.fixture(autouse=True)
def small_recovery_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recovery point every few batches (segment.py), written after the checkpoint that
    syncs it or by an inline flush: power cuts land around them too."""
    monkeypatch.setattr(segment_module, "INDEX_CHECKPOINT_BYTES", 600)


CONFIG = TopicConfig(
    durability="always", segment_max_bytes=4096, max_record_bytes=2048, index_interval_bytes=512
)
TOPICS = ("q0", "q1", "q2")
JOURNAL = "j"


def wal_round(wal: Wal, logs: list[PartitionLog]) -> list[PartitionLog]:
    """One flush round through ``wal`` as the flusher runs it; the logs it covered."""
    jobs = [(log, job) for log in logs if (job := log.begin_flush(use_wal=True)) is not None]
    write = wal.reserve(item for _, job in jobs for item in job.wal_items)
    wal.after_sync(point for _, job in jobs for point in job.index_checkpoints)
    if write is not None:
        write.run()
    for log, job in jobs:
        job.run()
        log.end_flush(job, None)
    return [log for log, _ in jobs]


def open_engine(fs: PowerLossFS, path: str, clock: ManualClock, wal_bytes: int) -> LocalEngine:
    engine = LocalEngine.open(path, clock, fs)
    engine.on_dirty = lambda log, urgent: None  # as with a flusher: ``always`` is held back
    assert engine.wal is not None
    engine.wal.checkpoint_bytes = wal_bytes
    return engine


def all_records(engine: LocalEngine) -> dict[str, list[tuple[int, bytes | None, bytes]]]:
    """Every topic's records, and the journal's entries, as read after recovery."""
    found: dict[str, list[tuple[int, bytes | None, bytes]]] = {}
    for name in engine.list_topics():
        log = engine.topic(name).log(0)
        records, offset = [], log.start_offset
        while offset < log.end_offset:
            batch = log.read(offset)
            records += [(r.offset, r.key, r.value) for r in batch]
            offset = batch[-1].offset + 1
        found[name] = records
    state, entries = engine.journal(JOURNAL).recover()
    found[JOURNAL] = [(i, state, entry) for i, entry in enumerate(entries)]
    return found


class _Topic:
    def __init__(self) -> None:
        self.appended: dict[int, tuple[bytes | None, bytes]] = {}
        self.confirmed = 0
        self.start = 0
        #: Before a delete and recreate that a cut interrupted: what it held then (either
        #: may be what recovery finds).
        self.previous: dict[int, tuple[bytes | None, bytes]] | None = None


class WalPowerLoss(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="roost-power-wal-")
        self.fs = PowerLossFS(self.root)
        self.path = os.path.join(self.root, "data")
        self.clock = ManualClock()
        self.wal_bytes = 4096
        self.cut_seed = 0
        self.counter = 0
        self.engine: LocalEngine | None = None
        self.topics = {name: _Topic() for name in TOPICS}
        self.entries: list[bytes] = []
        self.entries_kept = 0

    def teardown(self) -> None:
        if self.engine is not None:
            self.fs.cut_after(1)
            self.engine.close(clean=False)
        self.fs.close_all()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def wal(self) -> Wal:
        assert self.engine is not None and self.engine.wal is not None
        return self.engine.wal

    def log(self, name: str) -> PartitionLog:
        assert self.engine is not None
        return self.engine.topic(name).log(0)

    @property
    def journal_log(self) -> PartitionLog:
        assert self.engine is not None
        return self.engine.journal(JOURNAL).log

    @initialize(wal_bytes=st.sampled_from([512, 4096, 65536]))
    def start_engine(self, wal_bytes: int) -> None:
        self.wal_bytes = wal_bytes
        self.engine = open_engine(self.fs, self.path, self.clock, wal_bytes)
        for name in TOPICS:
            self.engine.create_topic(name, CONFIG)
        self.engine.journal(JOURNAL).recover()

    def _step(self, body: Callable[[], Any]) -> None:
        try:
            body()
        except PowerCut:
            self._crash()

    @rule(calls=st.integers(1, 30), seed=st.integers(0, 2**32))
    def arm_a_power_cut(self, calls: int, seed: int) -> None:
        self.fs.cut_after(calls)
        self.cut_seed = seed

    @rule(seed=st.integers(0, 2**32))
    def cut_the_power_now(self, seed: int) -> None:
        self.cut_seed = seed
        self._crash()

    @rule(topic=st.sampled_from(TOPICS), sizes=st.lists(st.integers(0, 1300), min_size=1,
          max_size=3))  # fmt: skip
    def append(self, topic: str, sizes: list[int]) -> None:
        records = []
        for size in sizes:
            self.counter += 1
            records.append((b"k%d" % self.counter, (b"%d:" % self.counter + b"v" * size)))
        self.clock.advance(1)

        def body() -> None:
            result = self.log(topic).append([Record(value=v, key=k) for k, v in records])
            for offset, record in enumerate(records, result.base_offset):
                self.topics[topic].appended[offset] = record

        self._step(body)

    @rule(count=st.integers(1, 4))
    def journal_append(self, count: int) -> None:
        entries = []
        for _ in range(count):
            self.counter += 1
            entries.append(b"entry %d" % self.counter)

        def body() -> None:
            assert self.engine is not None
            self.engine.journal(JOURNAL).append(entries)
            self.entries.extend(entries)

        self._step(body)

    @rule(which=st.sets(st.sampled_from((*TOPICS, JOURNAL)), min_size=1))
    def flush_round(self, which: set[str]) -> None:
        """One round through the WAL over the chosen logs (the flusher takes every due one)."""

        def body() -> None:
            logs = [self.journal_log if n == JOURNAL else self.log(n) for n in sorted(which)]
            wal_round(self.wal, logs)
            for name in which:
                if name == JOURNAL:
                    self.entries_kept = max(self.entries_kept, self.journal_log.durable_offset)
                else:
                    model = self.topics[name]
                    model.confirmed = max(model.confirmed, self.log(name).durable_offset)

        self._step(body)

    @rule(topic=st.sampled_from(TOPICS))
    def inline_flush(self, topic: str) -> None:
        """A flush of one log outside the WAL (as close and recovery do)."""

        def body() -> None:
            self.log(topic).flush()
            self.topics[topic].confirmed = self.log(topic).durable_offset

        self._step(body)

    @rule()
    def checkpoint(self) -> None:
        def body() -> None:
            job = self.wal.checkpoint_job()
            if job is not None:
                job.run()
                self.wal.checkpoint_done(job, None)

        self._step(body)

    @rule(topic=st.sampled_from(TOPICS))
    def roll(self, topic: str) -> None:
        self._step(self.log(topic).roll)

    @rule(topic=st.sampled_from(TOPICS), fraction=st.floats(0, 1))
    def delete_old_segments(self, topic: str, fraction: float) -> None:
        def body() -> None:
            log = self.log(topic)
            log.delete_below(log.start_offset + int((log.end_offset - log.start_offset) * fraction))
            self.topics[topic].start = log.start_offset

        self._step(body)

    @rule(topic=st.sampled_from(TOPICS))
    def delete_and_recreate(self, topic: str) -> None:
        """The new topic's files take the old one's names: no old record may replay there."""
        model = self.topics[topic]
        model.previous = model.appended
        model.appended, model.confirmed, model.start = {}, 0, 0

        def body() -> None:
            assert self.engine is not None
            self.engine.delete_topic(topic)
            self.engine.create_topic(topic, CONFIG)
            model.previous = None

        self._step(body)

    @rule(topic=st.sampled_from(TOPICS), seed=st.integers(0, 2**32))
    def flush_delete_recreate_and_cut(self, topic: str, seed: int) -> None:
        """A round writes the topic's records to the WAL, the topic goes and comes back, the
        power goes: the old records are still in the WAL, the new files have their names."""
        self.append(topic, [10])
        if self.engine is not None:
            self.flush_round({topic})
        if self.engine is not None:
            self.delete_and_recreate(topic)
        if self.engine is not None:
            self.cut_the_power_now(seed)

    @rule(seed=st.integers(0, 2**32))
    def clean_restart(self, seed: int) -> None:
        assert self.engine is not None
        engine = self.engine
        try:
            engine.close()
        except PowerCut:
            if not engine._closed:
                self._crash()
            else:
                os.close(engine._lock_fd)
                self._crash(closed=True)
            return
        for model in self.topics.values():
            model.confirmed = max(model.appended, default=-1) + 1
        self.entries_kept = len(self.entries)
        self.cut_seed = seed
        self._crash(closed=True)

    # -- the cut and the checks -----------------------------------------------------------

    def _crash(self, closed: bool = False) -> None:
        assert self.engine is not None
        if not closed:
            self.fs.cut_after(1)
            self.engine.close(clean=False)
        self.engine = None
        self.fs.close_all()
        self.fs.power_cut(random.Random(self.cut_seed))
        while True:
            try:
                self.engine = open_engine(self.fs, self.path, self.clock, self.wal_bytes)
                self._check()
                return
            except PowerCut:
                if self.engine is not None:
                    self.engine.close(clean=False)
                    self.engine = None
                else:
                    close_lock(self.path)
                self.fs.close_all()
                self.fs.power_cut(random.Random(self.cut_seed + 1))

    def _check(self) -> None:
        assert self.engine is not None
        for name, model in self.topics.items():
            if not self.engine.has_topic(name):  # a delete committed, the create did not
                assert model.previous is not None, f"topic {name} is gone"
                self.engine.create_topic(name, CONFIG)
            self._check_topic(name, model)
        state, entries = self.engine.journal(JOURNAL).recover()
        assert state is None
        assert entries == self.entries[: len(entries)], "the journal is a prefix of entries"
        assert len(entries) >= self.entries_kept, (
            f"{self.entries_kept} entries confirmed, {len(entries)} recovered"
        )
        self.entries, self.entries_kept = entries, len(entries)

    def _check_topic(self, name: str, model: _Topic) -> None:
        log = self.log(name)
        found: dict[int, tuple[bytes | None, bytes]] = {}
        offset = log.start_offset
        while offset < log.end_offset:
            for record in log.read(offset):
                assert record.offset == offset, "offsets run dense"
                found[offset] = (record.key, record.value)
                offset += 1
        candidates = [model.appended] + ([model.previous] if model.previous is not None else [])
        matching = [
            appended
            for appended in candidates
            if all(appended.get(o) == record for o, record in found.items())
        ]
        assert matching, f"{name}: a record nobody appended at its offset (an old one replayed?)"
        appended = matching[0]
        if appended is model.appended:
            assert log.start_offset <= model.start, f"{name}: a segment still needed is gone"
            assert log.end_offset >= model.confirmed, (
                f"{name}: confirmed up to {model.confirmed}, recovered up to {log.end_offset}"
            )
        assert log.durable_offset == log.end_offset, "what recovery kept is synced"
        model.appended, model.previous = found, None
        model.confirmed, model.start = log.end_offset, log.start_offset


WalPowerLoss.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestWalPowerLoss = WalPowerLoss.TestCase


# -- the named cases ------------------------------------------------------------------------


class Bench:
    """An engine over PowerLossFS with three topics, a journal, and a crash to order."""

    def __init__(self, root: str, fs: PowerLossFS | None = None) -> None:
        self.fs = fs or PowerLossFS(root)
        self.path = os.path.join(root, "data")
        self.clock = ManualClock()
        self.engine = open_engine(self.fs, self.path, self.clock, 1 << 20)
        for name in TOPICS[:3]:
            self.engine.create_topic(name, CONFIG)
        self.engine.journal(JOURNAL).recover()

    @property
    def wal(self) -> Wal:
        assert self.engine.wal is not None
        return self.engine.wal

    def logs(self) -> list[PartitionLog]:
        return [self.engine.topic(n).log(0) for n in TOPICS[:3]] + [
            self.engine.journal(JOURNAL).log
        ]

    def append_everywhere(self, tag: bytes) -> None:
        for log in self.logs()[:3]:
            log.append([Record(value=tag + b" " + log.topic.encode())])
        self.engine.journal(JOURNAL).append([tag])

    def crash(self, seed: int = 0, power: bool = True) -> None:
        self.fs.cut_after(1)
        self.engine.close(clean=False)
        self.fs.close_all()
        if power:
            self.fs.power_cut(random.Random(seed))
        else:
            self.fs._countdown = None  # a process crash: everything written stays

    def reopen(self) -> dict[str, list[tuple[int, bytes | None, bytes]]]:
        self.engine = open_engine(self.fs, self.path, self.clock, 1 << 20)
        return all_records(self.engine)

    def wal_files(self) -> list[str]:
        directory = os.path.join(self.path, WAL_DIRECTORY)
        return sorted(
            os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(WAL_SUFFIX)
        )


def values(found: dict[str, list[tuple[int, bytes | None, bytes]]], name: str) -> list[bytes]:
    return [value for _, _, value in found[name]]


def wal_report(engine: LocalEngine) -> list[str]:
    return [p for log in engine.recovery.logs if log.log == "write-ahead log" for p in log.problems]


@given(seed=st.integers(0, 2**32))
@settings(max_examples=20, deadline=None)
def test_a_cut_between_the_wal_write_and_the_segments_loses_nothing_the_wal_holds(
    seed: int,
) -> None:
    root = tempfile.mkdtemp(prefix="roost-wal-cut-")
    try:
        bench = Bench(root)
        bench.append_everywhere(b"first")
        wal_round(bench.wal, bench.logs())
        bench.append_everywhere(b"second")
        bench.fs.cut_after(2)  # the WAL write happens; the first segment write does not
        try:
            wal_round(bench.wal, bench.logs())
        except PowerCut:
            pass
        else:
            raise AssertionError("the power should have gone out")
        bench.crash(seed)
        found = bench.reopen()
        for name in TOPICS[:3]:
            assert values(found, name) == [b"first " + name.encode(), b"second " + name.encode()]
        assert values(found, JOURNAL) == [b"first", b"second"]
        assert any("replayed" in p for p in wal_report(bench.engine))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_torn_wal_tail_is_an_unconfirmed_round_and_the_rest_is_replayed(tmp_path: Any) -> None:
    bench = Bench(str(tmp_path))
    bench.append_everywhere(b"first")
    wal_round(bench.wal, bench.logs())
    bench.crash(seed=1)
    (wal_file,) = [f for f in bench.wal_files() if os.path.getsize(f)]
    with open(wal_file, "rb") as f:
        whole = f.read()
    *_, length, key_length = RECORD_HEADER.unpack_from(whole)
    torn = whole[: RECORD_HEADER.size + key_length + length - 3]  # the last bytes never landed
    with open(wal_file, "ab") as f:
        f.write(torn)
    found = bench.reopen()
    for name in TOPICS[:3]:
        assert values(found, name) == [b"first " + name.encode()]
    report = wal_report(bench.engine)
    assert any(f"{len(torn)} bytes of an unconfirmed round cut" in p for p in report)
    assert not any("damaged" in p for p in report), "a torn tail is no damage"


def test_a_damaged_record_in_the_middle_is_skipped_and_reported(tmp_path: Any) -> None:
    bench = Bench(str(tmp_path))
    for tag in (b"one", b"two", b"three"):
        bench.append_everywhere(tag)
        wal_round(bench.wal, bench.logs())
    bench.crash(power=False)  # the segments hold every round: the WAL is not needed
    (wal_file,) = [f for f in bench.wal_files() if os.path.getsize(f)]
    with open(wal_file, "r+b") as f:
        data = f.read()
        middle = data.index(b"two q1")  # a byte of the second round's record for q1
        f.seek(middle)
        f.write(b"X")
    found = bench.reopen()
    for name in TOPICS[:3]:
        assert values(found, name) == [t + b" " + name.encode() for t in (b"one", b"two", b"three")]
    assert values(found, JOURNAL) == [b"one", b"two", b"three"]
    (damage,) = [p for p in wal_report(bench.engine) if "damaged record" in p]
    assert wal_file in damage


@given(seed=st.integers(0, 2**32), calls=st.integers(1, 40))
@settings(max_examples=25, deadline=None)
def test_a_cut_in_the_middle_of_a_checkpoint_loses_nothing_confirmed(seed: int, calls: int) -> None:
    root = tempfile.mkdtemp(prefix="roost-wal-checkpoint-")
    try:
        bench = Bench(root)
        wal = bench.engine.wal
        assert wal is not None
        wal.checkpoint_bytes = 1  # every round rotates
        for tag in (b"one", b"two", b"three"):
            bench.append_everywhere(tag)
            wal_round(wal, bench.logs())
        job = wal.checkpoint_job()
        assert job is not None and len(job.old) >= 1 and job.dirty
        bench.fs.cut_after(calls)
        try:
            job.run()
        except PowerCut:
            pass
        else:
            wal.checkpoint_done(job, None)
        bench.crash(seed)
        found = bench.reopen()
        for name in TOPICS[:3]:
            assert values(found, name) == [
                t + b" " + name.encode() for t in (b"one", b"two", b"three")
            ]
        assert values(found, JOURNAL) == [b"one", b"two", b"three"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@given(
    rounds=st.lists(st.sets(st.integers(0, 3), min_size=1), min_size=1, max_size=6),
    appends_after=st.integers(0, 2),
    seed=st.integers(0, 2**32),
    calls=st.integers(1, 60),
)
@settings(max_examples=30, deadline=None)
def test_replay_twice_with_a_cut_in_the_first_ends_where_one_replay_ends(
    rounds: list[set[int]], appends_after: int, seed: int, calls: int
) -> None:
    root = tempfile.mkdtemp(prefix="roost-wal-twice-")
    snapshot = tempfile.mkdtemp(prefix="roost-wal-twice-snapshot-")
    try:
        bench = Bench(root)
        for number, which in enumerate(rounds):
            bench.append_everywhere(b"round %d" % number)
            wal_round(bench.wal, [bench.logs()[i] for i in sorted(which)])
        for number in range(appends_after):
            bench.append_everywhere(b"unflushed %d" % number)
        bench.crash(seed)
        shutil.rmtree(snapshot)
        shutil.copytree(root, snapshot)

        once = bench.reopen()
        bench.crash(power=False)

        shutil.rmtree(root)
        shutil.copytree(snapshot, root)
        bench.fs = PowerLossFS(root)
        bench.fs.cut_after(calls)
        with contextlib.suppress(PowerCut):
            bench.reopen()
        bench.fs.cut_after(1)  # off, wherever that recovery was
        if not bench.engine._closed:
            bench.engine.close(clean=False)
        close_lock(bench.path)
        bench.fs.close_all()
        bench.fs.power_cut(random.Random(seed + 1))
        twice = bench.reopen()
        assert twice == once
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(snapshot, ignore_errors=True)


def test_a_topic_deleted_and_created_again_gets_none_of_the_old_ones_records(
    tmp_path: Any,
) -> None:
    bench = Bench(str(tmp_path))
    bench.append_everywhere(b"old")
    wal_round(bench.wal, bench.logs())
    bench.engine.delete_topic("q0")
    bench.engine.create_topic("q0", CONFIG)  # its segment takes the old one's name
    bench.engine.topic("q0").log(0).append([Record(value=b"new")])
    bench.crash(power=False)
    found = bench.reopen()
    assert values(found, "q0") == [], "neither the old records nor an unconfirmed new one"
    assert values(found, "q1") == [b"old q1"]
    assert any("1 voided" in p for p in wal_report(bench.engine))


class FailingWalFS(PowerLossFS):
    """PowerLossFS whose WAL writes fail (EIO) while ``fail`` is set."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.fail = False
        self.wal_fds: set[int] = set()

    def open_dsync(self, path: str) -> int:
        fd = super().open_dsync(path)
        if path.endswith(WAL_SUFFIX):
            self.wal_fds.add(fd)
        return fd

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        if self.fail and fd in self.wal_fds:
            raise OSError(errno.EIO, "injected EIO on a WAL write")
        super().pwrite(fd, data, position)


@given(seed=st.integers(0, 2**32))
@settings(max_examples=20, deadline=None)
def test_a_repair_after_a_failed_wal_write_keeps_what_only_the_wal_held(seed: int) -> None:
    """A repair voids the log's WAL records (a later segment may take a dropped one's name):
    it must first sync every segment it keeps, sealed ones below the durable offset too, whose
    bytes were durable only in the WAL."""
    root = tempfile.mkdtemp(prefix="roost-wal-repair-")
    try:
        fs = FailingWalFS(root)
        bench = Bench(root, fs)
        logs = bench.logs()
        bench.append_everywhere(b"confirmed")
        wal_round(bench.wal, logs)
        for log in logs:
            log.roll()  # the confirmed batch is in a sealed segment, synced only in the WAL
        bench.append_everywhere(b"failed")
        jobs = [(log, job) for log in logs if (job := log.begin_flush(use_wal=True)) is not None]
        write = bench.wal.reserve(item for _, job in jobs for item in job.wal_items)
        assert write is not None
        fs.fail = True
        try:
            write.run()
        except OSError as e:
            for log, job in jobs:
                log.end_flush(job, e)
            bench.wal.write_failed(write)
        fs.fail = False
        for log in logs:
            assert log.failure is not None
            repair = log.begin_repair()
            assert repair is not None
            repair.run()
            assert log.end_repair(repair)
        bench.crash(seed)
        found = bench.reopen()
        for name in TOPICS[:3]:
            assert values(found, name) == [b"confirmed " + name.encode()]
        # A journal confirms at append (``interval``): its repair kept and synced the entry.
        assert values(found, JOURNAL) == [b"confirmed", b"failed"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@given(seed=st.integers(0, 2**32), checkpoint=st.booleans(), calls=st.integers(1, 30))
@settings(max_examples=40, deadline=None)
def test_the_first_write_of_a_log_made_lazily_survives_the_checkpoint_that_drops_its_record(
    seed: int, checkpoint: bool, calls: int
) -> None:
    """A topic and a journal created with no files; their first write makes them (directory
    entries unsynced) and a round through the WAL confirms it; the WAL file then rotates and
    (``checkpoint``) a checkpoint removes it, perhaps cut short; the power goes. What was
    confirmed is there: the round synced the new entries before its confirm, so nothing
    depends on the record the checkpoint dropped."""
    root = tempfile.mkdtemp(prefix="roost-wal-lazy-")
    try:
        bench = Bench(root)
        wal = bench.wal
        wal.checkpoint_bytes = 1  # every round rotates
        engine = bench.engine
        new = engine.create_topic("new", CONFIG).log(0)
        journal = engine.journal("new-j", new=True)
        assert not new.on_disk and not journal.log.on_disk
        new.append([Record(value=b"first")])
        journal.append([b"entry"])
        wal_round(wal, [new, journal.log])
        assert new.durable_offset == 1 and journal.log.durable_offset == 1
        bench.append_everywhere(b"later")  # a round into the next WAL file
        wal_round(wal, bench.logs())
        if checkpoint:
            job = wal.checkpoint_job()
            assert job is not None and job.old
            bench.fs.cut_after(calls)
            with contextlib.suppress(PowerCut):
                job.run()
                wal.checkpoint_done(job, None)
        bench.crash(seed)
        bench.reopen()
        assert [r.value for r in bench.engine.topic("new").read(0, 0)] == [b"first"]
        assert bench.engine.journal("new-j").recover() == (None, [b"entry"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
