"""A listener's series over real connections: opened, framed, broken by garbage, refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import roost
from roost.admin.metrics import host_registry
from roost.clock import ManualClock
from roost.protocols.native import messages as m
from roost.protocols.native.codec import NEED_DATA, Frame, Kind, NativeCodec, encode
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native
from tests.metrics_support import scrape, value

LISTENER = {"listener": "native"}
#: Loop turns to let the server notice a closed connection (no clock involved).
SETTLE_TURNS = 1_000


async def frames_back(reader: asyncio.StreamReader, codec: NativeCodec, count: int) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < count:
        codec.receive_data(await asyncio.wait_for(reader.read(65536), 5))
        while (frame := codec.next_event()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            frames.append(frame)
    return frames


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition()`` holds: the server's side of a close runs in
    its own task."""
    for _ in range(SETTLE_TURNS):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the server never got there")


def test_connections_frames_protocol_errors_and_refusals_are_counted(tmp_path: Path) -> None:
    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0, max_connections=2)
        port = server.sockets[0].getsockname()[1]
        registry = host_registry(host)
        stats = host.listeners["native"]
        try:
            assert value(scrape(registry), "roost_listener_connections", **LISTENER) == 0

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            codec = NativeCodec("client")
            writer.write(codec.send(Frame(Kind.HELLO, 0, m.Hello([1]))))
            await frames_back(reader, codec, 1)  # WELCOME
            for correlation in range(1, 4):
                writer.write(codec.send(Frame(Kind.PING, correlation, m.Empty())))
            await frames_back(reader, codec, 3)  # three PONGs
            talking = scrape(registry)
            assert value(talking, "roost_listener_connections", **LISTENER) == 1
            assert value(talking, "roost_listener_accepted_connections_total", **LISTENER) == 1
            assert value(talking, "roost_listener_frames_received_total", **LISTENER) == 4

            async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as client:
                await client.list_topics()
                await until(lambda: stats.connections == 2)
                refused_reader, refused_writer = await asyncio.open_connection("127.0.0.1", port)
                assert b"max_connections=2" in await asyncio.wait_for(refused_reader.read(), 5)
                refused_writer.close()
                full = scrape(registry)
                assert value(full, "roost_listener_connections", **LISTENER) == 2
                assert value(full, "roost_listener_refused_connections_total", **LISTENER) == 1
            await until(lambda: stats.connections == 1)

            writer.write(b"\xff" * 64)  # not a frame
            assert await asyncio.wait_for(reader.read(), 5) != b""  # a FAILURE, then EOF
            writer.close()
            await until(lambda: stats.connections == 0)
            broken = scrape(registry)
            assert value(broken, "roost_listener_protocol_errors_total", **LISTENER) == 1
            assert value(broken, "roost_listener_connections", **LISTENER) == 0
            assert value(broken, "roost_listener_accepted_connections_total", **LISTENER) == 2
            assert value(broken, "roost_listener_frames_received_total", **LISTENER) > 4, (
                "the client's frames count too"
            )
        finally:
            await close_native(server)
            await host.aclose()

    asyncio.run(main())


def test_an_unknown_frame_before_hello_is_a_protocol_error(tmp_path: Path) -> None:
    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0, name="clients")
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode(Frame(Kind.PING, 1, m.Empty())))  # before HELLO
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await until(lambda: host.listeners["clients"].connections == 0)
            samples = scrape(host_registry(host))
            assert value(samples, "roost_listener_protocol_errors_total", listener="clients") == 1
            assert value(samples, "roost_listener_frames_received_total", listener="clients") == 0
        finally:
            await close_native(server)
            await host.aclose()

    asyncio.run(main())
