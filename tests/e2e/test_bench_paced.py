"""``roost bench paced`` at a tiny size: a real broker and client processes, figures of the
right shape that add up (not its speed: that is the benchmark's to say, in
docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli.main import main


def test_bench_paced_json_measures_each_rate_and_the_large_case(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "paced", "--json", "--dir", str(tmp_path), "--rate", "200",
               "--rate", "400", "--seconds", "0.5", "--large-rate", "20",
               "--large-bytes", str(64 * 1024)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert 0 <= figures["idle_cores"] < 2, "cores of a 2-core machine at most"
    for case, rate, size in (("r200", 200, 1024), ("r400", 400, 1024), ("large_r20", 20, 65536)):
        messages = figures[f"{case}_messages"]
        assert messages == int(rate * 0.5)
        per_msg = figures[f"{case}_broker_cpu_us_per_msg"]
        assert per_msg > 0
        assert figures[f"{case}_broker_cpu_us_per_kib"] == pytest.approx(
            per_msg / (size / 1024), rel=0.02, abs=0.01
        )
        assert 0 <= figures[f"{case}_net_cpu_us_per_msg"] <= per_msg
        wakeups = figures[f"{case}_broker_wakeups_per_msg"]
        assert wakeups > 0, "a broker serving messages was put on a CPU"
        assert figures[f"{case}_broker_cpu_us_per_wakeup"] == pytest.approx(
            per_msg / wakeups, rel=0.05
        )
        assert 0 < figures[f"{case}_broker_cores"] < 2
        assert 0 < figures[f"{case}_p50_ms"] <= figures[f"{case}_p99_ms"]
        assert figures[f"{case}_producer_cpu_us_per_msg"] > 0
        assert figures[f"{case}_consumer_cpu_us_per_msg"] > 0
    # The baseline: the first rate again with nothing synced, and the difference.
    assert figures["r200_never_messages"] == 100
    assert figures["r200_sync_cpu_us_per_msg"] == pytest.approx(
        figures["r200_broker_cpu_us_per_msg"] - figures["r200_never_broker_cpu_us_per_msg"],
        abs=0.2,
    )
    assert list(tmp_path.iterdir()) == [], "the broker's directory removed"


def test_bench_paced_refuses_nonsense_rates() -> None:
    result = CliRunner().invoke(main, ["bench", "paced", "--rate", "0"])
    assert result.exit_code == 2
    assert "must be positive" in result.output
