"""Fuzz target for what the broker does with a request that decodes: the native session's
handler, through the door, into the core, on a real host (``roost.server.host``, a data
directory in memory-backed storage when there is one, a manual clock).

Issue 13 found requests answered ``internal`` (a traceback in the log) for input a client
can send. A request is answered ``internal`` exactly when its handler raises something that
is not a ``RoostError``; so the contract here is: every handler returns a response or raises
a ``RoostError`` (which the client gets with its code), whatever the values in the request.

The input is request payloads (MessagePack, as in a ``REQUEST`` frame) separated by
``SEAL``, run in order against a broker that has a queue ``q``, a topic ``t`` with a stream
group ``g`` and an exchange ``x``. Waiting is out of scope (the clock never moves): a
receive or fetch is made not to wait, and a handler still waiting after a few seconds is
cancelled. The broker is made anew every ``FRESH_EVERY`` inputs, so what fuzzed requests
create does not pile up.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
from typing import Any

import msgspec

from roost.clock import ManualClock
from roost.errors import RoostError
from roost.protocols.native import messages as m
from roost.receipt import Receipt
from roost.server.access import ANONYMOUS
from roost.server.host import Host
from roost.server.native_session import HANDLERS
from tests.fuzz.native_targets import REQUESTS
from tests.fuzz.target import Target

SEAL = b"|seal|"
FRESH_EVERY = 300
MAX_PARTITIONS = 4
_DECODER = msgspec.msgpack.Decoder(m.AnyRequest)
_MEMORY = "/dev/shm" if os.path.isdir("/dev/shm") else None
_ROOT = tempfile.mkdtemp(prefix="roost-fuzz-", dir=_MEMORY)
atexit.register(shutil.rmtree, _ROOT, True)


class _Broker:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.host: Host | None = None
        self.inputs = 0
        self.generation = 0

    def door(self) -> Any:
        if self.host is None or self.inputs >= FRESH_EVERY:
            self.loop.run_until_complete(self._fresh())
        self.inputs += 1
        assert self.host is not None
        return self.host.door(ANONYMOUS)

    async def _fresh(self) -> None:
        if self.host is not None:
            await self.host.aclose()
            shutil.rmtree(os.path.join(_ROOT, str(self.generation)))
        self.generation += 1
        self.inputs = 0
        self.host = await Host.start(os.path.join(_ROOT, str(self.generation)), ManualClock())
        door = self.host.door(ANONYMOUS)
        door.create_queue("q", durability="never")
        for setup in [
            m.CreateTopic("t", m.TopicSettings(partitions=2, durability="never")),
            m.CreateSubscription(m.SubscriptionSettings(name="g", topic="t", mode="stream")),
            m.DeclareExchange("x", "topic"),
            m.Bind(m.Binding(exchange="x", topic="t", key="a.#")),
        ]:
            await HANDLERS[type(setup)](door, setup)

    def run(self, work: Any) -> None:
        self.loop.run_until_complete(_bounded_wait(work))

    def close(self) -> None:
        """At exit: the host's tasks cancelled (not closed: the threads a clean close uses
        are gone by then, and the data directory goes anyway)."""
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()


async def _bounded_wait(work: Any) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(work, 3)


BROKER = _Broker()
atexit.register(BROKER.close)


def without_waiting(request: m.Request) -> m.Request | None:
    """``request`` as it may run here: no waits, few partitions; None for the pushes
    (Subscribe, Unsubscribe), which the connection handles, not the session."""
    if isinstance(request, m.Subscribe | m.Unsubscribe):
        return None
    if isinstance(request, m.Receive | m.Fetch | m.FetchBatches):
        return msgspec.structs.replace(request, wait_ms=0)
    if isinstance(request, m.CreateTopic) and isinstance(request.config.partitions, int):
        partitions = min(request.config.partitions, MAX_PARTITIONS)
        return msgspec.structs.replace(
            request, config=msgspec.structs.replace(request.config, partitions=partitions)
        )
    if isinstance(request, m.CreateQueue) and isinstance(request.options.partitions, int):
        partitions = min(request.options.partitions, MAX_PARTITIONS)
        return msgspec.structs.replace(
            request, options=msgspec.structs.replace(request.options, partitions=partitions)
        )
    return request


def check_requests(data: bytes) -> None:
    door = BROKER.door()
    for payload in data.split(SEAL)[:4]:
        try:
            decoded = _DECODER.decode(payload)
        except (ValueError, RecursionError):
            continue  # not a request: the codec's business (native_server)
        request = without_waiting(decoded)
        if request is None:
            continue
        with contextlib.suppress(RoostError):  # answered with its code: the contract
            BROKER.run(HANDLERS[type(request)](door, request))


def seeds() -> list[bytes]:
    encode = msgspec.msgpack.encode
    singles = [encode(r) for r in REQUESTS]
    return [
        *singles,
        SEAL.join(encode(r) for r in REQUESTS[:4]),
        SEAL.join(
            [
                encode(m.Publish("q", [m.Out(b"v")])),
                encode(m.Receive("q", "q", 5)),
                encode(m.Ack("q", "q", [Receipt(0, 0, 1)])),
            ]
        ),
    ]


TARGETS = {
    "native_requests": Target(
        "native_requests",
        "requests that decode, run by the native session's handlers through the door on a "
        "real host: a response or a RoostError, never anything answered 'internal'",
        check_requests, seeds, short_runs=1500),
}  # fmt: skip
