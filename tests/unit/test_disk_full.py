"""A full disk and a failing one, through the host: publishes stop, consumers go on, and it
all heals without a restart."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable

import pytest

from roost.admin.metrics import host_registry
from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.errors import DiskFull, StorageFailure
from roost.server.access import TRUSTED
from roost.server.disk_space import DEFAULT_HEADROOM_BYTES, DiskWatermark, default_watermark
from roost.server.host import Host
from tests.fault_fs import FaultFS, start_host
from tests.metrics_support import scrape, value


def run(
    data_dir: str, clock: ManualClock, fs: FaultFS, body: Callable[[Host], Awaitable[None]]
) -> None:
    """A host on ``fs`` without its background tasks: the test calls ``storage.check``."""

    async def main() -> None:
        host = await start_host(data_dir, clock, fs)
        try:
            await body(host)
        finally:
            fs.disarm()
            await host.aclose()

    asyncio.run(main())


def out(value: bytes) -> list[Outgoing]:
    return [Outgoing(value=value)]


def test_below_the_watermark_publishes_stop_consumers_go_on_and_it_resumes(
    data_dir: str, clock: ManualClock
) -> None:
    free = [10_000_000]

    async def body(host: Host) -> None:
        host.storage.disk = DiskWatermark(host.engine.path, 1_000_000, lambda _path: free[0])
        door = host.door(TRUSTED)
        door.create_queue("q")
        await host.publish("q", out(b"before"))
        await host.storage.check()
        free[0] = 999_999
        await host.storage.check()
        with pytest.raises(DiskFull) as refused:
            await host.publish("q", out(b"refused"))
        assert refused.value.retriable
        assert (refused.value.free_bytes, refused.value.min_free_bytes) == (999_999, 1_000_000)
        assert "999999 bytes free" in str(refused.value)
        with pytest.raises(DiskFull):
            door.publish_now("q", out(b"refused too"))
        with pytest.raises(DiskFull):
            await host.check_ready()
        samples = scrape(host_registry(host))
        assert value(samples, "roost_disk_publishes_refused") == 1
        assert value(samples, "roost_disk_min_free_bytes") == 1_000_000

        messages = await host.receive("q", "q", max_messages=10)
        assert [m.value for m in messages] == [b"before"], "receives go on"
        assert door.ack("q", "q", [m.receipt for m in messages]) == [], "acks go on"

        free[0] = 2_000_000
        await host.storage.check()
        await host.publish("q", out(b"after"))
        await host.check_ready()
        messages = await host.receive("q", "q", max_messages=10)
        assert [m.value for m in messages] == [b"after"], "nothing refused was stored"
        assert value(scrape(host_registry(host)), "roost_disk_publishes_refused") == 0

    run(data_dir, clock, FaultFS(), body)


def test_the_default_watermark_follows_the_largest_segment(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(host: Host) -> None:
        host.storage.disk = DiskWatermark(host.engine.path, None, lambda _path: 10 * 2**40)
        host.door(TRUSTED).create_topic("small")
        await host.storage.check()
        assert host.storage.disk.min_free_bytes == default_watermark(64 * 1024 * 1024)
        assert host.storage.disk.min_free_bytes == 2 * 64 * 2**20 + DEFAULT_HEADROOM_BYTES
        assert not host.storage.disk.low

    run(data_dir, clock, FaultFS(), body)


def test_an_eio_fails_one_log_others_serve_and_a_probe_repairs_it(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_topic("t")
        door.create_queue("other")
        registry = host_registry(host)
        await host.publish("t", out(b"confirmed"))
        fs.arm("pwrite", errno.EIO, match="/topics/t/", times=-1)
        fs.arm("write_file", errno.EIO, match="WRITE_PROBE", times=-1)
        with pytest.raises(StorageFailure):
            await host.publish("t", out(b"got an error"))
        with pytest.raises(StorageFailure, match="t/0"):
            await host.check_ready()
        assert value(scrape(registry), "roost_partition_write_failed", topic="t", partition=0)

        await host.publish("other", out(b"served"))  # other logs keep serving
        [message] = await host.receive("other", "other")
        assert door.ack("other", "other", [message.receipt]) == []

        await host.storage.check()  # the probe fails: no repair yet
        assert [log.name for log in host.engine.failed_logs()] == ["t/0"]
        fs.disarm()
        await host.storage.check()
        assert host.engine.failed_logs() == []
        assert value(scrape(registry), "roost_partition_write_failed", topic="t", partition=0) == 0
        assert value(scrape(registry), "roost_log_repairs_total") == 1
        [report] = host.storage.repairs
        assert (report.log, report.records_cut, report.records_lost) == ("t/0", 1, 0)
        [published] = await host.publish("t", out(b"retried"))
        assert published.offset == 1, "the retry takes the cut offset: no duplicate"
        await host.check_ready()
        assert [r.value for r in host.engine.topic("t").read(0, 0)] == [b"confirmed", b"retried"]

    run(data_dir, clock, fs, body)


def test_an_idempotent_retry_after_a_cut_is_stored_once(data_dir: str, clock: ManualClock) -> None:
    fs = FaultFS()

    async def body(host: Host) -> None:
        host.door(TRUSTED).create_topic("t")
        await host.publish("t", out(b"first"), producer_id="p", sequence=0)
        fs.arm("pwrite", errno.EIO, match="/topics/t/")
        with pytest.raises(StorageFailure):
            await host.publish("t", out(b"second"), producer_id="p", sequence=1)
        await host.storage.repair_now()
        # The producer state had recorded sequence 1 at offset 1, which the repair cut: the
        # retry must be appended, not "confirmed again" at an offset that holds nothing.
        [published] = await asyncio.wait_for(
            host.publish("t", out(b"second"), producer_id="p", sequence=1), 5
        )
        assert published.offset == 1
        [again] = await host.publish("t", out(b"second"), producer_id="p", sequence=1)
        assert again.offset == 1, "a retry of a stored batch is confirmed, not appended"
        assert [r.value for r in host.engine.topic("t").read(0, 0)] == [b"first", b"second"]

    run(data_dir, clock, fs, body)

    async def reopened(host: Host) -> None:
        [again] = await host.publish("t", out(b"second"), producer_id="p", sequence=1)
        assert again.offset == 1, "the producer journal agrees with the log after a restart"
        assert [r.value for r in host.engine.topic("t").read(0, 0)] == [b"first", b"second"]

    run(data_dir, clock, FaultFS(), reopened)


def test_a_failed_journal_stops_acks_only_until_its_repair(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("q")
        for i in range(3):
            await host.publish("q", out(b"%d" % i))
        first, second, third = await host.receive("q", "q", max_messages=3)
        assert door.ack("q", "q", [first.receipt]) == []
        [journal] = [j for j in host.engine.journals() if j.name.startswith("sub-")]
        fs.arm("fdatasync", errno.EIO, match="/journals/")
        with pytest.raises(StorageFailure):
            await host.flusher.wait_durable(journal.log, journal.log.end_offset)
        assert value(
            scrape(host_registry(host)),
            "roost_partition_write_failed",
            topic=f"journal:{journal.name}",
            partition=0,
        )
        with pytest.raises(StorageFailure, match=f"journal {journal.name}"):
            door.ack("q", "q", [second.receipt])
        await host.publish("q", out(b"publishes go on"))
        await host.storage.check()
        assert host.engine.failed_logs() == []
        # The failed ack was applied in memory before its entry failed: a retry finds it
        # done. The repair's snapshot makes it durable all the same (see reopened below).
        assert door.ack("q", "q", [second.receipt, third.receipt]) in ([], [second.receipt])
        [fourth] = await host.receive("q", "q")
        assert fourth.value == b"publishes go on"
        assert door.ack("q", "q", [fourth.receipt]) == []

    run(data_dir, clock, fs, body)

    async def reopened(host: Host) -> None:
        assert await host.receive("q", "q", max_messages=10) == [], "every ack survived"

    run(data_dir, clock, FaultFS(), reopened)


def test_a_log_that_keeps_failing_is_repaired_less_and_less_often(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()

    async def fail(host: Host) -> None:
        fs.arm("pwrite", errno.EIO, match="/topics/t/")
        with pytest.raises(StorageFailure):
            await host.publish("t", out(b"x"))

    async def body(host: Host) -> None:
        host.door(TRUSTED).create_topic("t")
        await fail(host)
        await host.storage.check()
        assert host.engine.failed_logs() == [], "the first repair is at once"
        for wait_ms in (1_000, 2_000, 4_000):
            await fail(host)
            clock.advance(wait_ms - 1)
            await host.storage.check()
            assert host.engine.failed_logs(), f"not before {wait_ms} ms"
            clock.advance(1)
            await host.storage.check()
            assert host.engine.failed_logs() == [], f"after {wait_ms} ms"
        assert (await host.storage.repair_now()).still_failed == [], "an operator never waits"
        await host.publish("t", out(b"works"))

    run(data_dir, clock, fs, body)


def test_records_the_disk_lost_are_skipped_not_reused(data_dir: str, clock: ManualClock) -> None:
    """Under ``interval`` a publish is confirmed before its fsync; an EIO at the fsync may mean
    the disk never got it. The repair finds it gone, and the offsets the queue had delivered
    and acked are skipped (a gap batch), so a new record is not taken for an acked one."""
    fs = FaultFS()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("q", durability="interval")
        for i in range(3):
            await host.publish("q", out(b"%d" % i))
        messages = await host.receive("q", "q", max_messages=3)
        assert door.ack("q", "q", [m.receipt for m in messages]) == []
        log = host.engine.topic("q").log(0)
        fs.arm("fdatasync", errno.EIO, match="/topics/q/")
        with pytest.raises(StorageFailure):
            await host.flusher.wait_durable(log, log.end_offset)
        segment = os.path.join(log.directory, sorted(os.listdir(log.directory))[0])
        with open(segment, "r+b") as f:  # the kernel dropped the pages it could not write
            f.truncate(0)
        fs.disarm()
        await host.storage.check()
        [report] = host.storage.repairs
        assert report.records_lost == 3
        assert log.end_offset == 3, "past every offset the queue had seen"
        [published] = await host.publish("q", out(b"new"))
        assert published.offset == 3
        [message] = await host.receive("q", "q")
        assert message.value == b"new", "delivered, not taken for an acked record"

    run(data_dir, clock, fs, body)
