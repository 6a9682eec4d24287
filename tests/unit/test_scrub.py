"""The scrub (roost.storage.scrub): sealed segments re-verified in bounded chunks, damage found
without a reader, the partition quarantined at once; a sound log passes untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.storage import LocalEngine, Record, TopicConfig, scrub
from roost.storage.scrub import Scrubber
from roost.storage.segment import LOG_SUFFIX, file_name

CONFIG = TopicConfig(partitions=2, segment_max_bytes=4096, max_record_bytes=1024)
CHUNK_BYTES = 1000
RECORD = b"." * 200  # ~260 bytes a batch: several batches a chunk, 15 a segment


def build(data_dir: str, clock: ManualClock) -> None:
    engine = LocalEngine.open(data_dir, clock)
    topic = engine.create_topic("orders", CONFIG)
    for _ in range(50):
        clock.advance(1)
        for p in (0, 1):
            topic.append(p, [Record(value=RECORD)])
    engine.close()


def scrub_pass(scrubber: Scrubber) -> list[int]:
    """Steps until one whole pass is done; the bytes each step read."""
    read = []
    for _ in range(1_000):
        job = scrubber.next_job()
        assert job is not None
        result = job.run()
        scrubber.finish(job, result)
        read.append(result.bytes_read)
        if scrubber.passes:
            return read
    raise AssertionError("the scrub never finished a pass")


def test_a_sound_log_is_verified_whole_in_bounded_steps(data_dir: str, clock: ManualClock) -> None:
    build(data_dir, clock)
    engine = LocalEngine.open(data_dir, clock)
    try:
        sealed = sum(
            size for log in engine.topic("orders").partitions
            for size in log.sealed_segments().values()
        )  # fmt: skip
        assert sealed > 4 * CHUNK_BYTES
        scrubber = Scrubber(engine, chunk_bytes=CHUNK_BYTES)
        read = scrub_pass(scrubber)
        assert scrubber.found == 0
        assert max(read) <= CHUNK_BYTES + 300, "a step reads a chunk, and at most one batch more"
        assert scrubber.bytes_verified >= sealed
        assert not any(log.quarantined for log in engine.topic("orders").partitions)
    finally:
        engine.close()


def test_damage_in_a_sealed_segment_nobody_reads_is_found_and_quarantined(
    data_dir: str, clock: ManualClock
) -> None:
    build(data_dir, clock)
    directory = Path(data_dir) / "topics" / "orders" / "1"
    bases = sorted(int(p.name[: -len(LOG_SUFFIX)]) for p in directory.glob("*" + LOG_SUFFIX))
    victim = directory / file_name(bases[0], LOG_SUFFIX)
    data = bytearray(victim.read_bytes())
    data[2500] ^= 0x01  # a payload byte, deep in the segment
    victim.write_bytes(data)

    engine = LocalEngine.open(data_dir, clock)  # clean: the index is trusted, nothing scanned
    try:
        orders = engine.topic("orders")
        assert not orders.log(1).quarantined
        scrubber = Scrubber(engine, chunk_bytes=CHUNK_BYTES)
        scrub_pass(scrubber)
        assert scrubber.found == 1
        damage = orders.log(1).quarantined
        assert damage.startswith(f"segment {bases[0]}: the scrub found a bad batch at byte ")
        assert "crc32c mismatch" in damage
        assert not orders.log(0).quarantined
        assert (directory / "QUARANTINE").read_text() == damage
        assert orders.log(0).read(0, max_records=1)[0].value == RECORD
    finally:
        engine.close()


def test_a_segment_deleted_by_retention_meanwhile_is_skipped(
    data_dir: str, clock: ManualClock
) -> None:
    build(data_dir, clock)
    engine = LocalEngine.open(data_dir, clock)
    try:
        scrubber = Scrubber(engine, chunk_bytes=CHUNK_BYTES)
        job = scrubber.next_job()
        assert job is not None
        log = job.log
        log.delete_below(log.end_offset)  # every sealed segment goes
        result = job.run()
        assert result.gone
        scrubber.finish(job, result)
        assert not log.quarantined
    finally:
        engine.close()


def test_a_pass_looks_for_sealed_segments_a_share_of_the_topics_at_a_time(
    data_dir: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan runs on the event loop: at 100,000 topics, whole, it was a ~0.4 s stall."""
    monkeypatch.setattr(scrub, "SCAN_TOPICS_PER_STEP", 2)
    build(data_dir, clock)  # "orders": sealed segments
    engine = LocalEngine.open(data_dir, clock)
    try:
        for name in ("a", "b", "c", "d"):  # idle: nothing sealed
            engine.create_topic(name)
        scrubber = Scrubber(engine, chunk_bytes=CHUNK_BYTES)
        calls = []
        for _ in range(10):
            job = scrubber.next_job()
            calls.append((job is not None, scrubber.scanning))
            if job is not None:
                break
        # "orders" first (the order topics were made in), then a job at once.
        assert calls == [(True, True)]
        engine.delete_topic("orders")
        for _ in range(100):  # the rest of this pass, then passes over idle topics only
            job = scrubber.next_job()
            if job is None and not scrubber.scanning:
                break
            if job is not None:
                scrubber.finish(job, job.run())
        calls = []
        for _ in range(10):
            calls.append((scrubber.next_job() is not None, scrubber.scanning))
            if not calls[-1][1]:
                break
        assert calls == [(False, True), (False, False)]  # 4 topics, 2 a call, then it pauses
    finally:
        engine.close()
