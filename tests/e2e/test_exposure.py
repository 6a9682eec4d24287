"""Safe defaults: with no users, anonymous service on loopback only; anything else is refused
at start, in one line that says how to fix it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from roost.errors import InvalidConfig
from roost.server.exposure import anonymous_allowed, check_exposure, is_loopback


def serve(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``roost serve`` with ``flags``; every case here is refused before anything listens."""
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", "serve", "--data", str(data_dir), "--port", "0",
         "--admin-port", "0", *flags],
        check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    "flags", [("--listen", "0.0.0.0", "--no-admin"), ("--admin-listen", "0.0.0.0")]
)
def test_anonymous_service_off_loopback_is_refused_in_one_line(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    done = serve(tmp_path / "data", *flags)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "no users are defined" in errors[0] and "--allow-anonymous" in errors[0]
    assert "roost user add" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
     ("broker.example", False)],
)  # fmt: skip
def test_what_counts_as_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_the_rule_per_connection() -> None:
    assert anonymous_allowed("127.0.0.1", any_users=False, allow_anonymous=False)
    assert not anonymous_allowed("0.0.0.0", any_users=False, allow_anonymous=False)
    assert anonymous_allowed("0.0.0.0", any_users=False, allow_anonymous=True)
    # Once a user exists, nobody is anonymous, whatever the flag says.
    assert not anonymous_allowed("127.0.0.1", any_users=True, allow_anonymous=True)


def test_users_or_the_flag_make_a_public_address_acceptable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    check_exposure({"native": "0.0.0.0"}, any_users=True, allow_anonymous=False)
    with caplog.at_level(logging.WARNING, "roost.security"):
        check_exposure({"native": "0.0.0.0"}, any_users=False, allow_anonymous=True)
    assert "WITHOUT authentication on native on 0.0.0.0" in caplog.text
    with pytest.raises(InvalidConfig):
        check_exposure({"admin": "::"}, any_users=False, allow_anonymous=False)
