"""End to end against a real ``roost serve`` process: the same API over the network."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import roost
from roost.errors import LeaseExpired, UnknownSubscription, UnknownTopic

READY = re.compile(rb"roost listening on ([\d.]+):(\d+)")
ADMIN = re.compile(rb"roost admin API on (https?://[\d.]+:\d+)")


class Server:
    """``roost serve`` on ``data_dir``; ``args`` more flags, ``env`` more environment,
    ``scheme`` the one its URL gets (roosts when serving TLS)."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        scheme: str = "roost",
    ) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "roost.cli.main", "serve", "--data", str(data_dir),
             "--port", str(port), "--admin-port", "0", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )  # fmt: skip
        assert self.process.stderr is not None
        self.admin_url = ""
        self.stderr = b""  # what it logged after it started, once stopped
        for _ in range(200):
            line = self.process.stderr.readline()
            admin = ADMIN.search(line)
            if admin:  # logged before the native listener's line
                self.admin_url = admin.group(1).decode()
            found = READY.search(line)
            if found:
                self.url = f"{scheme}://{found.group(1).decode()}:{found.group(2).decode()}"
                self.port = int(found.group(2))
                return
            if not line and self.process.poll() is not None:
                break
        raise AssertionError("roost serve did not start")

    @classmethod
    def restartable(cls, data_dir: Path) -> Server:
        """A server on a port it can be restarted on: one a probe server just let go of (so
        the clients of a restart test reconnect to the same URL)."""
        probe = cls(data_dir.with_name(data_dir.name + "-probe"))
        probe.stop()
        return cls(data_dir, probe.port)

    def restart(self) -> Server:
        """Stop (SIGTERM) and serve the same data directory on the same port again."""
        self.stop()
        return Server(self.data_dir, self.port)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        # Drain stderr while it exits (a full pipe would block its shutdown logging).
        _, self.stderr = self.process.communicate(timeout=30)
        return self.process.returncode


def run(body):  # type: ignore[no-untyped-def]
    return asyncio.run(body())


def test_queue_round_trip_over_the_network(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("emails", max_deliveries=2)
            published = await broker.publish("emails", b"hello", key=b"k", headers=[("h", b"1")])
            assert (published.topic, published.offset) == ("emails", 0)
            [message] = await broker.receive("emails", max_messages=10, wait=1)
            assert (message.value, message.key, message.headers) == (b"hello", b"k", (("h", b"1"),))
            await message.nack(delay=0, error="first try")
            [again] = await broker.receive("emails", wait=1)
            assert again.delivery_count == 2
            with pytest.raises(LeaseExpired):
                await message.ack()
            await again.ack()
            stats = await broker.stats("emails")
            assert (stats.backlog, stats.in_flight) == (0, 0)

    run(body)


def test_errors_keep_their_type_across_the_wire(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            with pytest.raises(UnknownTopic):
                await broker.publish("nope", b"x")
            await broker.create_topic("t")
            with pytest.raises(UnknownSubscription):
                await broker.receive("t", "nobody")

    run(body)


def test_pipelined_requests_and_a_long_poll_that_does_not_block_them(server: Server) -> None:
    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q")
            waiting = asyncio.create_task(broker.receive("q", wait=10))
            results = await asyncio.gather(*(broker.publish("q", b"%d" % i) for i in range(20)))
            assert sorted(p.offset for p in results) == list(range(20))
            [first] = await asyncio.wait_for(waiting, 5)
            assert first.value in {b"%d" % i for i in range(20)}

    run(body)


def test_streams_exchanges_and_restart(server: Server, tmp_path: Path) -> None:
    async def first() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_topic("clicks", partitions=2)
            await broker.create_subscription("clicks", "analytics", mode="stream",
                                             start="earliest")  # fmt: skip
            await broker.declare_exchange("events", "topic")
            await broker.bind("events", "clicks", key="click.*")
            for i in range(6):
                await broker.publish_to_exchange("events", "click.home", b"%d" % i)
            member = await broker.join("clicks", "analytics")
            records = await member.fetch(max_records=4)
            await member.commit()
            assert len(records) == 4

    run(first)
    assert server.stop() == 0
    assert (server.data_dir / "CLEAN_SHUTDOWN").exists(), "SIGTERM shuts down cleanly"
    restarted = Server(server.data_dir)
    try:

        async def second() -> None:
            async with roost.connect(restarted.url) as broker:
                member = await broker.join("clicks", "analytics")
                assert len(await member.fetch(max_records=10)) == 2, "resumes from the commit"
                assert [b.key for b in await broker.list_bindings("events")] == ["click.*"]

        run(second)
    finally:
        restarted.stop()


def test_garbage_closes_that_connection_only(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as bad:
        bad.sendall(os.urandom(64) + b"\xff\xff\xff\xff\x03\x00\x00\x00\x00")
        bad.settimeout(5)
        received = b""
        while chunk := bad.recv(4096):
            received += chunk
        assert b"protocol_error" in received or received == b"", "a FAILURE, then closed"

    async def body() -> None:
        async with roost.connect(server.url) as broker:
            assert await broker.list_topics() == []

    run(body)


def test_a_url_must_be_roost() -> None:
    with pytest.raises(ValueError, match="roost://"):
        roost.connect("http://localhost:7420")
