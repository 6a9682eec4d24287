"""``roost bench breadth`` at a tiny size: a real broker, figures of the right shape that add
up (not its speed: that is the benchmark's to say, in docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli.main import main

QUEUES = 12


def test_bench_breadth_json_measures_one_queue_against_many(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "breadth", "--json", "--dir", str(tmp_path), "--queues", str(QUEUES),
               "--idle-seconds", "0.3", "--paced-seconds", "0.3", "--rate", "100",
               "--max-open-files", "16"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["queues"] == QUEUES
    assert figures["create_s"] > 0
    assert figures["creates_per_s"] * figures["create_s"] == pytest.approx(QUEUES, rel=0.1)
    assert figures["create_ms_first10"] > 0 and figures["create_ms_last10"] > 0
    for count in ("1", "n"):
        assert 0 <= figures[f"idle_cpu_{count}"] < 2, "cores of a 2-core machine at most"
        assert 0 < figures[f"paced_p50_ms_{count}"] <= figures[f"paced_p99_ms_{count}"]
        assert figures[f"rss_bytes_{count}"] > 0 and figures[f"fds_{count}"] > 0
    # The ratio is of the unrounded latencies; the printed ones are rounded.
    assert figures["paced_p99_ratio"] == pytest.approx(
        figures["paced_p99_ms_n"] / figures["paced_p99_ms_1"], rel=0.01
    )
    # An idle queue never written has no file to hold open (lazy creation).
    fds = figures["fds"]
    assert (fds["at_1"], fds["at_n"]) == (figures["fds_1"], figures["fds_n"])
    assert fds["per_idle_queue"] == pytest.approx((fds["at_n"] - fds["at_1"]) / QUEUES, abs=1e-3)
    assert fds["max_open_files"] == 16 and fds["open_files_limit"] > 16
    assert fds["at_n"] - fds["at_1"] < QUEUES, "idle queues hold no files"
    assert list(tmp_path.iterdir()) == [], "the broker's directory removed"


def test_bench_breadth_creates_times_each_create_and_adds_up(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "breadth", "--json", "--dir", str(tmp_path), "--creates", "30",
               "--batch", "10", "--clients", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["creates"], figures["clients"], figures["batch"]) == (30, 3, 10)
    # create_s is rounded to 1 ms and creates_per_s to 0.1: a fast run's product moves by
    # creates_per_s x 0.5 ms of rounding alone.
    rounding = figures["creates_per_s"] * 0.0005 + figures["create_s"] * 0.05
    assert figures["creates_per_s"] * figures["create_s"] == pytest.approx(30, abs=rounding + 0.01)
    assert figures["create_ms_10th"] > 0 and figures["create_ms_nth"] > 0
    assert figures["create_ms_p99"] <= figures["create_ms_max"]
    assert 1 <= figures["slowest_create"] <= 30
    assert figures["broker_cpu_ms_per_create"] > 0
    assert list(tmp_path.iterdir()) == [], "the broker's directory removed"


def test_bench_breadth_refuses_nonsense_sizes() -> None:
    result = CliRunner().invoke(main, ["bench", "breadth", "--queues", "0"])
    assert result.exit_code == 2
    assert "must be positive" in result.output


def test_bench_breadth_active_runs_the_same_traffic_over_n_queues_and_over_4(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        main, ["bench", "breadth", "--json", "--dir", str(tmp_path), "--active", "6",
               "--messages", "600", "--publish-batch", "10", "--inflight", "40",
               "--prefetch", "8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["active"], figures["baseline_queues"]) == (6, 4)
    assert figures["ratio"] == pytest.approx(
        figures["msgs_per_s_n"] / figures["msgs_per_s_base"], rel=0.01
    )
    for case in ("base", "n"):
        run = figures[case]
        assert run["received"] >= 600, "every message was received"
        assert run["msgs_per_s"] > 0 and run["broker_cpu_us_per_msg"] > 0
        # Durable queues: every run made its messages durable in flush rounds that synced.
        assert run["flush_rounds_per_s"] > 0 and run["syncs_per_s"] > 0
        assert run["records_per_round"] > 0
        assert run["wal_checkpoints"] == 0, "600 small messages fill no WAL file"
    assert list(tmp_path.iterdir()) == [], "the brokers' directories removed"


def test_bench_breadth_active_refuses_nonsense_sizes() -> None:
    result = CliRunner().invoke(main, ["bench", "breadth", "--active", "5", "--messages", "0"])
    assert result.exit_code == 2
    assert "must be positive" in result.output
