"""A real ``roost serve`` under a small open files limit (``ulimit -n 256``, soft and hard).

It serves more queues than the limit has descriptors (each written one holds a file for its
partition, and one for its state journal once delivered from; the pool closes idle ones), and
once the process is truly out of descriptors (connections hold them all), the existing queues
keep publishing, delivering and acking, and a create still succeeds: it opens no file (its
files are made by its first write, lazy creation); the new queue serves once descriptors are
free again.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import roost

LIMIT = 256
QUEUES = 200  # 400 files: more than the limit, let alone the pool's ceiling
READY = re.compile(rb"roost listening on ([\d.]+):(\d+)")


#: Sets the limit, then becomes ``roost serve`` (exec): not ``preexec_fn``, which is unsafe in
#: a process with threads, as a test process may have.
UNDER_LIMIT = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT})); "
    "os.execv(sys.executable, [sys.executable, '-m', 'roost.cli.main', *sys.argv[1:]])"
)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_many_queues_under_a_small_fd_limit_and_a_create_at_exhaustion(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", UNDER_LIMIT, "serve", "--data", str(tmp_path / "data"),
         "--listen", "127.0.0.1", "--port", "0", "--no-admin",
         # Connections that never say hello hold descriptors for the whole test.
         "--handshake-timeout-ms", "600000"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stderr is not None
    started = b""
    try:
        for _ in range(200):
            line = process.stderr.readline()
            started += line
            ready = READY.search(line)
            if ready or (not line and process.poll() is not None):
                break
        assert ready, started.decode(errors="replace")
        text = started.decode()
        assert f"open files limit {LIMIT} (soft, was {LIMIT}; hard {LIMIT})" in text
        ceiling = LIMIT - 64
        assert f"at most {ceiling} storage files open" in text
        url = f"roost://127.0.0.1:{int(ready.group(2))}"
        asyncio.run(exercise(url, int(ready.group(2)), process.pid, ceiling))
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 0, rest.decode(errors="replace")


async def exercise(url: str, port: int, pid: int, ceiling: int) -> None:
    async with roost.connect(url, reconnect=False) as client:
        for i in range(QUEUES):
            await client.create_queue(f"q{i}", max_deliveries=None, dead_letter=None)
        assert open_fds(pid) < LIMIT // 2, "a create opens no file"
        for i in range(QUEUES):  # each one's first write makes its file
            await client.publish(f"q{i}", b"hello q%d" % i)
        assert open_fds(pid) < LIMIT
        for name in ("q0", f"q{QUEUES - 1}", "q1"):  # the first ones' files were closed
            await deliver_and_ack(client, name)

        hogs = exhaust(port, pid)
        try:
            await client.create_queue("beyond", max_deliveries=None, dead_letter=None)
            for i in range(0, QUEUES, 20):  # every queue still serves
                await client.publish(f"q{i}", b"at the limit")
                await deliver_and_ack(client, f"q{i}")
        finally:
            for hog in hogs:
                hog.close()
        # Descriptors are free again: the new queue works.
        for _ in range(200):  # the broker closes the hogs' connections as it sees them go
            if open_fds(pid) < LIMIT - 16:
                break
            await asyncio.sleep(0.05)
        await client.publish("beyond", b"after")
        await deliver_and_ack(client, "beyond")


async def deliver_and_ack(client: roost.Client, name: str) -> None:
    messages = await client.receive(name, max_messages=10, wait=5.0)
    assert messages, f"{name} delivers"
    for message in messages:
        await message.ack()


def exhaust(port: int, pid: int) -> list[socket.socket]:
    """Connect until the broker holds every descriptor its limit allows (it accepts each
    connection, and stops accepting at EMFILE: later ones wait in the backlog)."""
    hogs: list[socket.socket] = []
    deadline = time.monotonic() + 30
    while open_fds(pid) < LIMIT and time.monotonic() < deadline:
        hogs.append(socket.create_connection(("127.0.0.1", port)))
        if len(hogs) % 16 == 0:
            time.sleep(0.05)  # let the broker's loop accept them
    assert open_fds(pid) == LIMIT, "the broker never ran out of descriptors"
    return hogs
