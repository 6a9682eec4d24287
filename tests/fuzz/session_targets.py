"""Fuzz target for what the broker does with a request that decodes: the native session's
handler, through the door, into the core, on a real host (``roost.server.host``, a data
directory in memory-backed storage when there is one, a manual clock).

Issue 13 found requests answered ``internal`` (a traceback in the log) for input a client
can send. A request is answered ``internal`` exactly when its handler raises something that
is not a ``RoostError``; so the contract here is: every handler returns a response or raises
a ``RoostError`` (which the client gets with its code), whatever the values in the request.

The input is request payloads (MessagePack, as in a ``REQUEST`` frame) separated by
``SEAL``, or (first byte odd) requests generated field by field from it, run in order
against a broker that has a queue ``q``, a topic ``t`` with a stream group ``g`` and an
exchange ``x``. Waiting is out of scope (the clock never moves): a
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
from typing import Any

import atheris
import msgspec
from msgspec import inspect as mi

from roost.clock import ManualClock
from roost.errors import RoostError
from roost.protocols.native import messages as m
from roost.receipt import Receipt
from roost.server.access import ANONYMOUS
from roost.server.host import Host
from roost.server.native_session import HANDLERS
from tests.fuzz.native_targets import REQUESTS
from tests.fuzz.target import Target, scratch_directory

SEAL = b"|seal|"
FRESH_EVERY = 300
MAX_PARTITIONS = 4
_DECODER = msgspec.msgpack.Decoder(m.AnyRequest)
_ROOT = scratch_directory()
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


#: Names a generated request picks from: what the broker has, what it lacks, odd ones.
NAMES = ["q", "q.dlq", "t", "g", "x", "m", "s", "", "nope", "a.b", "#", "a.*", "earliest"]
_REQUEST_TYPES: list[type[m.Request]] = list(m.AnyRequest.__args__)
_INTS = [0, 1, -1, 2, 7, 1000, 2**31, 2**32, 2**63 - 1, -(2**63)]


def generated(data: bytes) -> list[bytes]:
    """Requests built field by field from the input (each field's type from msgspec's type
    info, values from names the broker knows and edge numbers), encoded as a client would:
    the fuzzer explores values, not MessagePack syntax."""
    provider = atheris.FuzzedDataProvider(data)
    payloads = []
    for _ in range(provider.ConsumeIntInRange(1, 4)):
        cls = _REQUEST_TYPES[provider.ConsumeIntInRange(0, len(_REQUEST_TYPES) - 1)]
        payloads.append(msgspec.msgpack.encode(_value(mi.type_info(cls), provider, 0)))
    return payloads


def _value(t: Any, p: Any, depth: int) -> Any:  # noqa: PLR0912 (one branch per kind of type)
    if isinstance(t, mi.StructType):
        values = {}
        for field in t.fields:
            if field.required or p.ConsumeBool():
                values[field.name] = _value(field.type, p, depth + 1)
        return t.cls(**values)
    if isinstance(t, mi.UnionType):
        return _value(t.types[p.ConsumeIntInRange(0, len(t.types) - 1)], p, depth)
    if isinstance(t, mi.IntType):
        pick = p.ConsumeIntInRange(0, len(_INTS))
        return _INTS[pick] if pick < len(_INTS) else p.ConsumeIntInRange(-100, 100)
    if isinstance(t, mi.StrType):
        pick = p.ConsumeIntInRange(0, len(NAMES))
        return NAMES[pick] if pick < len(NAMES) else p.ConsumeUnicodeNoSurrogates(6)
    if isinstance(t, mi.ListType | mi.DictType) and depth > 3:
        return [] if isinstance(t, mi.ListType) else {}
    if isinstance(t, mi.ListType):
        return [_value(t.item_type, p, depth + 1) for _ in range(p.ConsumeIntInRange(0, 3))]
    if isinstance(t, mi.DictType):
        return {_value(t.key_type, p, depth + 1): _value(t.value_type, p, depth + 1)
                for _ in range(p.ConsumeIntInRange(0, 2))}  # fmt: skip
    if isinstance(t, mi.TupleType):
        return tuple(_value(item, p, depth + 1) for item in t.item_types)
    if isinstance(t, mi.FloatType):
        return p.ConsumeRegularFloat() if p.ConsumeBool() else p.ConsumeFloat()
    if isinstance(t, mi.BytesType):
        return p.ConsumeBytes(p.ConsumeIntInRange(0, 8))
    if isinstance(t, mi.BoolType):
        return p.ConsumeBool()
    return None


def check_requests(data: bytes) -> None:
    """A first byte with its low bit set: requests generated from the rest; else raw
    payloads separated by ``SEAL``."""
    door = BROKER.door()
    payloads = generated(data[1:]) if data[:1] and data[0] & 1 else data.split(SEAL)[:4]
    for payload in payloads:
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
        *(bytes([1, i]) + bytes(range(40)) for i in range(0, 256, 8)),
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
