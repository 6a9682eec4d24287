"""``roost bench compaction`` prints figures that hang together (never timed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.bench.compaction import run_compaction_bench
from roost.cli.main import main


def test_the_figures_come_from_one_log_and_add_up(tmp_path: Path) -> None:
    # One round: its ratio is the one the two rates give (over rounds it is the median of
    # each round's own pair).
    result = run_compaction_bench(str(tmp_path), records=20_000, keys=200, rounds=1)
    assert result["log_mb"] > 8, "more than one sealed segment"
    ratio = result["compaction_mbps"] / result["read_mbps"]
    assert result["compaction_ratio"] == pytest.approx(ratio, rel=0.01, abs=0.002)
    assert result["reclaimed_ratio"] > 0.9, "199 of every 200 records of a key go"
    assert result["cpu_ratio"] > 0
    assert result["host_pass_s"] > 0, "a broker's own pass ended"
    assert result["loop_lag_max_ms"] >= result["loop_lag_p99_ms"] >= 0
    assert list(tmp_path.iterdir()) == [], "each round's directory is removed"


def test_the_command_prints_one_json_object(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main,
        ["bench", "compaction", "--json", "--dir", str(tmp_path), "--records", "12000",
         "--keys", "100", "--rounds", "1"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    figures = json.loads(out.stdout)
    assert {"read_mbps", "compaction_mbps", "compaction_ratio", "cpu_ratio",
            "loop_lag_p99_ms", "idle_loop_lag_p99_ms"} <= set(figures)  # fmt: skip
