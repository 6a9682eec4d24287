"""``roost check DATA``: every store verified offline, its report, its exit status, --repair.

The data directories are built by a real host (tests/admin/test_corruption_report.py's
``build``) and damaged one store at a time; the command runs in this process through click's
runner, as `roost check` would run it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from roost.cli.check import check
from roost.clock import ManualClock
from roost.errors import DirectoryInUse
from roost.storage import LocalEngine, metadata_journal
from roost.storage.check import check_directory
from roost.storage.engine import CLEAN_MARKER, open_metadata
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, file_name
from tests.admin.test_corruption_report import (
    RECORDS_PER_PARTITION,
    bases,
    build,
    flip,
    journal_segment,
    partition_dir,
)


def run_check(data_dir: str, *flags: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(check, [data_dir, "--json", *flags])
    return result.exit_code, json.loads(result.output)


def stores(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {store["store"]: store for store in report["stores"]}


def snapshot_of(directory: str) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time (ns), LOCK aside."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if name != "LOCK":
                found[path] = (Path(path).read_bytes(), os.stat(path).st_mtime_ns)
    return found


@pytest.fixture
def built(data_dir: str, clock: ManualClock) -> dict[str, str]:
    return build(data_dir, clock)


def test_a_sound_directory_checks_ok_and_nothing_is_touched(
    data_dir: str, built: dict[str, str]
) -> None:
    before = snapshot_of(data_dir)
    status, report = run_check(data_dir)
    assert status == 0
    assert report["ok"] is True and report["clean_shutdown"] is True
    found = stores(report)
    assert found["topics/orders/0"]["records"] == RECORDS_PER_PARTITION
    assert found["topics/orders/0"]["segments"] >= 3
    assert found[f"journals/{built['jobs']}"]["owner"] == "subscription jobs/jobs"
    assert all(not store["problems"] for store in report["stores"])
    assert snapshot_of(data_dir) == before


def test_a_damaged_sealed_segment_is_found_and_named(data_dir: str, built: dict[str, str]) -> None:
    directory = partition_dir(data_dir, "orders", 0)
    middle = bases(directory)[1]
    flip(directory / file_name(middle, LOG_SUFFIX), 60)  # indexes intact: only a scan sees it
    before = snapshot_of(data_dir)

    status, report = run_check(data_dir)
    assert status == 1
    assert report["ok"] is False
    found = stores(report)
    [problem] = found["topics/orders/0"]["problems"]
    assert problem.startswith(f"segment {middle}: bad batch at byte 0 ")
    assert "crc32c mismatch" in problem and "quarantines" in problem
    assert not found["topics/orders/1"]["problems"]
    assert snapshot_of(data_dir) == before, "a check changes nothing"

    text = CliRunner().invoke(check, [data_dir])
    assert text.exit_code == 1
    assert "DAMAGED  topics/orders/0" in text.output
    assert "1 store(s) damaged" in text.output


def test_a_stale_index_is_a_note_not_damage(data_dir: str, built: dict[str, str]) -> None:
    directory = partition_dir(data_dir, "orders", 1)
    first, second = bases(directory)[:2]
    (directory / file_name(first, INDEX_SUFFIX)).write_bytes(b"garbage")
    flip(directory / file_name(second, TIME_INDEX_SUFFIX), 20)
    status, report = run_check(data_dir)
    assert status == 0
    notes = stores(report)["topics/orders/1"]["notes"]
    assert notes == [
        f"segment {first}: index missing or stale: rebuilt on open",
        f"segment {second}: index missing or stale: rebuilt on open",
    ]


def test_a_torn_tail_after_a_crash_is_reported_as_the_cut_recovery_will_make(
    data_dir: str, built: dict[str, str]
) -> None:
    directory = partition_dir(data_dir, "orders", 1)
    last = directory / file_name(bases(directory)[-1], LOG_SUFFIX)
    os.truncate(last, last.stat().st_size - 5)
    os.remove(os.path.join(data_dir, CLEAN_MARKER))
    status, report = run_check(data_dir)
    assert status == 1
    assert report["clean_shutdown"] is False
    [problem] = stores(report)["topics/orders/1"]["problems"]
    assert "recovery cuts" in problem and "torn" in problem


def test_a_damaged_journal_and_snapshot_name_their_subscription(
    data_dir: str, built: dict[str, str]
) -> None:
    flip(journal_segment(data_dir, built["jobs"]), 60)
    snapshot = Path(data_dir) / "journals" / built["mail"] / "snapshot"
    snapshot.parent.mkdir(exist_ok=True)  # a journal never written has no directory yet
    snapshot.write_bytes(b"RSN1 not a snapshot")
    status, report = run_check(data_dir)
    assert status == 1
    found = stores(report)
    jobs = found[f"journals/{built['jobs']}"]
    assert jobs["owner"] == "subscription jobs/jobs"
    [problem] = jobs["problems"]
    assert problem.startswith("segment 0: bad batch at byte ") and "quarantines" in problem
    mail = found[f"journals/{built['mail']}"]
    assert mail["owner"] == "subscription mail/mail"
    assert mail["problems"] == ["snapshot is corrupt: its owner is quarantined"]


def test_a_damaged_metadata_file_says_which_copy_to_restore(
    data_dir: str, built: dict[str, str]
) -> None:
    with open_metadata(data_dir) as store:  # two snapshots: the last and its copy
        store.snapshot()
        store.snapshot()
    metadata = Path(data_dir) / "metadata.json"
    metadata.write_bytes(metadata.read_bytes()[:-20])
    status, report = run_check(data_dir)
    assert status == 1
    [problem] = stores(report)["metadata.json"]["problems"]
    assert f"cp {metadata}.prev {metadata}" in problem
    # Without metadata to go by, the topics on disk are still checked.
    assert stores(report)["topics/orders/0"]["records"] == RECORDS_PER_PARTITION


def test_a_running_broker_is_never_checked_behind_its_back(
    data_dir: str, built: dict[str, str], clock: ManualClock
) -> None:
    engine = LocalEngine.open(data_dir, clock)
    try:
        with pytest.raises(DirectoryInUse):
            check_directory(data_dir)
        result = CliRunner().invoke(check, [data_dir])
        assert result.exit_code == 2
        assert f"in use by process {os.getpid()} (" in result.output  # the holder, named
        assert result.output.rstrip().endswith("stop the broker first")
    finally:
        engine.close()


def test_repair_cuts_at_the_damage_and_the_next_check_is_clean(
    data_dir: str, built: dict[str, str], clock: ManualClock
) -> None:
    directory = partition_dir(data_dir, "orders", 0)
    segments = bases(directory)
    middle = segments[1]
    flip(directory / file_name(middle, LOG_SUFFIX), 60)  # the first batch of the segment

    status, report = run_check(data_dir, "--repair")
    assert status == 1, "data was cut: the status says so"
    [repaired] = report["repaired"]
    assert repaired["log"] == "orders/0"
    # The middle segment is cut to nothing, the one after it dropped.
    assert repaired["segments_dropped"] == len(segments) - 2
    assert repaired["bytes_truncated"] > 0
    assert bases(directory) == segments[:2]
    status, report = run_check(data_dir)
    assert status == 0
    assert stores(report)["topics/orders/0"]["records"] == middle

    engine = LocalEngine.open(data_dir, clock)
    try:
        log = engine.topic("orders").log(0)
        assert not log.quarantined
        assert log.end_offset == middle
        assert [r.offset for r in log.read(0, max_records=1000)] == list(range(middle))
    finally:
        engine.close()


def test_a_damaged_metadata_journal_record_is_reported_and_repair_cuts_it(
    data_dir: str, built: dict[str, str]
) -> None:
    journal = Path(data_dir) / "metadata.json.journal"
    with open_metadata(data_dir) as store:  # one more definition, after what built made
        with store.transaction() as txn:
            txn.put("users", "late", {"grants": []})
        version = store.version
    starts = metadata_journal.scan(journal.read_bytes()).starts
    data = bytearray(journal.read_bytes())
    data[starts[-2] + 10] ^= 0xFF  # the record before the last: intact ones follow it
    journal.write_bytes(bytes(data))

    status, report = run_check(data_dir)
    assert status == 1
    found = stores(report)["metadata.json.journal"]
    assert found["kind"] == "metadata journal" and found["records"] == len(starts) - 2
    [problem] = found["problems"]
    assert f"record at byte {starts[-2]}: checksum mismatch (intact records follow it)" in problem
    assert "the broker will not start" in problem and "--repair" in problem

    status, report = run_check(data_dir, "--repair")
    [repaired] = report["repaired"]
    assert repaired["log"] == "metadata journal"
    assert repaired["bytes_truncated"] == len(data) - starts[-2]
    status, report = run_check(data_dir)
    assert status == 0, report
    with open_metadata(data_dir) as store:
        assert store.version == version - 2 and store.get("users", "late") is None


def test_a_torn_metadata_journal_tail_is_reported_as_cut_on_open(
    data_dir: str, built: dict[str, str]
) -> None:
    journal = Path(data_dir) / "metadata.json.journal"
    journal.write_bytes(journal.read_bytes()[:-3])
    status, report = run_check(data_dir)
    assert status == 1
    [problem] = stores(report)["metadata.json.journal"]["problems"]
    assert problem.startswith("torn last record (record at byte ")
    assert "open cuts" in problem and "never confirmed" in problem
    assert journal.stat().st_size > 0, "the check cuts nothing"


def test_a_topic_never_written_has_no_directory_and_is_no_problem(
    data_dir: str, clock: ManualClock
) -> None:
    """Lazy creation: a named log without a directory is an empty log, a note, not damage."""
    engine = LocalEngine.open(data_dir, clock)
    engine.create_topic("idle")
    engine.close()
    status, report = run_check(data_dir)
    assert status == 0 and report["ok"]
    idle = stores(report)["topics/idle/0"]
    assert idle["problems"] == []
    assert idle["notes"] == ["no directory yet: an empty partition, made by its first write"]
