"""A partition log against a model, under random disk faults, repairs and reopens.

The log is driven with small segments (rolls are frequent) by appends, flushes, repairs and
clean reopens, each step maybe with a fault armed through the fs seam: ENOSPC or EIO on a
write (nothing, half or all of it landing), an fsync, an O_DSYNC open, a segment file's
creation, a directory sync. The model is two lists: what was confirmed (a flush succeeded
after it) and what was appended since. It holds that:

- an ENOSPC on a write made at once fails that append only (``DiskFull``) and changes nothing;
- any other failure fails the log: it refuses writes, and reads still serve what was confirmed;
- a repair leaves exactly the confirmed records (what got an error is cut), or, if it fails
  itself, leaves the log failed for the next try;
- a healthy log holds exactly confirmed + appended, before and after a clean reopen.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from roost.clock import ManualClock
from roost.errors import DiskFull, StorageFailure
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.log import PartitionLog
from tests.fault_fs import FaultFS

CONFIG = TopicConfig(segment_max_bytes=4096, max_record_bytes=2000)
ERRNOS = st.sampled_from([errno.ENOSPC, errno.EIO])
LANDED = st.sampled_from(["none", "half", "all"])
Fault = tuple[str, int, str] | None


def faults(*operations: str) -> st.SearchStrategy[Fault]:
    return st.none() | st.tuples(st.sampled_from(operations), ERRNOS, LANDED)


class LogUnderFaults(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="roost-faults-")
        self.path = os.path.join(self.root, "data")
        self.fs = FaultFS()
        self.clock = ManualClock()
        self.engine: LocalEngine | None = None
        self.write_behind = False
        self.confirmed: list[bytes] = []
        self.appended: list[bytes] = []  # since the last successful flush: not confirmed
        self.failed = False
        self.counter = 0

    @property
    def log(self) -> PartitionLog:
        assert self.engine is not None
        return self.engine.topic("t").log(0)

    def _open(self) -> None:
        self.engine = LocalEngine.open(self.path, self.clock, self.fs)
        if self.write_behind:  # as with a flusher: ``always`` appends wait for the flush
            self.engine.on_dirty = lambda log, urgent: None

    def _arm(self, fault: Fault) -> None:
        if fault is not None:
            operation, error, landed = fault
            self.fs.arm(
                operation, error, "/topics/t/", tear=landed == "half", written=landed == "all"
            )

    @initialize(write_behind=st.booleans())
    def start(self, write_behind: bool) -> None:
        self.write_behind = write_behind
        self._open()
        assert self.engine is not None
        self.engine.create_topic("t", CONFIG)

    @rule(size=st.integers(1, 1800), fault=faults("pwrite", "open_rw", "truncate"))
    def append(self, size: int, fault: Fault) -> None:
        self.counter += 1
        value = b"%d:" % self.counter + b"." * size
        on_disk = self.log.on_disk
        self._arm(fault)
        try:
            self.log.append([Record(value=value)])
        except StorageFailure as e:
            if self.failed:
                assert e is self.log.failure, "a failed log refuses with its failure"
            elif isinstance(e, DiskFull):
                assert self.log.failure is None, "ENOSPC fails the append, not the log"
            elif not on_disk and not self.log.on_disk:
                # The first write makes the log's files (lazy creation): nothing was written
                # when that fails, so only the append fails, and the next one tries again.
                assert self.log.failure is None, "a failed first write failed the log"
            else:
                self.failed = True
        else:
            assert not self.failed, "a failed log took a write"
            self.appended.append(value)
        finally:
            self.fs.disarm()

    @rule(fault=faults("pwrite", "fdatasync", "open_dsync", "fsync_dir"))
    def flush(self, fault: Fault) -> None:
        self._arm(fault)
        try:
            self.log.flush()
        except StorageFailure:
            self.failed = True
        else:
            assert not self.failed, "a failed log confirmed a flush"
            self.confirmed += self.appended
            self.appended = []
        finally:
            self.fs.disarm()

    @rule(fault=faults("open_rw", "fdatasync", "fsync_dir"))
    def repair(self, fault: Fault) -> None:
        job = self.log.begin_repair()
        if not self.failed:
            assert job is None, "nothing to repair"
            return
        assert job is not None
        self._arm(fault)
        try:
            job.run()
        except OSError as e:
            assert not self.log.end_repair(job, e)
            assert self.log.failure is not None, "a repair that failed leaves the log failed"
            return
        finally:
            self.fs.disarm()
        assert self.log.end_repair(job)
        assert job.report.records_lost == 0, "the disk lost nothing here"
        self.failed = False
        self.appended = []  # never confirmed: cut
        assert self._values() == self.confirmed

    @rule()
    def reopen(self) -> None:
        if self.failed:
            return
        assert self.engine is not None
        self.engine.close()
        self.confirmed += self.appended  # a clean close flushes them
        self.appended = []
        self._open()
        assert self.engine.recovery.clean_shutdown

    def _values(self) -> list[bytes]:
        log, values, offset = self.log, [], self.log.start_offset
        while offset < log.end_offset:
            records = log.read(offset)
            values += [r.value for r in records]
            offset = records[-1].offset + 1
        return values

    @invariant()
    def holds_what_it_should(self) -> None:
        if self.engine is None:
            return
        values = self._values()
        if self.failed:
            assert values[: len(self.confirmed)] == self.confirmed, "reads serve the confirmed"
        else:
            assert values == self.confirmed + self.appended
            assert self.log.durable_offset >= len(self.confirmed)

    def teardown(self) -> None:
        self.fs.disarm()
        if self.engine is not None:
            self.engine.close(clean=False)
        shutil.rmtree(self.root, ignore_errors=True)


#: A bounded run in the suite; ROOST_FAULT_EXAMPLES=1000 (and --timeout=0) for a long hunt.
LogUnderFaults.TestCase.settings = settings(
    max_examples=int(os.environ.get("ROOST_FAULT_EXAMPLES", "40")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogUnderFaults = LogUnderFaults.TestCase
