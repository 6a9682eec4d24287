"""Kill a real appending process at random moments; every confirmed record must survive.

Each round starts ``append_child.py`` on the same data directory. The child recovers what the
last kill left, reports ``ready``, and appends under ``always``, printing ``ok <base> <next>`` for
every batch only after the flusher confirmed it durable. After a random 20-300 ms the parent
SIGKILLs it, reaps it (which releases the directory's lock), opens the engine itself and reads
the whole partition back. It must find:

- offsets dense from ``start_offset`` (0: nothing is ever deleted) to ``end_offset``;
- every record ever confirmed, in every round so far;
- every record present, confirmed or not, byte for byte what was appended at that offset (a
  record's content is a function of its offset, ``record_at``): unconfirmed appends are whole
  or absent, never torn or corrupt; and no read raises.

About half the rounds check a copy of the directory and leave the original as the kill left
it, so the next child's own recovery is exercised too (its ``ready`` line must already show
every confirmed record); the others check in place and close cleanly, so the next child starts
from trusted indexes. About a quarter of the children flush inline instead of through the
flusher: they write each batch through at append time instead of holding it back for the
flush job.

Timing decides only when a kill lands; no check waits on a clock. The rounds, their modes and
their delays come from a fixed seed, though where a kill lands in the child's work still varies.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.storage import LocalEngine, TopicConfig
from roost.storage.recovery import LogRecovery
from tests.crash.append_child import TOPIC, record_at
from tests.crash.line_reader import LineReader

SEED = 0x5EED_0F_C4A5
ROUNDS = 24
KILL_AFTER_S = (0.02, 0.3)
WRITERS = 4
#: The child stops appending once the log is this big: keeps every check (and the number of
#: open segment files) small, whatever the speed of the machine's fsync.
MAX_LOG_BYTES = 16 * 1024 * 1024
#: Generous: only a broken child takes this long, and then the round fails instead of hanging.
CHILD_TIMEOUT_S = 30.0
CONFIG = TopicConfig(
    partitions=1,
    durability="always",
    segment_max_bytes=64 * 1024,
    max_record_bytes=16 * 1024,
    index_interval_bytes=1024,
)
CHILD = Path(__file__).with_name("append_child.py")


@dataclass
class ChildRun:
    """What one child said before it was killed."""

    ready_start: int = -1
    ready_end: int = -1
    confirmed_batches: list[tuple[int, int]] = field(default_factory=list)

    @property
    def confirmed_end(self) -> int:
        """One past the highest offset this child confirmed (0 if it confirmed none)."""
        return max((end for _, end in self.confirmed_batches), default=0)


def run_and_kill(data_dir: str, mode: str, kill_after_s: float, stderr_path: Path) -> ChildRun:
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(CHILD), data_dir, mode, str(WRITERS), str(MAX_LOG_BYTES)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        reader = LineReader(process)
        give_up = time.monotonic() + CHILD_TIMEOUT_S
        while not reader.lines and not reader.eof and time.monotonic() < give_up:
            reader.pump(give_up - time.monotonic())
        assert reader.lines, f"the child never became ready: {stderr_path.read_text()}"
        kill_at = time.monotonic() + kill_after_s
        while not reader.eof and time.monotonic() < kill_at:
            reader.pump(kill_at - time.monotonic())
        process.send_signal(signal.SIGKILL)
        process.wait(CHILD_TIMEOUT_S)
        give_up = time.monotonic() + CHILD_TIMEOUT_S
        while not reader.eof and time.monotonic() < give_up:
            reader.pump(give_up - time.monotonic())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, (
        f"the child exited by itself ({process.returncode}): {stderr_path.read_text()}"
    )
    assert reader.eof
    return parse(reader.lines)


def parse(lines: list[str]) -> ChildRun:
    run = ChildRun()
    word, start, end = lines[0].split()
    assert word == "ready", lines[0]
    run.ready_start, run.ready_end = int(start), int(end)
    for line in lines[1:]:
        word, base, end = line.split()
        assert word == "ok", line
        assert int(base) < int(end), line
        run.confirmed_batches.append((int(base), int(end)))
    return run


def check_log(data_dir: str, confirmed_end: int, where: str) -> LogRecovery:
    """Open ``data_dir`` and check its whole log; returns what recovery did. Closes cleanly."""
    engine = LocalEngine.open(data_dir)
    try:
        topic = engine.topic(TOPIC)
        (recovery,) = engine.recovery.logs
        start, end = topic.start_offset(0), topic.end_offset(0)
        context = f"{where}: log [{start}, {end}), confirmed below {confirmed_end}, {recovery}"
        assert not recovery.clean_shutdown, context
        assert start == 0, context
        assert end >= confirmed_end, f"confirmed records were lost: {context}"
        offset = start
        while offset < end:
            records = topic.read(0, offset, max_bytes=256 * 1024)
            assert records, f"a read at {offset} found nothing: {context}"
            for record in records:
                assert record.offset == offset, f"offsets not dense at {offset}: {context}"
                found = (record.key, record.value, record.headers)
                assert found == record_at(offset), f"record {offset} differs: {context}"
                offset += 1
        assert topic.read(0, end) == [], context
        return recovery
    finally:
        engine.close()


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_kill_during_append_loses_no_confirmed_record(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data_dir = str(tmp_path / "data")
    engine = LocalEngine.open(data_dir)
    engine.create_topic(TOPIC, CONFIG)
    engine.close()

    confirmed_end = 0  # every offset below it was confirmed by some child
    confirmed_batches = cut_rounds = 0
    for round_ in range(ROUNDS):
        mode = "inline" if rng.random() < 0.25 else "group"
        in_copy = rng.random() < 0.5
        kill_after_s = rng.uniform(*KILL_AFTER_S)
        run = run_and_kill(data_dir, mode, kill_after_s, tmp_path / f"stderr-{round_}")
        where = f"round {round_} ({mode}, killed after {kill_after_s * 1000:.0f} ms)"
        assert run.ready_start == 0, where
        assert run.ready_end >= confirmed_end, f"{where}: the child's recovery lost records"
        confirmed_end = max(confirmed_end, run.confirmed_end)
        confirmed_batches += len(run.confirmed_batches)
        if in_copy:
            copy = str(tmp_path / "copy")
            shutil.copytree(data_dir, copy)
            recovery = check_log(copy, confirmed_end, where)
            shutil.rmtree(copy)
        else:
            recovery = check_log(data_dir, confirmed_end, where)
        cut_rounds += recovery.lost_data
    assert confirmed_batches > 0, "no child confirmed anything: the test checked nothing"
    print(
        f"{ROUNDS} kills, {confirmed_batches} batches confirmed below offset {confirmed_end}, "
        f"{cut_rounds} recoveries cut an unconfirmed tail"
    )
