"""What the storage watch asks the engine once a second, answered without a look at every log:
the failed logs, and the largest segment size."""

from __future__ import annotations

import errno

import pytest

from roost.clock import ManualClock
from roost.errors import StorageFailure
from roost.storage import LocalEngine, Record, TopicConfig
from tests.fault_fs import FaultFS
from tests.unit.test_repair import repair


def test_failed_logs_are_the_ones_that_failed_until_repaired(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()
    engine = LocalEngine.open(data_dir, clock, fs)
    never = TopicConfig(durability="never")
    for name in ("a", "b", "c"):
        engine.create_topic(name, never)
    journal = engine.journal("j")
    assert engine.failed_logs() == []
    fs.arm("pwrite", errno.EIO, match="/topics/b/")
    with pytest.raises(StorageFailure):
        engine.topic("b").append(0, [Record(value=b"x")])
        engine.topic("b").log(0).flush()
    failed = engine.topic("b").log(0)
    assert engine.failed_logs() == [failed]
    fs.arm("pwrite", errno.EIO, match="/journals/j/")
    with pytest.raises(StorageFailure):
        journal.append([b"entry"])
        journal.log.flush()
    assert engine.failed_logs() == [failed, journal.log]
    fs.disarm()
    assert repair(failed)
    assert engine.failed_logs() == [journal.log]
    assert repair(journal.log)
    assert engine.failed_logs() == []
    engine.close()


def test_the_largest_segment_size_follows_the_topics(engine: LocalEngine) -> None:
    assert engine.largest_segment_bytes() == 0
    engine.create_topic("small", TopicConfig(segment_max_bytes=1 << 20))
    engine.create_topic("large", TopicConfig(segment_max_bytes=1 << 24))
    assert engine.largest_segment_bytes() == 1 << 24
    engine.delete_topic("large")
    assert engine.largest_segment_bytes() == 1 << 20
