"""A ``roost serve`` the fault benches start, kill, restart and watch from outside.

It serves one data directory on 127.0.0.1, on a port chosen by its first start (port 0) and
kept for every restart, so that clients reconnect to the same URL; the admin API is off. Its
stderr goes to one log file, every start appended, which the bench names when something fails.
``serve_args`` are passed to ``roost serve`` as they are (flags a colleague's build may have,
such as ``--max-memory``). ``rss_bytes``, ``fds`` and ``cpu_s`` read /proc: what the broker
costs, seen as the operating system sees it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

LISTENING = "roost listening on "
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BrokerProcess:
    def __init__(self, data_dir: str, log_path: str, serve_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.serve_args = list(serve_args)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"roost://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> float:
        """Start it and wait until it listens; the seconds that took (recovery included)."""
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "roost.cli.main", "serve", "--data", self.data_dir,
                 "--listen", "127.0.0.1", "--port", str(self.port), "--no-admin",
                 *self.serve_args],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        port = self._wait_listening(offset, started + timeout_s)
        self.port = port
        return time.monotonic() - started

    def _wait_listening(self, offset: int, deadline: float) -> int:
        assert self.process is not None
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                for line in f.read().decode(errors="replace").splitlines():
                    if line.startswith(LISTENING):
                        return int(line.rsplit(":", 1)[1])
            if self.process.poll() is not None:
                break
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"roost serve did not start: see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (a clean shutdown); SIGKILL after ``timeout_s``. Its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def tail(self, lines: int = 20) -> str:
        with open(self.log_path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, every thread) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: the fields after it are counted from
        # its closing parenthesis; utime and stime are fields 14 and 15, in clock ticks.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
