"""Trace context through messages: W3C ``traceparent`` and ``tracestate`` headers always, and
with OpenTelemetry installed (the ``otel`` extra: ``pip install roost[otel]``), producer and
consumer spans as OpenTelemetry's messaging conventions name them.

    await broker.publish("emails", b"hi")         # carries the current trace context
    with roost.tracing.processing(delivery):      # the Worker does this around each handler
        await broker.publish("receipts", b"...")  # continues the message's trace

How the context travels:

- **publish** (``publish``, ``publish_batch``, ``publish_to_exchange``, a ``Producer``'s
  ``send``) adds ``traceparent``/``tracestate`` to each message that does not carry its own.
  With OpenTelemetry it opens a ``PRODUCER`` span ``send <topic>`` around the publish, a child
  of the current span, and the headers name that span. Without it, the headers of the message
  being processed (below) are passed on unchanged, as W3C asks of a participant that records
  nothing.
- **processing**: ``processing(delivery)`` makes the delivery's trace the current one while a
  handler runs; with OpenTelemetry it is a ``CONSUMER`` span ``process <topic>`` whose parent
  is the producer's span, ended with the handler (an exception marks it an error).
- **the subscriber**: iterating a ``Subscriber`` makes each delivery's trace the current one
  until the next delivery, so a publish in the loop body continues it (no span: the loop body
  is not ours to time; wrap it in ``processing`` for one).

Spans go to the global tracer provider, or to the one given to ``use``. With OpenTelemetry
installed but no SDK configured, its tracer records nothing and the W3C headers travel as
without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    _SILENT_PROVIDERS: tuple[type, ...] = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
except ImportError:  # the ``otel`` extra is not installed: headers only
    trace = None  # type: ignore[assignment]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
#: ``messaging.system``: what OpenTelemetry's conventions call the broker.
SYSTEM = "roost"

Pairs = tuple[tuple[str, bytes], ...]

#: The trace headers of the message being processed in this context ((): none).
_carried: ContextVar[Pairs] = ContextVar("roost_trace_headers", default=())


class _Where:
    """Where spans go: ``provider`` (set by ``use``), or None for the global provider."""

    provider: TracerProvider | None = None
    #: The global provider was seen to record (an SDK's): checked no more.
    global_records = False
    #: When to look at the global provider again (``time.monotonic``).
    next_look = 0.0


_where = _Where()


class Received(Protocol):
    """What ``processing`` reads of a delivery (``Delivery`` and ``SyncDelivery`` have it)."""

    @property
    def topic(self) -> str: ...
    @property
    def subscription(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def delivery_count(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def use(tracer_provider: TracerProvider | None) -> None:
    """Send Roost's spans to ``tracer_provider`` (None: back to the global one)."""
    _where.provider = tracer_provider


def trace_headers(headers: Sequence[tuple[str, bytes]]) -> Pairs:
    """The ``traceparent`` and ``tracestate`` of ``headers``, in order."""
    return tuple((name, value) for name, value in headers if name in _TRACE_HEADERS)


def arrived(headers: Sequence[tuple[str, bytes]]) -> None:
    """A subscriber handed out a message with ``headers``: its trace is the current one."""
    # On every delivery a subscriber hands out: a loop, not a generator, and no set when
    # nothing changes (most messages carry no trace, one after another).
    carried: Pairs = ()
    for pair in headers:
        if pair[0] in _TRACE_HEADERS:
            carried = trace_headers(headers)
            break
    if carried != _carried.get():
        _carried.set(carried)


def _with_trace(pairs: Pairs, extra: Pairs) -> Pairs:
    if not extra or any(name == TRACEPARENT for name, _ in pairs):
        return pairs  # the caller's own trace context wins
    return pairs + extra


def _recording() -> bool:
    """OpenTelemetry is installed and spans go somewhere (an SDK's provider, not the API's
    no-op default): else a span would cost a publish time and record nothing."""
    if trace is None:
        return False
    if _where.provider is not None or _where.global_records:
        return True
    # Asking for the global provider reads the environment (microseconds, on every publish):
    # ask once a second until it records; OpenTelemetry sets it once, so then it stays so.
    now = time.monotonic()
    if now < _where.next_look:
        return False
    _where.next_look = now + 1.0
    _where.global_records = not isinstance(trace.get_tracer_provider(), _SILENT_PROVIDERS)
    return _where.global_records


def stamped(pairs: Pairs) -> Pairs:
    """``pairs`` with the current trace context added, without a span of its own: for a
    message queued now and sent later by someone else (a ``Producer``'s batch)."""
    if _recording() and trace.get_current_span().get_span_context().is_valid:
        return _with_trace(pairs, _injected())
    return _with_trace(pairs, _carried.get())


def _injected() -> Pairs:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((name, carrier[name].encode()) for name in _TRACE_HEADERS if name in carrier)


class _Carry:
    """No span: add ``extra`` (the carried trace headers, maybe none) to each message."""

    __slots__ = ("extra",)

    def __init__(self, extra: Pairs) -> None:
        self.extra = extra

    def __enter__(self) -> Callable[[Pairs], Pairs]:
        return self.add

    def __exit__(self, *exc: object) -> None:
        return None

    def add(self, pairs: Pairs) -> Pairs:
        return _with_trace(pairs, self.extra)


_NO_TRACE = _Carry(())


def sending(destination: str, count: int = 1) -> AbstractContextManager[Callable[[Pairs], Pairs]]:
    """Around one publish to ``destination`` (a topic or an exchange): gives what adds the
    trace headers to a message's headers; with OpenTelemetry, inside a ``PRODUCER`` span."""
    if not _recording():
        carried = _carried.get()
        return _Carry(carried) if carried else _NO_TRACE  # on every publish: kept cheap
    return _producer_span(destination, count)


@contextmanager
def _producer_span(destination: str, count: int) -> Iterator[Callable[[Pairs], Pairs]]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": destination,
    }
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    tracer = trace.get_tracer("roost", tracer_provider=_where.provider)
    with tracer.start_as_current_span(
        f"send {destination}", context=_parent(), kind=SpanKind.PRODUCER, attributes=attributes
    ):
        extra = _injected()
        yield lambda pairs: _with_trace(pairs, extra)


def _parent() -> Any:
    """The context a producer span starts in: the current span's, else the one of the
    message being processed (a subscriber's loop body), else none (a new trace)."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    carried = _carried.get()
    if not carried:
        return None
    return propagate.extract({name: value.decode("latin-1") for name, value in carried})


@contextmanager
def processing(delivery: Received) -> Iterator[None]:
    """While the handling of ``delivery`` runs: its trace is the current one (publishes
    continue it) and, with OpenTelemetry, a ``CONSUMER`` span ``process <topic>`` times it."""
    carried = trace_headers(delivery.headers)
    token = _carried.set(carried)
    try:
        if not _recording():
            yield
            return
        parent = propagate.extract({name: value.decode("latin-1") for name, value in carried})
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.topic,
            "messaging.consumer.group.name": delivery.subscription,
            "messaging.destination.partition.id": str(delivery.partition),
            "messaging.message.id": f"{delivery.partition}-{delivery.offset}",
            "messaging.message.delivery_count": delivery.delivery_count,
        }
        tracer = trace.get_tracer("roost", tracer_provider=_where.provider)
        with tracer.start_as_current_span(
            f"process {delivery.topic}", context=parent, kind=SpanKind.CONSUMER,
            attributes=attributes,
        ):  # fmt: skip
            yield
    finally:
        _carried.reset(token)
