"""Floods against a real ``roost serve``, at a small bounded scale, with the broker's resident
memory sampled from /proc while they run: each stays under a bound far below what the flood
would cost unbounded, and a well-behaved client is served meanwhile.

- a producer that pipelines publishes and never reads an answer (unbounded, 500k of them held
  1.6 GB): the broker stops reading it;
- a consumer with a large prefetch that stops reading its socket: the broker stops pushing to
  it, and the messages stay for another consumer;
- connections that declare a 16 MiB frame, send part of it and stall: the broker holds what
  was sent, not what was declared, ends them at the frame timeout and gives the memory back;
- silent sockets filling ``max_connections``, and slowloris frames: a real client still gets
  in, and the slow frames are cut at the frame timeout;
- frames past the memory budget (``--max-memory``): the broker holds little more than its
  budget, and publishing resumes once the flood is cut.

The flooding sockets are raw, with a small receive buffer, so the kernel absorbs little of
what the broker sends them and the broker's own bounds are what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
from pathlib import Path

import pytest

import roost
from roost import Outgoing
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, NEED_DATA, Frame, Kind, NativeCodec
from roost.server.log_limit import LINES_PER_INTERVAL
from roost.server.native_server import OVERDUE_CLOSES
from tests.e2e.test_serve import Server

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the broker's memory from /proc"
)
MiB = 1024 * 1024


def rss_bytes(server: Server) -> int:
    with open(f"/proc/{server.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def sample_rss(server: Server, samples: list[int]) -> None:
    """The broker's RSS every 20 ms (the sampling's pace, not a wait) until cancelled."""
    while True:
        samples.append(rss_bytes(server))
        await asyncio.sleep(0.02)


class Raw:
    """A native-protocol connection from a plain socket with a small receive buffer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.codec = NativeCodec("client")

    @classmethod
    async def open(cls, port: int, versions: list[int] | None = None) -> Raw:
        """Connected; past the handshake unless ``versions`` is empty (then silent)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        raw = cls(*await asyncio.open_connection(sock=sock))
        if versions != []:
            raw.send(Frame(Kind.HELLO, 0, m.Hello(versions or [5, 4, 3, 2, 1])))
            welcome = await raw.receive()
            assert welcome is not None and welcome.kind is Kind.WELCOME
        return raw

    def send(self, frame: Frame) -> None:
        self.writer.write(self.codec.send(frame))

    async def receive(self) -> Frame | None:
        async with asyncio.timeout(10):
            while (event := self.codec.next_event()) is NEED_DATA:
                data = await self.reader.read(65536)
                self.codec.receive_data(data)
                if not data:
                    return None
        assert isinstance(event, Frame)
        return event

    async def closed_by_server(self, timeout_s: float = 10) -> bool:
        """True once the server closed (reading and dropping whatever came before)."""
        with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread
            async with asyncio.timeout(timeout_s):
                while await self.reader.read(65536):
                    pass
        return True

    def abort(self) -> None:
        self.writer.transport.abort()


def serve(tmp_path: Path, *args: str) -> Server:
    return Server(tmp_path / "data", args=args)


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    server = serve(tmp_path, *args)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


async def served_meanwhile(url: str, topic: str) -> None:
    """A well-behaved client publishes and receives its own messages."""
    async with roost.connect(url, reconnect=False) as good:
        await good.publish_batch(topic, [Outgoing(value=b"%d" % n) for n in range(100)])
        received = await good.receive(topic, max_messages=100, wait=5)
        assert len(received) == 100
        await good.ack(topic, topic, [d.receipt for d in received])


def test_a_producer_that_never_reads_its_answers_stops_being_read(tmp_path: Path) -> None:
    bound = 150 * MiB  # unbounded, this many publishes held over 1.5 GB

    async def body(server: Server) -> None:
        async with roost.connect(server.url, reconnect=False) as admin:
            await admin.create_queue("flood")
            await admin.create_queue("good")
        baseline = rss_bytes(server)
        raw = await Raw.open(server.port)
        publish = m.Publish("flood", [m.Out(b"x" * 100)])
        burst = b"".join(raw.codec.send(Frame(Kind.REQUEST, n, publish)) for n in range(1_000))
        sent, peak = 0, baseline
        while sent < 1_000_000:
            raw.writer.write(burst)
            try:
                await asyncio.wait_for(raw.writer.drain(), 3)
            except TimeoutError:
                break  # the broker stopped reading us
            sent += 1_000
            peak = max(peak, rss_bytes(server))
            assert peak - baseline < bound, f"{(peak - baseline) // MiB} MiB after {sent}"
        assert sent < 1_000_000, "the broker read every publish without our reading an answer"
        await served_meanwhile(server.url, "good")
        peak = max(peak, rss_bytes(server))
        assert peak - baseline < bound
        raw.abort()

    with serving(tmp_path, "--max-memory", "0") as server:
        asyncio.run(body(server))


def test_a_consumer_that_stops_reading_stops_being_pushed_to(tmp_path: Path) -> None:
    count, size = 20_000, 1024

    async def body(server: Server) -> None:
        async with roost.connect(server.url, reconnect=False) as producer:
            await producer.create_queue("work")
            stuck = await Raw.open(server.port)
            stuck.send(Frame(Kind.REQUEST, 1, m.Subscribe("work", "work", credit=100_000)))
            baseline = rss_bytes(server)
            peak = baseline
            for start in range(0, count, 500):
                batch = [
                    Outgoing(value=b"%08d" % n + b"x" * size) for n in range(start, start + 500)
                ]
                await producer.publish_batch("work", batch)
                peak = max(peak, rss_bytes(server))
            taken = 0
            async with roost.connect(server.url, reconnect=False) as consumer:
                while received := await consumer.receive("work", max_messages=1_000):
                    taken += len(received)
                    await consumer.ack("work", "work", [d.receipt for d in received])
            # What the stuck consumer was pushed is leased to it (what the kernel's socket
            # buffers took, and one push more); the rest is for others.
            assert taken >= count - 5_000, f"only {taken} of {count} left for a good consumer"
            assert peak - baseline < 100 * MiB, f"{(peak - baseline) // MiB} MiB"
            stuck.abort()

    with serving(tmp_path, "--max-memory", "0") as server:
        asyncio.run(body(server))


def test_frames_that_declare_16_mib_and_stall_cost_what_was_sent_then_end(
    tmp_path: Path,
) -> None:
    connections, sent_each = 20, 2 * MiB

    async def body(server: Server) -> None:
        async with roost.connect(server.url, reconnect=False) as admin:
            await admin.create_queue("good")
        baseline = rss_bytes(server)
        stalled = [await Raw.open(server.port, [4]) for _ in range(connections)]
        for raw in stalled:
            raw.writer.write(HEADER.pack(16 * MiB, Kind.REQUEST, 1) + b"\x00" * sent_each)
            await raw.writer.drain()
        peak = rss_bytes(server)
        await served_meanwhile(server.url, "good")
        # Held: what was sent (40 MiB), never what was declared (320 MiB).
        assert peak - baseline < connections * sent_each + 40 * MiB
        for raw in stalled:
            assert await raw.closed_by_server()  # at the frame timeout
            raw.abort()
        async with asyncio.timeout(10):  # given back by the watchdog's next ticks
            while rss_bytes(server) - baseline > 30 * MiB:
                await asyncio.sleep(0.05)
        await served_meanwhile(server.url, "good")

    with serving(tmp_path, "--frame-timeout-ms", "1500", "--max-memory", "0") as server:
        asyncio.run(body(server))
        server.stop()
        # Every close is in the log: the first few in full, the rest in one count.
        logged = server.stderr.count(b"frame_timeout_ms=1500")
        summed = re.findall(rb"\.\.\. and (\d+) more like it in the last [\d.]+ s: "
                            + OVERDUE_CLOSES.encode(), server.stderr)  # fmt: skip
        assert logged == LINES_PER_INTERVAL
        assert logged + sum(int(count) for count in summed) == connections


async def trickle(raw: Raw) -> int:
    """Send a 1,009-byte frame a byte at a time (the pace is the attack's, not a wait for an
    outcome) until the server closes; how many bytes went."""
    frame = HEADER.pack(1_000, Kind.REQUEST, 1) + b"\x00" * 1_000
    for index in range(len(frame)):
        if raw.reader.at_eof() or raw.writer.transport.is_closing():
            return index
        raw.writer.write(frame[index : index + 1])
        await asyncio.sleep(0.05)
    return len(frame)


def test_silent_and_slowloris_sockets_do_not_lock_a_real_client_out(tmp_path: Path) -> None:
    limit = 40

    async def body(server: Server) -> None:
        baseline = rss_bytes(server)
        silent = [await Raw.open(server.port, []) for _ in range(limit)]  # never say HELLO
        async with roost.connect(server.url, reconnect=False) as good:  # evicts one of them
            await good.create_queue("good")
        await served_meanwhile(server.url, "good")

        # Slowloris: open connections trickling a frame out, a byte every 50 ms.
        slow = [await Raw.open(server.port, [4]) for _ in range(limit // 2)]
        trickles = [asyncio.ensure_future(trickle(raw)) for raw in slow]
        ended = await asyncio.gather(*(raw.closed_by_server(15) for raw in slow))
        assert all(ended)
        sent = await asyncio.gather(*trickles)
        assert max(sent) < 1_009, "a slow frame was finished before it was cut"
        await served_meanwhile(server.url, "good")
        assert rss_bytes(server) - baseline < 40 * MiB
        for raw in silent + slow:
            raw.abort()

    args = ("--max-connections", str(limit), "--handshake-timeout-ms", "600000",
            "--frame-timeout-ms", "1000")  # fmt: skip
    with serving(tmp_path, *args) as server:
        asyncio.run(body(server))


def test_over_the_memory_budget_a_flood_is_held_near_it_and_publishing_resumes(
    tmp_path: Path,
) -> None:
    """Frames of 8 MiB from 30 connections, 240 MiB in all, against a budget of 150 MiB: the
    memory alarm stops reading them (the broker holds little more than its budget), the frame
    timeout cuts them, the memory is given back and a publisher that waited meanwhile is
    served."""
    budget, connections, sent_each = 150 * MiB, 30, 8 * MiB

    async def body(server: Server) -> None:
        async with roost.connect(server.url, reconnect=False) as admin:
            await admin.create_queue("good")
        flood = [await Raw.open(server.port, [4]) for _ in range(connections)]
        for raw in flood:
            raw.writer.write(HEADER.pack(16 * MiB, Kind.REQUEST, 1) + b"\x00" * sent_each)
        samples: list[int] = []
        sampling = asyncio.ensure_future(sample_rss(server, samples))
        for raw in flood:
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(raw.closed_by_server(), 15)
        sampling.cancel()
        peak = max(samples)
        assert len(samples) > 10 and peak < budget + 64 * MiB, (
            f"{peak // MiB} MiB held, budget {budget // MiB} MiB"
        )
        await asyncio.wait_for(served_meanwhile(server.url, "good"), 15)
        for raw in flood:
            raw.abort()

    args = ("--max-memory", str(budget), "--frame-timeout-ms", "2000")
    with serving(tmp_path, *args) as server:
        asyncio.run(body(server))
        server.stop()
        assert b"memory alarm: the broker holds" in server.stderr
        assert b"memory alarm cleared" in server.stderr
