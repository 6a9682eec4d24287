"""Helpers of the authentication tests: a host serving the native protocol on 127.0.0.1 in this
process, a sleep the test drives, and a raw client that speaks frames through the real codec
(so a test can send what ``roost.connect`` never would)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roost.clock import ManualClock
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind, NativeCodec
from roost.server.access import NOBODY
from roost.server.framed import FramedStream, open_framed
from roost.server.host import Host
from roost.server.native_server import NativeListener, close_native, serve_native

PASSWORD = "correct horse"
#: Long enough never to end by itself in a test: only ``ManualSleeps.fire`` ends it.
FOREVER_MS = 3_600_000


class ManualSleeps:
    """An injected ``sleep``: each wait lasts until the test fires waits of its length."""

    def __init__(self) -> None:
        self.waiting: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        entry = (seconds, future)
        self.waiting.append(entry)
        self._changed.set()
        try:
            await future
        finally:
            self.waiting.remove(entry)

    def lengths(self) -> list[float]:
        return sorted(seconds for seconds, _ in self.waiting)

    async def until(self, seconds: float, count: int = 1) -> None:
        """Return once ``count`` waits of ``seconds`` have begun (5 s at most: a safety net,
        never the thing waited for)."""
        async with asyncio.timeout(5):
            while self.lengths().count(seconds) < count:
                self._changed.clear()
                await self._changed.wait()

    def fire(self, seconds: float) -> int:
        """End every wait of ``seconds``; how many there were."""
        fired = [f for s, f in self.waiting if s == seconds and not f.done()]
        for future in fired:
            future.set_result(None)
        return len(fired)


@dataclass
class Served:
    host: Host
    listener: NativeListener
    port: int
    clock: ManualClock
    sleeps: ManualSleeps

    def url(self, userinfo: str = "") -> str:
        return f"roost://{userinfo}{'@' if userinfo else ''}127.0.0.1:{self.port}"

    def principals(self) -> list[str]:
        connections = self.listener.connections
        return sorted(c.principal.name for c in connections if c.principal is not NOBODY)


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    users: dict[str, str] | None = None,
    address: str = "127.0.0.1",
    **options: Any,
) -> AsyncIterator[Served]:
    """A host with ``users`` (name -> password, each an admin) served on ``address``: failed
    logins answered at once and no handshake time limit unless ``options`` say otherwise;
    every wait goes through the returned ``sleeps``."""
    clock = ManualClock()
    sleeps = ManualSleeps()
    host = await Host.start(str(tmp_path / "data"), clock)
    for name, password in (users or {}).items():
        host.identities.add_user(name, password, admin=True)
    options = {"failed_auth_delay_s": 0, "handshake_timeout_ms": FOREVER_MS, **options}
    listener = await serve_native(host, address, 0, sleep=sleeps, **options)
    try:
        yield Served(host, listener, listener.sockets[0].getsockname()[1], clock, sleeps)
    finally:
        await close_native(listener)
        await host.aclose()


class RawClient:
    """Frames to and from the server through a client codec, one at a time."""

    def __init__(self, stream: FramedStream) -> None:
        self.stream = stream
        self.codec = stream.codec

    @classmethod
    async def open(cls, port: int) -> RawClient:
        return cls(await open_framed(NativeCodec("client"), "127.0.0.1", port))

    def send(self, frame: Frame) -> None:
        self.stream.write(self.codec.send(frame))

    def send_bytes(self, data: bytes) -> None:
        self.stream.write(data)

    def end(self) -> None:
        """Send nothing more (half-close): the server sees the end of the stream."""
        self.stream._transport.write_eof()  # type: ignore[union-attr]

    async def receive(self) -> Frame | None:
        async with asyncio.timeout(5):
            return await self.stream.next_frame()

    async def hello(self, versions: list[int] | None = None) -> Frame | None:
        self.send(Frame(Kind.HELLO, 0, m.Hello(versions or [4, 3, 2, 1])))
        return await self.receive()

    async def closed(self) -> bool:
        """Whether the server has closed the connection (after any frames still coming);
        our side is closed then too."""
        async with asyncio.timeout(5):
            while await self.stream.next_frame() is not None:
                pass
        await self.aclose()
        return True

    async def aclose(self) -> None:
        self.stream.close()
        with contextlib.suppress(ConnectionError):
            await self.stream.wait_closed()
