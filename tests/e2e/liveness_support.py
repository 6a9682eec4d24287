"""Helpers of the client-liveness tests, all on 127.0.0.1 in this process:

- ``DrivenTime``: the clock and the sleep a client is given; time moves only when the test
  says, and every sleep due by then wakes, in order;
- ``MuteBroker``: a native-protocol server that answers ``HELLO`` (version 5) and then stays
  silent, or answers only ``PING``s, or asks for a SCRAM iteration count of the test's choice;
- ``Freezer``: a TCP proxy in front of a real listener that can stop passing bytes either way
  (as a stopped broker process or a network that drops everything), and pass them again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
from collections.abc import AsyncIterator, Callable

from roost.clock import ManualClock
from roost.protocols.native import messages as m
from roost.protocols.native.codec import NEED_DATA, Frame, Kind, NativeCodec

SAFETY_S = 5.0


async def until(condition: Callable[[], object]) -> None:
    """Loop turns until ``condition()`` holds (5 s at most: a safety net, not the wait)."""
    async with asyncio.timeout(SAFETY_S):
        while not condition():
            await asyncio.sleep(0.001)


async def _turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


class DrivenTime:
    """A ``ManualClock`` and a ``sleep`` that ends when the clock reaches its end."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self._waits: list[tuple[int, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        end_ms = self.clock.monotonic_ms() + round(seconds * 1000)
        entry = (end_ms, asyncio.get_running_loop().create_future())
        self._waits.append(entry)
        try:
            await entry[1]
        finally:
            self._waits.remove(entry)

    def _none_of(self, futures: set[asyncio.Future[None]]) -> bool:
        """Whether none of ``futures`` still waits (their sleepers woke)."""
        return all(future not in futures for _, future in self._waits)

    @property
    def sleepers(self) -> int:
        return len(self._waits)

    async def advance(self, ms: int) -> None:
        """Move the clock ``ms`` on, stopping at each sleep due on the way: it wakes, and the
        loop runs until its sleeper sleeps again or ends. What is ready runs first (a task
        just started sleeps before the clock moves)."""
        await _turns()
        target = self.clock.monotonic_ms() + ms
        while True:
            due = [(end, f) for end, f in self._waits if end <= target and not f.done()]
            if not due:
                break
            end = min(end for end, _ in due)
            self.clock.advance(max(0, end - self.clock.monotonic_ms()))
            woken = {f for at, f in due if at == end}
            for future in woken:
                future.set_result(None)
            await until(functools.partial(self._none_of, woken))
            await _turns()  # what the woken did may wake others (a lost connection)
        self.clock.advance(target - self.clock.monotonic_ms())


class MuteBroker:
    """Answers ``HELLO`` with a version-5 ``WELCOME`` naming ``heartbeat_ms``, then: answers
    ``PING``s if ``pongs``, and nothing else ever; with ``iterations`` it asks for SCRAM and
    answers the first ``AUTH`` with a challenge asking for that many iterations."""

    def __init__(self, heartbeat_ms: int, pongs: bool = False, iterations: int | None = None):
        self.heartbeat_ms = heartbeat_ms
        self.pongs = pongs
        self.iterations = iterations
        self.received: list[Frame] = []
        self.port = 0

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[MuteBroker]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    def url(self) -> str:
        return f"roost://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        codec = NativeCodec("server")
        try:
            while data := await reader.read(65536):
                codec.receive_data(data)
                while (frame := codec.next_event()) is not NEED_DATA:
                    assert isinstance(frame, Frame)
                    self.received.append(frame)
                    for answer in self._answers(frame):
                        writer.write(codec.send(answer))
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answers(self, frame: Frame) -> list[Frame]:
        if frame.kind is Kind.HELLO:
            scram = self.iterations is not None
            welcome = m.Welcome(5, "mute", 1 << 20, self.heartbeat_ms, scram,
                                ["SCRAM-SHA-256"] if scram else [])  # fmt: skip
            return [Frame(Kind.WELCOME, 0, welcome)]
        if frame.kind is Kind.AUTH:
            assert isinstance(frame.message, m.Auth)
            nonce = frame.message.data.decode().rpartition("r=")[2]
            salt = base64.b64encode(b"0123456789abcdef").decode()
            first = f"r={nonce}server,s={salt},i={self.iterations}"
            return [Frame(Kind.AUTH_CHALLENGE, 0, m.AuthChallenge(first.encode()))]
        if frame.kind is Kind.PING and self.pongs:
            return [Frame(Kind.PONG, frame.correlation, m.Empty())]
        return []


class Freezer:
    """A proxy to ``127.0.0.1:upstream_port``; while frozen it takes bytes from either side
    and passes none on (new connections are taken, and wait)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.port = 0
        self.connections = 0
        self._pumps: set[asyncio.Task[None]] = set()

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def url(self) -> str:
        return f"roost://127.0.0.1:{self.port}"

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Freezer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for pump in self._pumps:
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._pumps.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._pumps.difference_update(pumps)
            for side in (writer, up_writer):
                side.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                await self.thawed.wait()
                sink.write(data)
                await sink.drain()
