"""``roost bench core`` prints every field the issue names (a smoke run, not a timing)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import main

FIELDS = {
    "append_rps", "queue_rps", "queue_vs_append_ratio", "keyed_rps", "stream_read_rps",
    "queue_cpu_us_per_msg", "log_read_rps", "append_cpu_us_per_msg", "keyed_cpu_us_per_msg",
    "stream_cpu_us_per_msg", "delayed_queue_rps", "delayed_vs_queue_ratio",
    "delayed_rss_mb", "delayed_first_receive_ms",
}  # fmt: skip
TINY = ["--messages", "200", "--batch", "20", "--keys", "10", "--delayed", "1500"]


def test_bench_core_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "core", "--json", *TINY, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures.keys() >= FIELDS
    assert all(figures[name] > 0 for name in FIELDS)
    assert figures["settings"]["messages"] == 200
    assert figures["delayed_records"] == 1500
    assert list(tmp_path.iterdir()) == [], "the bench cleans up after itself"


def test_bench_core_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "core", *TINY, "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "queue_vs_append_ratio" in result.stdout


def test_bench_core_refuses_a_partial_batch(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "core", "--messages", "150", "--batch", "100", "--dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "multiple of --batch" in result.output
