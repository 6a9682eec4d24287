"""The flood processes of ``roost bench faults``: clients that misbehave on purpose.

``python -m roost.bench.faults_clients CASE URL SPEC`` (SPEC a JSON object). A flood prints
``ready`` once it is in place (its connections open, its frames sent), keeps it in place
until a line arrives on stdin, then closes everything and prints one JSON line of what it
did. The floods speak the native protocol by hand, through the sans-IO codec, so that they
can misbehave as a real client never would:

- ``idle``: ``connections`` connections that say HELLO, get WELCOME and then only answer
  PINGs;
- ``stalled``: one connection subscribes with ``prefetch`` credit and never reads again,
  while another (a normal client) publishes ``messages`` to the same queue; it says it is
  ready once they are all published (the stall and its backlog are then in place);
- ``unread``: one connection publishes ``messages`` (``batch`` per frame, pipelined) and
  never reads a reply; it stops when they are sent, the broker stops reading it
  (``write_timeout_s`` without progress) or closes it, and says which (``ended``);
- ``slowloris``: ``connections`` connections, half of which send two bytes of a frame header
  and stall, and half of which finish the handshake, send the header of a frame that declares
  ``declared_bytes`` and ``body_bytes`` of it, and stall;
- ``fuzz``: ``connections`` connections that send random bytes (half of them after a proper
  handshake) at ``bytes_per_s`` in all, reconnecting whenever the broker closes one.

The well-behaved client they are measured against is ``faults_probe``.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import sys
from typing import Any
from urllib.parse import urlsplit

from roost.protocols.native import messages as m
from roost.protocols.native.codec import (
    HEADER,
    NEED_DATA,
    VERSIONS,
    Frame,
    Kind,
    NativeCodec,
    encode,
)

VALUE_BYTES = 1024
CONNECT_CHUNK = 100


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 7420


class Raw:
    """One hand-driven native connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = NativeCodec("client")
        #: How often the broker wants to hear from us (its WELCOME says; 0: never asks).
        self.heartbeat_ms = 0

    @classmethod
    async def open(cls, url: str, handshake: bool = True) -> Raw:
        raw = cls(*await asyncio.open_connection(*_address(url)))
        if handshake:
            hello = m.Hello(sorted(VERSIONS, reverse=True), "roost bench faults")
            raw.writer.write(raw.codec.send(Frame(Kind.HELLO, 0, hello)))
            welcome = (await raw.next_frame()).message
            if isinstance(welcome, m.Welcome):
                raw.heartbeat_ms = welcome.heartbeat_ms
        return raw

    async def next_frame(self) -> Frame:
        while (event := self.codec.next_event()) is NEED_DATA:
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self.codec.receive_data(data)
        assert isinstance(event, Frame)
        return event

    async def idle(self) -> None:
        """Do nothing, as a live client does: answer PINGs, and PING as often as the WELCOME
        asked, until the connection ends."""
        pinging = asyncio.create_task(self._ping()) if self.heartbeat_ms > 0 else None
        try:
            while True:
                frame = await self.next_frame()
                if frame.kind is Kind.PING:
                    self.writer.write(self.codec.send(Frame(Kind.PONG, 0, m.Empty())))
        except (ConnectionError, OSError):
            return
        finally:
            if pinging is not None:
                pinging.cancel()

    async def _ping(self) -> None:
        while not self.writer.transport.is_closing():
            await asyncio.sleep(self.heartbeat_ms / 2000)
            self.writer.write(self.codec.send(Frame(Kind.PING, 0, m.Empty())))

    async def closed_by_peer(self, within_s: float) -> bool:
        """Whether the broker has closed this connection (reading resumed to see its EOF)."""
        self.writer.transport.resume_reading()  # type: ignore[attr-defined]
        try:
            async with asyncio.timeout(within_s):
                while await self.reader.read(1 << 16):
                    pass
            return True
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True  # reset

    def stop_reading(self) -> None:
        self.writer.transport.pause_reading()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.writer.transport.abort()


def _publish_frames(topic: str, batch: int) -> bytes:
    """One Publish frame of ``batch`` 1 KiB messages (correlation 1: patch it per use)."""
    out = [m.Out(bytes(VALUE_BYTES))] * batch
    return encode(Frame(Kind.REQUEST, 1, m.Publish(topic, out)))


async def _open_many(url: str, count: int, handshake: bool = True) -> tuple[list[Raw], int]:
    """``count`` connections, ``CONNECT_CHUNK`` at a time; (those opened, refusals)."""
    opened: list[Raw] = []
    refused = 0
    for start in range(0, count, CONNECT_CHUNK):
        chunk = min(CONNECT_CHUNK, count - start)
        results = await asyncio.gather(
            *(Raw.open(url, handshake) for _ in range(chunk)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Raw):
                opened.append(result)
            else:
                refused += 1
    return opened, refused


# -- the floods ----------------------------------------------------------------------------------


async def _idle(url: str, spec: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    opened, refused = await _open_many(url, spec["connections"])
    readers = [asyncio.create_task(raw.idle()) for raw in opened]
    _ready()
    await stop.wait()
    alive = sum(not task.done() for task in readers)
    for raw in opened:
        raw.close()
    await asyncio.gather(*readers)
    return {"opened": len(opened), "refused": refused, "alive_at_stop": alive}


async def _create_queue(url: str, topic: str) -> None:
    import roost

    async with roost.connect(url, reconnect=False) as client:
        await client.create_queue(topic, max_deliveries=None, dead_letter=None)


async def _stalled(url: str, spec: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    import roost

    topic, messages, batch = spec["topic"], spec["messages"], spec["batch"]
    await _create_queue(url, topic)
    consumer = await Raw.open(url)
    request = m.Subscribe(topic, topic, spec["prefetch"])
    consumer.writer.write(consumer.codec.send(Frame(Kind.REQUEST, 1, request)))
    await consumer.writer.drain()
    consumer.stop_reading()
    sent = 0
    value = bytes(VALUE_BYTES)
    async with roost.connect(url, reconnect=False) as producer:

        async def publisher() -> None:
            nonlocal sent
            while sent < messages and not stop.is_set():
                count = min(batch, messages - sent)
                sent += count
                await producer.publish_batch(topic, [roost.Outgoing(value=value)] * count)

        # The flood is in place once its queue holds them all: the probe then measures what a
        # stalled consumer with a full prefetch and a deep backlog costs, not a second producer.
        publishing = [asyncio.create_task(publisher()) for _ in range(4)]
        await asyncio.gather(*publishing)
        _ready()
        _say({"done": True})
        await stop.wait()
    consumer.close()
    return {"published": sent}


async def _unread(url: str, spec: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    await _create_queue(url, spec["topic"])
    raw = await Raw.open(url)
    raw.stop_reading()
    frame = bytearray(_publish_frames(spec["topic"], spec["batch"]))
    frames = spec["messages"] // spec["batch"]
    _ready()
    sent, ended = 0, "all sent"
    for correlation in range(1, frames + 1):
        if stop.is_set():
            ended = "stopped"
            break
        struct.pack_into("<I", frame, 5, correlation)
        raw.writer.write(bytes(frame))
        try:
            await asyncio.wait_for(raw.writer.drain(), spec["write_timeout_s"])
        except TimeoutError:
            ended = "the broker stopped reading"  # what a bounded broker does
            break
        except (ConnectionError, OSError):
            ended = "the broker closed the connection"
            break
        sent += 1
    _say({"done": True})
    await stop.wait()
    raw.close()
    return {"frames_sent": sent, "messages_sent": sent * spec["batch"], "ended": ended}


async def _slowloris(url: str, spec: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    count = spec["connections"]
    partial, refused = await _open_many(url, count // 2, handshake=False)
    declaring, refused_too = await _open_many(url, count - count // 2)
    hello = NativeCodec("client").send(Frame(Kind.HELLO, 0, m.Hello(sorted(VERSIONS))))
    for raw in partial:
        raw.writer.write(hello[:2])
    header = HEADER.pack(spec["declared_bytes"] - 4, Kind.REQUEST, 1)
    for raw in declaring:
        raw.writer.write(header + bytes(spec["body_bytes"]))
    for raw in partial + declaring:
        raw.stop_reading()
    await asyncio.gather(*(raw.writer.drain() for raw in partial + declaring),
                         return_exceptions=True)  # fmt: skip
    _ready()
    await stop.wait()
    closed = sum(await asyncio.gather(*(raw.closed_by_peer(0.5) for raw in partial + declaring)))
    for raw in partial + declaring:
        raw.close()
    return {"opened": len(partial) + len(declaring), "refused": refused + refused_too,
            "closed_by_broker": closed}  # fmt: skip


async def _fuzz(url: str, spec: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
    connections = spec["connections"]
    chunk_bytes = 1024
    pause_s = connections * chunk_bytes / spec["bytes_per_s"]
    totals = {"connections": 0, "bytes": 0}

    async def fuzzer(n: int) -> None:
        rng = random.Random(n)
        while not stop.is_set():
            try:
                raw = await Raw.open(url, handshake=n % 2 == 1)
                totals["connections"] += 1
                while not stop.is_set() and not raw.writer.transport.is_closing():
                    raw.writer.write(rng.randbytes(chunk_bytes))
                    totals["bytes"] += chunk_bytes
                    await asyncio.sleep(pause_s)
                    if raw.reader.at_eof():
                        break
                raw.close()
            except (ConnectionError, OSError):
                await asyncio.sleep(pause_s)

    tasks = [asyncio.create_task(fuzzer(n)) for n in range(connections)]
    _ready()
    await stop.wait()
    await asyncio.gather(*tasks)
    return totals


# -- the process ---------------------------------------------------------------------------------

FLOODS = {"idle": _idle, "stalled": _stalled, "unread": _unread, "slowloris": _slowloris,
          "fuzz": _fuzz}  # fmt: skip


def _say(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def _ready() -> None:
    _say("ready")


async def _flood(role: str, url: str, spec: dict[str, Any]) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stdin = loop.run_in_executor(None, sys.stdin.readline)
    stdin.add_done_callback(lambda _: stop.set())
    return await FLOODS[role](url, spec, stop)


def main(argv: list[str]) -> None:
    role, url, spec = argv[0], argv[1], json.loads(argv[2])
    work = _flood(role, url, spec)
    try:
        import uvloop

        result = uvloop.run(work)
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        result = asyncio.run(work)
    _say({"result": result})


if __name__ == "__main__":
    main(sys.argv[1:])
