"""``roost bench faults`` at tiny sizes: real brokers, real floods, figures that add up."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import main

CONNECTIONS = 40


def test_bench_faults_json_measures_each_flood_and_the_soak(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "faults", "--json", "--dir", str(tmp_path), "--case", "idle",
               "--case", "unread", "--case", "slowloris",
               "--idle-connections", str(CONNECTIONS), "--unread-messages", "2000",
               "--slowloris", str(CONNECTIONS), "--slowloris-declared-bytes", "65536",
               "--probe-seconds", "0.5", "--soak", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["idle_rss_mb"] > 0 and figures["idle_fds"] > 0
    assert figures["alone_msgs_per_s"] > 0
    for alone in figures["alone_cpu_before_after"]:
        assert alone["broker_cpu_s"] > 0 and alone["probe_cpu_s"] > 0
        assert "flood_cpu_s" not in alone, "no flood runs beside the probe alone"
    cases = figures["cases"]
    assert set(cases) == {"idle", "unread", "slowloris"}
    for case, found in cases.items():
        assert found["rss_peak_mb"] >= found["idle_rss_mb"] * 0.9, case
        assert found["probe_msgs_per_s"] > 0, case
        assert figures[f"{case}_throughput_ratio"] == found["throughput_ratio"] > 0
        assert not found["aborted"], case
        # The CPU each process used while the probe published, measured apart.
        assert found["broker_cpu_s"] > 0 and found["probe_cpu_s"] > 0, case
        assert found["flood_cpu_s"] >= 0 and found["probe_window_s"] > 0, case
        ours = found["broker_cpu_s"] + found["flood_cpu_s"] + found["probe_cpu_s"]
        assert found["machine_busy_s"] >= ours - 0.1, (case, "the machine ran them all")
        assert found["others_cpu_s"] >= 0, case
        paired = found["probe_msgs_per_s"] / found["alone_just_before"]["msgs_per_s"]
        assert figures[f"{case}_throughput_ratio_paired"] == round(paired, 3), case
        assert found["alone_just_before"]["broker_cpu_s"] > 0, case
    assert cases["idle"]["flood"] == {"opened": CONNECTIONS, "refused": 0,
                                      "alive_at_stop": CONNECTIONS}  # fmt: skip
    assert cases["idle"]["fds_peak"] >= cases["idle"]["idle_fds"] + CONNECTIONS, (
        "the broker held a socket per idle connection while it was sampled"
    )
    assert cases["unread"]["flood"]["messages_sent"] == 2000
    assert cases["slowloris"]["flood"]["opened"] == CONNECTIONS
    soak = figures["soak"]
    assert soak["rate_msgs_per_s"] == round(soak["capacity_msgs_per_s"] / 2, 1)
    assert [p for p in soak["p99_ms"] if p is not None], "latencies sampled in the soak"
    assert soak["rss_last_vs_first"] is not None
    assert soak["published"] > 0 and soak["undelivered"] == 0, "the soak got all it published"
    assert figures["settings"]["fd_limit"] >= CONNECTIONS
    assert list(tmp_path.iterdir()) == [], "every broker's directory removed"


def test_bench_faults_refuses_nonsense_sizes() -> None:
    result = CliRunner().invoke(main, ["bench", "faults", "--idle-connections", "0"])
    assert result.exit_code == 2
    assert "must be positive" in result.output
