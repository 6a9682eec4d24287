"""Trace context through messages (roost.client.tracing, issue 16 item 7).

Without a recording tracer: W3C ``traceparent``/``tracestate`` travel unchanged from a message
to what its handler publishes (worker, subscriber loop, batching producer), a caller's own
header wins, and nothing is added where there is no trace. With OpenTelemetry's SDK: a
``PRODUCER`` span per publish and a ``CONSUMER`` span per handled message, linked parent to
child across the broker, with the messaging attributes, and an error recorded on failure.
Embedded and over the network alike.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import roost
from roost.client import tracing
from roost.client.producer import Producer
from roost.clock import ManualClock
from tests.embedded_support import WAYS, run_either

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = b"vendor=opaque"


def _header(delivery: roost.Delivery, name: str) -> bytes | None:
    return dict(delivery.headers).get(name)


async def _work_once(broker: Any, queue: str, handler: Callable[[roost.Delivery], Any]) -> None:
    """Run a worker over ``queue`` until its handler has seen one message."""
    worker = roost.Worker(broker)
    done = asyncio.Event()

    async def handle(delivery: roost.Delivery) -> None:
        try:
            await handler(delivery)
        finally:
            done.set()
            worker.stop()

    worker.handler(queue)(handle)
    await asyncio.gather(worker.run(), done.wait())


# -- W3C headers, nothing recording -----------------------------------------------------------


@pytest.mark.parametrize("where", WAYS)
def test_a_handler_passes_the_trace_on(where: str, tmp_path: Path, clock: ManualClock) -> None:
    async def body(broker: Any) -> None:
        for name in ("in", "out"):
            await broker.create_queue(name, durability="never")
        await broker.publish("in", b"job", headers={"traceparent": PARENT, "tracestate": STATE})

        async def handler(delivery: roost.Delivery) -> None:
            await broker.publish("out", b"result")
            producer = await Producer.start(broker, "out")
            await producer.send(b"batched")
            await producer.aclose()

        await _work_once(broker, "in", handler)
        results = await broker.receive("out", max_messages=10)
        assert [r.value for r in results] == [b"result", b"batched"]
        for result in results:
            assert (_header(result, "traceparent"), _header(result, "tracestate")) == (
                PARENT, STATE,
            )  # fmt: skip
        await broker.publish("out", b"outside any handler")
        [outside] = await broker.receive("out")
        assert _header(outside, "traceparent") is None

    run_either(where, tmp_path, clock, body)


def test_a_subscriber_loop_continues_each_messages_trace(tmp_path: Path) -> None:
    async def body() -> None:
        async with roost.open(str(tmp_path / "data")) as broker:
            for name in ("in", "out"):
                await broker.create_queue(name, durability="never")
            await broker.publish("in", b"traced", headers={"traceparent": PARENT})
            await broker.publish("in", b"untraced")
            async with broker.subscribe("in") as deliveries:
                async for delivery in deliveries:
                    await broker.publish("out", delivery.value)
                    await delivery.ack()
                    if delivery.value == b"untraced":
                        break
            traced, untraced = await broker.receive("out", max_messages=10)
            assert _header(traced, "traceparent") == PARENT
            assert _header(untraced, "traceparent") is None

    asyncio.run(body())


def test_a_callers_own_trace_header_wins(tmp_path: Path) -> None:
    async def body() -> None:
        async with roost.open(str(tmp_path / "data")) as broker:
            await broker.create_queue("in", durability="never")
            mine = b"00-11111111111111111111111111111111-2222222222222222-01"
            with tracing.processing(_Fake(headers=(("traceparent", PARENT),))):
                await broker.publish("in", b"x", headers={"traceparent": mine})
            [delivery] = await broker.receive("in")
            assert [v for n, v in delivery.headers if n == "traceparent"] == [mine]

    asyncio.run(body())


class _Fake:
    topic, subscription, partition, offset, delivery_count = "t", "s", 0, 0, 1

    def __init__(self, headers: tuple[tuple[str, bytes], ...]) -> None:
        self.headers = headers


# -- OpenTelemetry spans ----------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


def _one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


@pytest.mark.parametrize("where", WAYS)
def test_spans_link_producer_to_consumer_across_the_broker(
    where: str, tmp_path: Path, clock: ManualClock, spans: InMemorySpanExporter
) -> None:
    async def body(broker: Any) -> None:
        for name in ("in", "out"):
            await broker.create_queue(name, durability="never")
        tracer = trace.get_tracer("app", tracer_provider=tracing._where.provider)
        with tracer.start_as_current_span("request"):
            await broker.publish("in", b"job")

        async def handler(delivery: roost.Delivery) -> None:
            await broker.publish("out", b"result")

        await _work_once(broker, "in", handler)
        [result] = await broker.receive("out")

        request = _one(spans, "request")
        send_in, process, send_out = (
            _one(spans, "send in"), _one(spans, "process in"), _one(spans, "send out"),
        )  # fmt: skip
        assert (send_in.kind, process.kind, send_out.kind) == (
            SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.PRODUCER,
        )  # fmt: skip
        assert send_in.parent is not None and process.parent is not None
        assert send_out.parent is not None
        assert send_in.parent.span_id == request.context.span_id
        assert process.parent.span_id == send_in.context.span_id  # across the broker
        assert send_out.parent.span_id == process.context.span_id
        assert len({s.context.trace_id for s in (request, send_in, process, send_out)}) == 1
        assert process.attributes is not None
        assert process.attributes["messaging.system"] == "roost"
        assert process.attributes["messaging.destination.name"] == "in"
        assert process.attributes["messaging.consumer.group.name"] == "in"
        assert process.attributes["messaging.operation.type"] == "process"
        assert send_in.attributes is not None
        assert send_in.attributes["messaging.operation.type"] == "send"
        traceparent = _header(result, "traceparent")
        assert traceparent is not None
        assert traceparent.split(b"-")[2] == b"%016x" % send_out.context.span_id

    run_either(where, tmp_path, clock, body)


def test_a_failing_handler_marks_its_span(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    async def body() -> None:
        async with roost.open(str(tmp_path / "data")) as broker:
            await broker.create_queue("in", durability="never")
            await broker.publish("in", b"job")

            async def handler(delivery: roost.Delivery) -> None:
                raise ValueError("cannot parse")

            await _work_once(broker, "in", handler)

    asyncio.run(body())
    process = _one(spans, "process in")
    assert process.status.status_code is StatusCode.ERROR
    assert [event.name for event in process.events] == ["exception"]
    assert process.parent is not None  # the send span of a publish outside any trace
    assert process.parent.span_id == _one(spans, "send in").context.span_id


def test_without_opentelemetry_the_headers_still_travel(tmp_path: Path) -> None:
    """A runtime install has no ``otel`` extra: the module imports and carries the W3C
    headers (checked in a fresh interpreter where importing opentelemetry fails)."""
    program = f"""
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if not installed
import roost
from roost.client import tracing
assert tracing.trace is None

async def main():
    async with roost.open({str(tmp_path / "data")!r}) as broker:
        await broker.create_queue("in", durability="never")
        await broker.create_queue("out", durability="never")
        await broker.publish("in", b"job", headers={{"traceparent": {PARENT!r}}})
        async with broker.subscribe("in") as deliveries:
            async for delivery in deliveries:
                await broker.publish("out", b"result")
                await delivery.ack()
                break
        [result] = await broker.receive("out")
        assert dict(result.headers)["traceparent"] == {PARENT!r}, result.headers

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
