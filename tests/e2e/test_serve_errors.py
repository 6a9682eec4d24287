"""A mistake at start-up is one line naming it and what to do, with exit status 1 — never a
traceback, never a silently ignored setting (issue 16, item 1): a setting outside any table,
an unknown table, a port out of range, a data path under a file, a data directory another
process holds (named), a port another process listens on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from roost.clock import ManualClock
from roost.errors import DirectoryInUse, InvalidConfig
from roost.server import serve as serving
from roost.storage import LocalEngine


def run_roost(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", *args],
        check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src},
        timeout=60, cwd=cwd,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("port = 7421\n", "port=7421: is outside any table in .*: settings go under \\[server\\]"),
        ("[sever]\nport = 7421\n", "unknown table in .*; its tables are \\[server\\], \\[tls\\]"),
        ("[server]\nport = 70000\n",
         r"port=70000: takes a whole number from 0 to 65535 \(set by .*roost.toml \[server\]\)"),
        ("[server]\nadmin_port = -5\n", "admin_port=-5: takes a whole number from 0 to 65535"),
        ("[server]\nport = 'abc'\n", "port='abc': takes a whole number from 0 to 65535"),
        ("[server]\nportt = 7421\n",
         r"portt=7421: is not a setting \(in .*\); did you mean port\?"),
        ("[server]\nadmin = 'yes'\n", "admin='yes': takes true or false"),
        ("[server]\nmax_open_files = 3\n",
         "max_open_files=3: takes a whole number of at least 8, or nothing"),
        ("[tls]\nclient_auth = 1\n", r"tls_client_auth=1: takes a string \(set by .* \[tls\]\)"),
    ],
)  # fmt: skip
def test_a_config_file_mistake_is_refused_naming_it(
    toml: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "roost.toml"
    path.write_text(toml)
    with pytest.raises(InvalidConfig, match=message):
        serving.settings(str(path), {}, {})


def test_a_port_out_of_range_on_the_command_line_is_refused(tmp_path: Path) -> None:
    line = one_line_error(run_roost("serve", "--port", "70000", "--no-admin", cwd=tmp_path))
    assert line == "error: invalid port=70000: takes a whole number from 0 to 65535 (set by --port)"


@pytest.mark.parametrize(
    ("environ", "flags", "message"),
    [
        ({"ROOST_PORT": "abc"}, {},
         "port='abc': takes a whole number from 0 to 65535 (set by ROOST_PORT)"),
        ({}, {"max_connections": -1},
         "max_connections=-1: takes a whole number of at least 1 (set by --max-connections)"),
        ({"ROOST_MAX_FRAME_BYTES": "10"}, {},
         "max_frame_bytes='10': takes a whole number from 4096 to 1073741824"
         " (set by ROOST_MAX_FRAME_BYTES)"),
        ({"ROOST_HEARTBEAT_MS": "0"}, {},
         "heartbeat_ms='0': takes a whole number of at least 1 (set by ROOST_HEARTBEAT_MS)"),
    ],
)  # fmt: skip
def test_environment_and_flags_are_checked_naming_where_they_came_from(
    environ: dict[str, str], flags: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidConfig) as raised:
        serving.settings(None, environ, flags)
    assert str(raised.value) == f"invalid {message}"


def test_a_data_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    line = one_line_error(
        run_roost("serve", "--data", "afile/data", "--port", "0", "--no-admin", cwd=tmp_path)
    )
    assert line == "error: invalid data='afile/data': cannot be used: Not a directory"


def test_a_held_data_directory_names_its_holder(tmp_path: Path) -> None:
    engine = LocalEngine.open(str(tmp_path / "data"), ManualClock())
    try:
        with pytest.raises(DirectoryInUse, match=f"in use by process {os.getpid()} "):
            LocalEngine.open(str(tmp_path / "data"), ManualClock())
        line = one_line_error(
            run_roost("serve", "--data", "data", "--port", "0", "--no-admin", cwd=tmp_path)
        )
        assert f"in use by process {os.getpid()} (" in line
        assert line.endswith("stop it first, or serve another --data")
    finally:
        engine.close()


@pytest.mark.parametrize("flag", ["--port", "--admin-port"])
def test_a_port_in_use_is_one_line_naming_the_flag(flag: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--admin-port" if flag == "--port" else "--port"
        line = one_line_error(
            run_roost("serve", "--data", "data", flag, str(port), other, "0", cwd=tmp_path)
        )
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert line.endswith(f"stop it or choose {flag}")


def test_a_mistyped_setting_in_a_config_file_stops_serve_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "roost.toml").write_text("[server]\nport = 'abc'\nadmin = false\n")
    line = one_line_error(run_roost("serve", "--config", "roost.toml", cwd=tmp_path))
    assert line == (
        "error: invalid port='abc': takes a whole number from 0 to 65535 "
        "(set by roost.toml [server])"
    )
