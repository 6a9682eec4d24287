"""``roost repair`` against a real ``roost serve``: through its admin API."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import main
from tests.e2e.test_serve import Server


def test_repair_with_nothing_failed_says_so_and_succeeds(tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    try:
        result = CliRunner().invoke(main, ["--admin-url", server.admin_url, "repair", "--json"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert json.loads(result.stdout) == {"repaired": [], "still_failed": []}
        plain = CliRunner().invoke(main, ["--admin-url", server.admin_url, "repair"])
        assert (plain.exit_code, plain.stdout) == (0, "no log had failed\n")
    finally:
        server.stop()


def test_repair_without_a_broker_is_one_clear_line() -> None:
    result = CliRunner().invoke(main, ["--admin-url", "http://127.0.0.1:1", "repair"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the admin API")
