"""A real ``roost serve`` and ``roost check`` on damaged data directories: one clear line, not a
traceback, and the exit status an operator's script can act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from roost.clock import ManualClock
from roost.storage import LocalEngine, TopicConfig


def roost(*args: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", *args],
        check=False, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def make(data_dir: Path) -> None:
    engine = LocalEngine.open(str(data_dir), ManualClock())
    engine.create_topic("orders", TopicConfig(partitions=2))
    engine.create_topic("audit")
    engine.close()


def test_serve_refuses_a_damaged_metadata_file_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make(data_dir)
    metadata = data_dir / "metadata.json"
    metadata.write_bytes(metadata.read_bytes()[:-30])

    served = roost("serve", "--data", str(data_dir), "--port", "0", "--admin-port", "0")
    assert served.returncode == 1
    assert "Traceback" not in served.stderr
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: metadata file {metadata} is damaged (")
    assert f"cp {metadata}.prev {metadata}" in last

    checked = roost("check", str(data_dir))
    assert checked.returncode == 1
    assert "DAMAGED  metadata.json" in checked.stdout

    os.replace(f"{metadata}.prev", metadata)  # what the line said to do
    checked = roost("check", str(data_dir), "--json")
    assert checked.returncode == 0, checked.stdout
