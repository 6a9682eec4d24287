"""The process ``test_kill_during_append`` kills: it appends under ``always`` until it dies.

Run as ``python append_child.py DATA_DIR MODE WRITERS MAX_BYTES``. It opens the engine at
DATA_DIR (recovering whatever the last kill left), prints ``ready <start_offset> <end_offset>``
and appends to partition 0 of topic ``t`` until it is killed:

- ``group``: WRITERS tasks share one event loop and one ``Flusher``; each appends a batch of 1-3
  records and prints ``ok <base_offset> <next_offset>`` once ``wait_durable`` has returned.
- ``inline``: one loop appends a batch, flushes it inline (``PartitionLog.flush``) and prints.

A record's content is a pure function of its offset (``record_at``), so the parent can check
every record it reads back byte for byte, confirmed or not. The writer reads ``end_offset`` and
appends with no ``await`` in between, so the offsets it computed are the ones it gets.

Each line is one ``os.write`` of less than ``PIPE_BUF`` bytes: a kill never tears one. A line is
written only after the records it names are durable, so every ``ok`` line is a promise the parent
may hold the log to. Once the log holds MAX_BYTES the child stops appending (so that the parent's
checks stay fast) and waits to be killed; after ``LIFETIME_S`` it exits on its own, so that a
parent that died first leaves no process behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sys

import uvloop

from roost.clock import SystemClock
from roost.server.flusher import Flusher
from roost.storage import LocalEngine, Record

TOPIC = "t"
LIFETIME_S = 30.0
_BIG_VALUE_BYTES = (2048, 12 * 1024)


def record_at(offset: int) -> tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]:
    """The (key, value, headers) of the record at ``offset``: sizes vary, some fields empty."""
    digest = hashlib.blake2b(offset.to_bytes(8, "little"), digest_size=32).digest()
    shape = digest[0] % 50
    if shape <= 1:
        size = 0
    elif shape == 2:
        size = _BIG_VALUE_BYTES[0] + int.from_bytes(digest[1:3], "little") % (
            _BIG_VALUE_BYTES[1] - _BIG_VALUE_BYTES[0]
        )
    else:
        size = 1 + int.from_bytes(digest[1:3], "little") % 300
    value = (digest * (size // len(digest) + 1))[:size]
    key = None if digest[3] % 3 == 0 else b"key-%d" % offset
    headers: tuple[tuple[str, bytes], ...] = ()
    if digest[4] % 4 == 1:
        headers = (("offset", b"%d" % offset),)
    elif digest[4] % 4 == 2:
        headers = (("offset", b"%d" % offset), ("empty", b""), ("bytes", digest[5:20]))
    return key, value, headers


def _records(base_offset: int, count: int) -> list[Record]:
    records = []
    for offset in range(base_offset, base_offset + count):
        key, value, headers = record_at(offset)
        records.append(Record(value=value, key=key, headers=list(headers)))
    return records


def _say(line: str) -> None:
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


async def _group(engine: LocalEngine, writers: int, max_bytes: int) -> None:
    log = engine.topic(TOPIC).log(0)
    flusher = Flusher(SystemClock())  # inside the running loop, as it requires
    engine.on_dirty = flusher.notify

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        while log.size_bytes < max_bytes:
            base_offset = log.end_offset
            result = log.append(_records(base_offset, rng.randint(1, 3)))
            assert result.base_offset == base_offset, (result, base_offset)
            await flusher.wait_durable(log, result.next_offset)
            _say(f"ok {result.base_offset} {result.next_offset}")

    _say(f"ready {log.start_offset} {log.end_offset}")
    async with asyncio.TaskGroup() as tasks:
        for seed in range(writers):
            tasks.create_task(writer(seed))


def _inline(engine: LocalEngine, max_bytes: int) -> None:
    log = engine.topic(TOPIC).log(0)
    rng = random.Random(0)
    _say(f"ready {log.start_offset} {log.end_offset}")
    while log.size_bytes < max_bytes:
        base_offset = log.end_offset
        result = log.append(_records(base_offset, rng.randint(1, 3)))
        log.flush()
        _say(f"ok {result.base_offset} {result.next_offset}")


def main() -> None:
    data_dir, mode, writers, max_bytes = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:5])
    signal.alarm(int(LIFETIME_S))  # SIGALRM's default action ends the process
    engine = LocalEngine.open(data_dir)
    if mode == "group":
        uvloop.run(_group(engine, writers, max_bytes))
    else:
        _inline(engine, max_bytes)
    # Full: wait for the kill without appending (a signal-free pause never returns on its own).
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
