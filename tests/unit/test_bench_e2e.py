"""``roost bench e2e`` runs a real ``roost serve`` and two client processes (a smoke run)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import main

FIELDS = {
    "msgs_per_s", "producer_msgs_per_s", "consumer_msgs_per_s", "latency_p50_ms",
    "latency_p99_ms", "broker_cpu_us_per_msg", "producer_cpu_us_per_msg",
    "consumer_cpu_us_per_msg", "replay_msgs_per_s", "replay_broker_cpu_us_per_msg",
    "replay_reader_cpu_us_per_msg", "connect_ms",
}  # fmt: skip


def test_bench_e2e_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "e2e", "--json", "--messages", "300", "--batch", "20",
               "--dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures.keys() >= FIELDS
    assert all(figures[name] > 0 for name in FIELDS), figures
    assert figures["settings"]["messages"] == 300
    assert figures["settings"]["received"] >= 300
    assert figures["settings"]["replay_received"] == 300, "every record of the log, once"
    assert list(tmp_path.iterdir()) == [], "the bench cleans up after itself"


def test_bench_e2e_auth_and_tls_beside_plain(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "e2e", "--json", "--tls", "--auth", "--rounds", "2", "--messages",
               "300", "--batch", "20", "--dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures.keys() >= FIELDS, "the plain run's figures, as without --tls"
    for variant in ("auth", "tls"):
        assert figures[variant].keys() >= FIELDS
        assert all(figures[variant][name] > 0 for name in FIELDS), figures[variant]
        assert figures[f"{variant}_msgs_per_s"] == figures[variant]["msgs_per_s"]
        assert figures[f"{variant}_vs_plain_msgs_ratio"] == round(
            figures[variant]["msgs_per_s"] / figures["msgs_per_s"], 3
        )
        assert figures[f"{variant}_vs_plain_replay_ratio"] > 0
    assert figures["settings"]["variants"] == {
        "plain": "plain", "auth": "SCRAM users", "tls": "SCRAM users, TLS"
    }  # fmt: skip
    assert figures["settings"]["rounds"] == 2, "medians of two runs of each"
    assert list(tmp_path.iterdir()) == [], "every broker's directory (and certificates) gone"


def test_bench_e2e_tls_measures_brokers_of_its_own() -> None:
    result = CliRunner().invoke(main, ["bench", "e2e", "--tls", "--url", "roost://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "leave out --url" in result.output
