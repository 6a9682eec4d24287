"""Reading a crash-test child's stdout while it runs, so the child never blocks on a full pipe."""

from __future__ import annotations

import os
import select
import subprocess


class LineReader:
    """Lines from a child's stdout, read as they come so that the child never blocks on it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self._fd = process.stdout.fileno()
        self._pending = b""
        self.lines: list[str] = []
        self.eof = False

    def pump(self, timeout_s: float) -> None:
        """Read whatever arrives within ``timeout_s`` (one read at most)."""
        readable, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
        if not readable:
            return
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self.eof = True
            assert not self._pending, f"the child left a torn line: {self._pending[:80]!r}"
            return
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        self.lines.extend(line.decode() for line in lines)
