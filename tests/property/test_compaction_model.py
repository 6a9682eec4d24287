"""Compaction against a reference model, with the power cut anywhere (storage/compaction.py).

The model is the list of every record appended, at its offset, with its append time. The
engine runs over ``PowerLossFS`` (tests/property/power_loss_fs.py): publishes (keyed values
and tombstones), rolls, the clock moving on, compaction passes, and power cuts armed to land
at any later call — inside a pass's rewrite, its rename, its directory fsync or its hints.
After every step, and after every cut and reopen:

- every record the log holds is the one the model has at that offset (offsets preserved);
- the latest record of every key is there, unless it is a tombstone past its retention;
- no confirmed record is lost, and the log ends where the model does;
- right after a pass that was not cut (and with no cut since the clean point was written),
  the compacted range holds exactly the latest record per key, less expired tombstones.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from roost.clock import ManualClock
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.compaction import CompactionSettings, Compactor, compacted_logs
from roost.storage.log import PartitionLog
from tests.property.power_loss_fs import PowerCut, PowerLossFS
from tests.property.test_power_loss import close_lock

RETENTION_MS = 10_000
CONFIG = TopicConfig(
    cleanup="compact",
    tombstone_retention_ms=RETENTION_MS,
    segment_max_bytes=4096,
    max_record_bytes=512,
)
KEYS = [b"a", b"b", b"c", b"d"]


class Compaction(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="roost-compact-")
        self.fs = PowerLossFS(self.root)
        self.path = os.path.join(self.root, "data")
        self.clock = ManualClock()
        self.engine: LocalEngine | None = None
        #: (key, value, append time) per offset, as appended.
        self.model: list[tuple[bytes, bytes, int]] = []
        self.confirmed = 0
        self.cut_seed = 0
        #: The compacted range is exact until a cut may have left a stale clean point.
        self.exact = True

    @property
    def log(self) -> PartitionLog:
        assert self.engine is not None
        return self.engine.topic("t").log(0)

    def _compactor(self) -> Compactor:
        assert self.engine is not None
        engine = self.engine
        # Syncs in turn: a power cut must land at the same call whenever hypothesis replays.
        settings = CompactionSettings(min_dirty_ratio=0.0, sync_aside=False)
        return Compactor(lambda: compacted_logs(engine), self.clock, settings)

    @initialize()
    def start(self) -> None:
        self.engine = LocalEngine.open(self.path, self.clock, self.fs)
        self.engine.create_topic("t", CONFIG)

    def _step(self, body: Any) -> None:
        try:
            body()
        except PowerCut:
            self._crash()

    @rule(key=st.sampled_from(KEYS), size=st.integers(0, 200))
    def publish(self, key: bytes, size: int) -> None:
        value = os.urandom(size // 2).hex().encode()[:size]  # size 0: a tombstone

        def body() -> None:
            self.log.append([Record(key=key, value=value)])
            self.model.append((key, value, self.clock.now_ms()))
            self.log.flush()
            self.confirmed = len(self.model)

        self._step(body)

    @rule()
    def roll(self) -> None:
        def body() -> None:
            self.log.roll()
            self.log.flush()

        self._step(body)

    @rule(ms=st.sampled_from([1, 1_000, RETENTION_MS]))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(roll_first=st.booleans())
    def compact(self, roll_first: bool) -> None:
        def body() -> None:
            if roll_first:
                self.log.roll()
                self.log.flush()
            job = self._compactor().compact(self.log)
            if job is not None and self.exact:
                self._check_exact(job.cleanable_end, job.now_ms)

        self._step(body)

    @rule(calls=st.integers(1, 60), seed=st.integers(0, 2**32))
    def arm_a_power_cut(self, calls: int, seed: int) -> None:
        self.fs.cut_after(calls)
        self.cut_seed = seed

    def _crash(self) -> None:
        assert self.engine is not None
        self.fs.cut_after(1)
        self.engine.close(clean=False)
        self.fs.close_all()
        self.fs.power_cut(random.Random(self.cut_seed))
        self.exact = False
        while True:
            self.engine = None
            try:
                self.engine = LocalEngine.open(self.path, self.clock, self.fs)
                end = self.log.end_offset
                assert self.confirmed <= end <= len(self.model), "confirmed records survive"
                del self.model[end:]
                self.confirmed = end
                return
            except PowerCut:
                if self.engine is not None:
                    self.engine.close(clean=False)
                else:
                    close_lock(self.path)
                self.fs.close_all()

    # -- checks -------------------------------------------------------------------------

    def _records(self) -> dict[int, tuple[bytes | None, bytes]]:
        log, found = self.log, {}
        offset = log.start_offset
        for _ in range(len(self.model) + 1):  # each read returns a record or ends the log
            records = log.read(offset)
            if not records:
                break
            found.update((r.offset, (r.key, r.value)) for r in records)
            offset = records[-1].offset + 1
        return found

    @invariant()
    def holds_what_the_model_says(self) -> None:
        if self.engine is None:
            return
        found = self._records()
        assert self.log.end_offset == len(self.model)
        for offset, (key, value) in found.items():
            assert (key, value) == self.model[offset][:2], f"offset {offset} changed"
        latest = {key: offset for offset, (key, _, _) in enumerate(self.model)}
        now_ms = self.clock.now_ms()
        for key, offset in latest.items():
            _, value, appended_ms = self.model[offset]
            if value or appended_ms + RETENTION_MS > now_ms:
                assert offset in found, f"the latest record of {key!r} ({offset}) is gone"

    def _check_exact(self, end: int, now_ms: int) -> None:
        found = self._records()
        latest: dict[bytes, int] = {}
        for offset, (key, _, _) in enumerate(self.model[:end]):
            latest[key] = offset
        expected = {
            offset
            for key, offset in latest.items()
            if self.model[offset][1] or self.model[offset][2] + RETENTION_MS > now_ms
        }
        assert {o for o in found if o < end} == expected

    def teardown(self) -> None:
        if self.engine is not None:
            with contextlib.suppress(PowerCut):
                self.fs.cut_after(1)
                self.engine.close(clean=False)
            self.fs.close_all()
        shutil.rmtree(self.root, ignore_errors=True)


Compaction.TestCase.settings = settings(
    max_examples=int(os.environ.get("ROOST_COMPACTION_EXAMPLES", "40")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCompaction = Compaction.TestCase
