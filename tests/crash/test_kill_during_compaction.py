"""SIGKILL a real ``roost serve`` in the middle of compaction passes; nothing is lost.

The data directory is prepared in this process: a compacted topic of small segments holding
``KEYS`` keys overwritten many times (and some tombstones). ``roost serve`` starts on it with
compaction paced slowly (``ROOST_COMPACTION_BYTES_PER_S``), so a pass takes seconds; the test
publishes more keyed records (recorded once confirmed) and kills the server with SIGKILL at
points found by watching the partition directory: while a pass writes its temporary file, and
after it swapped some segments in. After the last kill a server runs until compaction is done
and stops cleanly. Then, reading the files with the storage engine:

1. every record stored is the one published at that offset (offsets preserved, bytes equal);
2. the latest record of every key is there, and nothing at or past the first uncompacted
   offset is missing (the active segment is never compacted);
3. no temporary file is left, recovery reported no loss, and the log ends where it did.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import roost
from roost.clock import SystemClock
from roost.storage import LocalEngine, Record, TopicConfig
from roost.storage.compaction import TEMP_SUFFIX
from tests.e2e.test_serve import Server

KEYS = 30
VERSIONS = 60
VALUE_BYTES = 400
CONFIG = TopicConfig(cleanup="compact", segment_max_bytes=64 * 1024, max_record_bytes=4096)
ENV = {"ROOST_COMPACTION_BYTES_PER_S": "400000"}
#: Bounded waits for what the server does on its own (a pass starting, a swap).
WATCH_S = 30.0


def _value(key: int, version: int) -> bytes:
    head = b"k%02d:v%04d:" % (key, version)
    return head + bytes([65 + key % 26]) * (VALUE_BYTES - len(head))


def _prepare(data_dir: Path) -> dict[int, tuple[bytes, bytes]]:
    engine = LocalEngine.open(str(data_dir), SystemClock())
    log = engine.create_topic("kv", CONFIG).log(0)
    published: dict[int, tuple[bytes, bytes]] = {}
    for version in range(VERSIONS):
        for key in range(KEYS):
            value = b"" if version == VERSIONS - 1 and key % 7 == 0 else _value(key, version)
            record = Record(key=b"k%02d" % key, value=value)
            [offset] = range(*log.append([record]))
            published[offset] = (record.key or b"", value)
    log.flush()
    engine.close()
    return published


def _partition_dir(data_dir: Path) -> Path:
    return data_dir / "topics" / "kv" / "0"


def _segment_sizes(data_dir: Path) -> dict[str, int]:
    directory = _partition_dir(data_dir)
    return {n: (directory / n).stat().st_size for n in os.listdir(directory) if n.endswith(".log")}


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:  # bounded
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {WATCH_S} s")


def _publish_some(url: str, published: dict[int, tuple[bytes, bytes]], round_: int) -> None:
    """Enough to roll segments through the server's shared WAL: compacting those voids
    their WAL records, which the replay after the next kill must respect."""

    async def main() -> None:
        async with roost.connect(url) as client:
            for version in range(16):
                for key in range(0, KEYS, 2):
                    value = b"r%d:" % round_ + _value(key, 9000 + 10 * round_ + version)
                    receipt = await client.publish("kv", value, key=b"k%02d" % key)
                    published[receipt.offset] = (b"k%02d" % key, value)

    asyncio.run(main())


def _kill(server: Server) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.communicate(timeout=30)


def test_a_kill_during_compaction_loses_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    published = _prepare(data_dir)
    before = _segment_sizes(data_dir)
    directory = _partition_dir(data_dir)

    server = Server(data_dir, env=ENV)
    _publish_some(server.url, published, 0)
    _wait_for(lambda: any(n.endswith(TEMP_SUFFIX) for n in os.listdir(directory)), "pass")
    _kill(server)  # while a pass writes its temporary file

    server = Server(data_dir, env=ENV)
    _publish_some(server.url, published, 1)
    _wait_for(
        lambda: any(_segment_sizes(data_dir).get(n, s) != s for n, s in before.items()), "swap"
    )
    _kill(server)  # after a swap, with more of the pass to go

    server = Server(data_dir, env={"ROOST_COMPACTION_BYTES_PER_S": "0"})
    _publish_some(server.url, published, 2)
    _wait_for(lambda: sum(_segment_sizes(data_dir).values()) < sum(before.values()) / 4, "end")
    assert server.stop() == 0

    engine = LocalEngine.open(str(data_dir), SystemClock())
    try:
        log = engine.topic("kv").log(0)
        assert not log.recovery.lost_data, log.recovery.problems
        assert log.end_offset == max(published) + 1
        found: dict[int, tuple[bytes, bytes]] = {}
        offset = log.start_offset
        for _ in range(len(published) + 1):  # bounded: each read returns records or ends
            records = log.read(offset)
            if not records:
                break
            found.update((r.offset, (r.key or b"", r.value)) for r in records)
            offset = records[-1].offset + 1
        for at, record in found.items():
            assert record == published[at], f"offset {at} changed"
        latest = {key: at for at, (key, _) in sorted(published.items())}
        assert set(latest.values()) <= set(found), "the latest record of every key is there"
        assert len(found) < len(published) / 4, "compaction did its work"
        assert not [n for n in os.listdir(directory) if n.endswith(TEMP_SUFFIX)]
    finally:
        engine.close()
