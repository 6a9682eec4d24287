"""Compaction as the host runs it (server/host.py): a pass in a thread, the swap on the loop,
the metrics; a close while a pass runs stops it without a thread writing on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.server.access import TRUSTED
from roost.server.host import Host
from roost.storage import TopicConfig
from roost.storage.compaction import TEMP_SUFFIX, CompactionStopped

CONFIG = TopicConfig(cleanup="compact", segment_max_bytes=1 << 20, max_record_bytes=4096)


async def _filled(path: Path, clock: ManualClock) -> Host:
    host = await Host.start(str(path), clock)
    door = host.door(TRUSTED)
    door.create_topic("kv", CONFIG)
    for version in range(5):
        messages = [
            Outgoing(key=b"k%d" % k, value=b"v%d" % version, partition=0) for k in range(50)
        ]
        await door.publish("kv", messages)
    log = host.engine.topic("kv").log(0)
    log.roll()
    log.flush()
    return host


def test_a_pass_in_the_background_reclaims_and_counts_through_the_wal(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def main() -> None:
        host = await _filled(tmp_path / "data", clock)
        try:
            log = host.engine.topic("kv").log(0)
            assert log.wal is not None and log.wal.mentions(log.compactable_segments()[0].path)
            assert await host.compaction_step()  # its WAL records voided before the swap
            assert not await host.compaction_step(), "nothing dirty is left"
            compactor = host.compactor
            assert (compactor.runs, compactor.segments_compacted) == (1, 1)
            assert compactor.records_removed == 200
            assert compactor.bytes_reclaimed > 0
            log = host.engine.topic("kv").log(0)
            assert [r.value for r in log.read(0)] == [b"v4"] * 50
            assert log.read(0)[0].offset == 200
        finally:
            await host.aclose()

    asyncio.run(main())


def test_closing_during_a_pass_stops_it_and_leaves_the_segment(
    tmp_path: Path, clock: ManualClock
) -> None:
    async def main() -> None:
        host = await _filled(tmp_path / "data", clock)
        job = host.compactor.next_job()
        assert job is not None
        job.stopped = True  # as aclose says it to a pass that runs
        with pytest.raises(CompactionStopped):
            job.run()  # gives up at its first chunk
        assert not job.swaps
        directory = host.engine.topic("kv").log(0).directory
        assert not [n for n in os.listdir(directory) if n.endswith(TEMP_SUFFIX)]
        await host.aclose()

    asyncio.run(main())
