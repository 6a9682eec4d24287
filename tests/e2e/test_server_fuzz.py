"""Bad input at the server: garbage, truncated, mutated and oversized frames on some
connections; every other connection goes on being served, and nothing stored is lost."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import roost
from roost.clock import ManualClock
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, Frame, Kind, NativeCodec, encode
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native

LIMIT = 64 * 1024


def hello() -> bytes:
    return NativeCodec("client").send(Frame(Kind.HELLO, 0, m.Hello([1])))


def valid_request(correlation: int) -> bytes:
    return encode(Frame(Kind.REQUEST, correlation, m.Publish("t", [m.Out(b"x")])))


def bad_inputs(rng: random.Random) -> list[bytes]:
    request = valid_request(1)
    cases = [
        rng.randbytes(rng.randint(1, 2000)),  # noise
        hello() + rng.randbytes(300),  # a good start, then noise
        hello() + HEADER.pack(2**31, Kind.REQUEST, 1),  # absurd length
        hello() + HEADER.pack(LIMIT + 1, Kind.REQUEST, 1) + b"\x00" * 100,  # over the limit
        hello() + HEADER.pack(2, Kind.REQUEST, 1),  # too short for a header
        request,  # a request before HELLO
    ]
    mutated = bytearray(hello() + request)
    mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
    cases.append(bytes(mutated))
    cases.append((hello() + request)[: rng.randrange(1, len(hello() + request))])  # truncated
    return cases


async def hammer(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(1 << 20), 2)
    except TimeoutError:
        answer = b""  # a valid prefix the server is waiting on: we leave
    writer.close()
    await writer.wait_closed()
    return answer


def test_bad_connections_do_not_disturb_good_ones(tmp_path: Path) -> None:
    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0, max_frame_bytes=LIMIT)
        port = server.sockets[0].getsockname()[1]
        try:
            async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as good:
                await good.create_queue("t", durability="never")
                rng = random.Random(7)
                for round_number in range(6):
                    await asyncio.gather(*(hammer(port, bad) for bad in bad_inputs(rng)))
                    published = await good.publish("t", b"%d" % round_number)
                    assert published.offset == round_number
                received = await good.receive("t", max_messages=100)
                assert [d.value for d in received] == [b"%d" % i for i in range(6)]
        finally:
            await close_native(server)
            await host.aclose()

    asyncio.run(main())


def test_connections_past_the_limit_are_refused_with_the_limit_named(tmp_path: Path) -> None:
    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0, max_connections=2)
        port = server.sockets[0].getsockname()[1]
        try:
            first = await roost.connect(f"roost://127.0.0.1:{port}", reconnect=False)
            second = await roost.connect(f"roost://127.0.0.1:{port}", reconnect=False)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            refusal = await asyncio.wait_for(reader.read(4096), 5)
            assert b"max_connections=2" in refusal
            writer.close()
            await writer.wait_closed()
            assert await first.list_topics() == []
            await first.aclose()
            await second.aclose()
        finally:
            await close_native(server)
            await host.aclose()

    asyncio.run(main())
