"""A real ``roost serve`` and ``roost check`` on damaged data directories: one clear line, not a
traceback, and the exit status an operator's script can act on."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import roost
from roost.clock import ManualClock
from roost.storage import LocalEngine, TopicConfig
from tests.e2e.test_serve import Server


def run_roost(*args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", *args],
        check=False, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def make(data_dir: Path) -> None:
    """Two topics, each created after a snapshot of the metadata: the last snapshot, its
    previous copy and a journal record after it."""
    engine = LocalEngine.open(str(data_dir), ManualClock())
    engine.metadata.snapshot()
    engine.create_topic("orders", TopicConfig(partitions=2))
    engine.metadata.snapshot()
    engine.create_topic("audit")
    engine.close()


def test_serve_refuses_a_damaged_metadata_file_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make(data_dir)
    metadata = data_dir / "metadata.json"
    metadata.write_bytes(metadata.read_bytes()[:-30])

    served = run_roost("serve", "--data", str(data_dir), "--port", "0", "--admin-port", "0")
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: metadata file {metadata} is damaged (")
    assert f"cp {metadata}.prev {metadata}" in last

    checked = run_roost("check", str(data_dir))
    assert checked.returncode == 1
    assert "DAMAGED  metadata.json" in checked.stdout

    assert f"move {metadata}.journal aside" in last
    os.replace(f"{metadata}.prev", metadata)  # what the line said to do
    os.replace(f"{metadata}.journal", f"{metadata}.journal.aside")
    checked = run_roost("check", str(data_dir), "--json")
    assert checked.returncode == 0, checked.stdout


def test_serve_refuses_a_damaged_metadata_journal_and_check_repairs_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make(data_dir)
    engine = LocalEngine.open(str(data_dir), ManualClock())
    engine.create_topic("late")  # a second record, so that the damaged one is not the last
    engine.close()
    journal = data_dir / "metadata.json.journal"
    damaged = bytearray(journal.read_bytes())
    damaged[4 + 8 + 5] ^= 0xFF  # inside the first record's body
    journal.write_bytes(bytes(damaged))

    served = run_roost("serve", "--data", str(data_dir), "--port", "0", "--admin-port", "0")
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: metadata file {journal} is damaged (record at byte 4: ")
    assert "roost check DATA --repair" in last

    checked = run_roost("check", str(data_dir))
    assert checked.returncode == 1
    assert "DAMAGED  metadata.json.journal" in checked.stdout
    repaired = run_roost("check", str(data_dir), "--repair")
    assert "repaired metadata journal: record at byte 4" in repaired.stdout
    checked = run_roost("check", str(data_dir), "--json")
    assert checked.returncode == 0, checked.stdout
    engine = LocalEngine.open(str(data_dir), ManualClock())
    assert engine.list_topics() == ["orders"], "the changes after the damage are lost"
    engine.close()


def test_a_journal_cut_after_a_kill_9_is_logged_at_the_next_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir)

    async def acked_in_two_steps() -> None:
        async with roost.connect(server.url) as client:
            await client.create_queue("jobs", visibility_timeout=1.0)
            for n in range(6):
                await client.publish("jobs", b"job-%d" % n)
            messages = await client.receive("jobs", max_messages=6, wait=5)
            assert len(messages) == 6
            await client.ack("jobs", "jobs", [m.receipt for m in messages[:4]])
            await client.ack("jobs", "jobs", [m.receipt for m in messages[4:]])  # the last entry

    asyncio.run(acked_in_two_steps())
    server.process.send_signal(signal.SIGKILL)
    server.process.communicate(timeout=30)  # reaps it and closes its pipe
    [segment] = (data_dir / "journals" / "sub-1" / "log").glob("*.log")
    os.truncate(segment, segment.stat().st_size - 2)  # the ack of 4 and 5 is torn

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "roost.cli.main", "serve", "--data", str(data_dir),
         "--port", "0", "--admin-port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    startup = []
    for _ in range(200):
        line = process.stderr.readline()
        startup.append(line)
        if "roost listening on" in line or not line:
            break
    found = re.search(r"roost listening on ([\d.]+:\d+)", line)
    assert found, startup
    url = f"roost://{found.group(1)}"
    try:
        cut = [
            line for line in startup
            if "recovery of subscription jobs/jobs (journal sub-1/0): segment 0: cut " in line
        ]  # fmt: skip
        assert cut, startup

        async def redelivered() -> list[bytes]:
            async with roost.connect(url) as client:
                messages = await client.receive("jobs", max_messages=6, wait=5)
                return sorted(m.value for m in messages)

        assert asyncio.run(redelivered()) == [b"job-4", b"job-5"]  # what the cut entry held
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
