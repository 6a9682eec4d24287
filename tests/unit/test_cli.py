"""``roost bench storage`` prints every field the issue names (a smoke run, not a timing)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import main

FIELDS = {
    "raw_write_mbps", "never_mbps", "never_ratio", "raw_fsyncs_per_s", "always_1_rps",
    "always_64_rps", "group_commit_ratio", "raw_read_mbps", "read_batches_mbps",
    "read_batches_ratio", "read_records_rps",
}  # fmt: skip


def test_bench_storage_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "storage", "--json", "--batches", "5", "--rounds", "1", "--dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures.keys() >= FIELDS
    assert all(figures[name] > 0 for name in FIELDS)
    assert list(tmp_path.iterdir()) == [], "the bench cleans up after itself"


def test_bench_storage_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["bench", "storage", "--batches", "5", "--rounds", "1", "--dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "group_commit_ratio" in result.stdout
