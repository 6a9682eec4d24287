"""A worker: run async handlers over queues, ack on success, nack on failure, keep leases alive.

    worker = Worker(broker, install_signal_handlers=True)

    @worker.handler("emails", concurrency=4, retry=RetryPolicy(kind="fixed", base_ms=5000))
    async def send_email(message: Delivery) -> None:
        await smtp.send(message.value)

    await worker.run()          # until worker.stop(), SIGTERM or SIGINT

How it works. ``run`` consumes every registered queue with ``consume(prefetch=concurrency)``:
the prefetch credit is what bounds the handlers in flight, since a delivery's credit comes back
only when the worker acks or nacks it. Each delivery gets a task that runs the handler beside a
lease keeper, which extends the lease every third of it, so a slow handler that is still alive
is not redelivered; then the task acks (the handler returned), or nacks with the exception's
text as the error and the retry policy's delay (the handler raised ``Exception``), or rejects it
straight to the dead-letter topic (the handler raised ``Reject``: the message can never succeed).

Each failed attempt is one log line (WARNING: the queue, the message, attempt n of the queue's
``max_deliveries``, the error, when it comes again; its traceback at DEBUG). The last attempt
(the message goes to the dead-letter topic) and a reject log at ERROR with the traceback. The
hooks ``on_retry(delivery, error, delay)`` and ``on_dead_letter(delivery, error)`` (plain or
async functions) run after the nack that retries or dead-letters; an exception in a hook is
logged, never raised.

Rules:
- Every task lives in ``run``'s TaskGroup: a broker error (other than ``LeaseExpired``) or a
  ``BaseException`` out of a handler ends ``run`` with it, loudly. Messages whose handlers were
  torn down that way are not nacked; their leases run out and they come back.
- ``stop()`` stops taking messages, waits up to ``shutdown_timeout`` seconds for the running
  handlers, then cancels the rest and nacks their messages (delay 0, error ``STOPPED_ERROR``;
  that delivery still counts towards ``max_deliveries``). A second ``stop()`` (a second Ctrl-C)
  cancels at once. ``run`` returns once every message is settled.
- ``LeaseExpired`` on an ack, nack or extend means the message was or will be delivered again
  (the worker stalled past its lease): it is logged, not raised. Handlers must therefore be
  idempotent, as under any at-least-once delivery (see ``roost.client.idempotency``).
- Lease extensions are paced by ``sleep`` (real time), leases by the broker's clock. Tests pass
  a ``sleep`` they drive together with a ``ManualClock``.
- Call ``stop`` on the worker's event loop (signal handlers run there).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import signal
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast, get_type_hints

from roost.client import tracing
from roost.client.api import Client
from roost.client.durations import Seconds, as_seconds
from roost.client.subscriber import Delivery
from roost.core.retry import RetryPolicy
from roost.errors import InvalidConfig, LeaseExpired, UnknownSubscription

Handler = Callable[[Delivery], Awaitable[None]]
#: What ``handler`` registers: ``f(delivery)``, or typed, ``f(value)`` / ``f(value, delivery)``.
AnyHandler = TypeVar("AnyHandler", bound=Callable[..., Awaitable[None]])
Sleep = Callable[[float], Awaitable[None]]
#: ``on_retry(delivery, error, delay)``: delay in seconds, None for the queue's own policy.
OnRetry = Callable[[Delivery, Exception, float | None], Awaitable[None] | None]
OnDeadLetter = Callable[[Delivery, Exception], Awaitable[None] | None]
Hook = Callable[..., Awaitable[None] | None]


class Reject(Exception):
    """Raised by a handler for a message that can never succeed (it does not parse, it names
    nothing): the worker sends it to the dead-letter topic at once, whatever its count, with
    ``x-roost-death-reason: rejected`` and this exception's text as the error."""


#: The error a message is nacked with when its handler was cancelled by a shutdown.
STOPPED_ERROR = "worker stopped before the handler finished"
#: Longest error text sent with a nack (it ends up in the dead letter's headers).
MAX_ERROR_CHARS = 1000

log = logging.getLogger("roost.worker")


@dataclass
class _Route:
    """One registered queue. ``lease_s`` is the subscription's visibility timeout, read when
    ``run`` starts; ``extend_s`` is what each extension asks for (``visibility_timeout``)."""

    queue: str
    subscription: str
    function: Handler
    concurrency: int
    retry: RetryPolicy | None
    visibility_timeout: float | None
    lease_s: float = 0.0
    extend_s: float = 0.0
    #: The subscription's: the attempt that reaches it dead-letters (None: retried forever).
    max_deliveries: int | None = None


class Worker:
    """Runs handlers over queues; see the module docstring."""

    def __init__(
        self,
        broker: Client,
        *,
        shutdown_timeout: Seconds = 30.0,
        install_signal_handlers: bool = False,
        sleep: Sleep = asyncio.sleep,
        on_retry: OnRetry | None = None,
        on_dead_letter: OnDeadLetter | None = None,
    ) -> None:
        grace = as_seconds("shutdown_timeout", shutdown_timeout)
        if not grace >= 0:
            raise InvalidConfig("shutdown_timeout", shutdown_timeout, "seconds, >= 0")
        self._broker = broker
        self.shutdown_timeout = grace
        self._install_signal_handlers = install_signal_handlers
        self._sleep = sleep
        self._on_retry = on_retry
        self._on_dead_letter = on_dead_letter
        self._routes: dict[tuple[str, str], _Route] = {}
        self._rng = random.Random()
        self._stopping = asyncio.Event()  # stop(): take no more messages
        self._force = asyncio.Event()  # grace period over, or stop() twice: cancel handlers
        self._changed = asyncio.Event()  # a handler finished, or _force was set
        self._active = 0  # deliveries taken and not yet settled
        self._working: set[asyncio.Task[Exception | None]] = set()  # running handler calls
        self._forced: set[asyncio.Task[Exception | None]] = set()  # ... cancelled by _force
        self._running = False

    def handler(
        self,
        queue: str,
        *,
        subscription: str | None = None,
        concurrency: int = 1,
        retry: RetryPolicy | None = None,
        visibility_timeout: Seconds | None = None,
    ) -> Callable[[AnyHandler], AnyHandler]:
        """Register ``async def handle(message: Delivery) -> None`` for ``queue``.

        Typed, the handler's first parameter says what the value is decoded into before it
        is called: ``bytes``, ``str`` (UTF-8), or a model (a msgspec Struct, a dataclass, a
        TypedDict, a pydantic model, ``dict``: from JSON); a second parameter, if any, gets
        the ``Delivery``. A value that does not decode is rejected straight to the
        dead-letter topic (it never will), with the decoding error.

        ``subscription`` defaults to the queue's own. At most ``concurrency`` handlers run at
        once for it. A failure is retried after ``retry``'s delay for that delivery, else after
        the subscription's own retry policy. ``visibility_timeout`` (seconds) is what each lease
        extension asks for; by default the subscription's visibility timeout.
        """
        if type(concurrency) is not int or concurrency < 1:
            raise InvalidConfig("concurrency", concurrency, "a positive int")
        extend_s = None
        if visibility_timeout is not None:
            extend_s = as_seconds("visibility_timeout", visibility_timeout)
            if not extend_s > 0:
                raise InvalidConfig("visibility_timeout", visibility_timeout, "seconds, > 0")
        name = subscription or queue
        if (queue, name) in self._routes:
            raise InvalidConfig("handler", f"{queue}/{name}", "one handler per subscription")

        def register(function: AnyHandler) -> AnyHandler:
            route = _Route(queue, name, typed(function), concurrency, retry, extend_s)
            self._routes[queue, name] = route
            return function

        return register

    def stop(self) -> None:
        """Stop taking messages and let running handlers finish (see the module docstring).
        Called again while stopping: cancel the running handlers now."""
        if self._stopping.is_set():
            self._force.set()
            self._changed.set()
        self._stopping.set()

    async def run(self) -> None:
        """Consume every registered queue until ``stop()``; returns once everything taken has
        been acked or nacked. Raises what a consumer, a lease keeper or a settlement raised
        (in an ``ExceptionGroup``), and ``UnknownSubscription`` for a queue that is missing."""
        if not self._routes:
            raise InvalidConfig("handlers", 0, "register one with @worker.handler(queue)")
        if self._running:
            raise RuntimeError("this worker is already running")
        self._running = True
        try:
            routes = [await self._prepare(route) for route in self._routes.values()]
            with self._signals():
                await self._serve(routes)
        finally:
            self._running = False
            self._stopping.clear()
            self._force.clear()

    # -- consuming ------------------------------------------------------------------------

    async def _serve(self, routes: list[_Route]) -> None:
        async with asyncio.TaskGroup() as tasks:
            consumers = [
                tasks.create_task(self._consume(route, tasks), name=f"consume {route.queue}")
                for route in routes
            ]
            await self._stopping.wait()
            for consumer in consumers:
                consumer.cancel()
            await self._drain(tasks)

    async def _prepare(self, route: _Route) -> _Route:
        """Read the subscription's visibility timeout: the first lease a delivery has."""
        for spec in await self._broker.list_subscriptions(route.queue):
            if spec.name == route.subscription:
                route.lease_s = spec.visibility_timeout_ms / 1000
                route.extend_s = route.visibility_timeout or route.lease_s
                route.max_deliveries = spec.max_deliveries if spec.dead_letter else None
                return route
        raise UnknownSubscription(route.queue, route.subscription)

    async def _consume(self, route: _Route, tasks: asyncio.TaskGroup) -> None:
        deliveries = cast(
            AsyncGenerator[Delivery, None],
            self._broker.consume(route.queue, route.subscription, prefetch=route.concurrency),
        )
        # Cancelled only while it awaits the next delivery (nothing else here awaits), so no
        # delivery is ever taken and dropped.
        try:
            async for delivery in deliveries:
                self._active += 1
                tasks.create_task(self._handle(route, delivery), name=f"roost-worker {delivery}")
        finally:
            await deliveries.aclose()

    async def _handle(self, route: _Route, delivery: Delivery) -> None:
        try:
            if self._force.is_set():
                error, cancelled = None, True
            else:
                error, cancelled = await self._call(route, delivery)
            await self._settle(route, delivery, error, cancelled)
        finally:
            self._active -= 1
            self._changed.set()

    async def _call(self, route: _Route, delivery: Delivery) -> tuple[Exception | None, bool]:
        """Run the handler beside its lease keeper: (the exception it raised, cancelled?)."""
        async with asyncio.TaskGroup() as tasks:
            keeper = tasks.create_task(self._keep_lease(route, delivery))
            work = tasks.create_task(_outcome(route.function, delivery))
            self._working.add(work)
            try:
                await asyncio.wait([work])
            finally:
                self._working.discard(work)
                keeper.cancel()
        if work.cancelled() or work in self._forced:
            self._forced.discard(work)
            return None, True
        return work.result(), False

    async def _keep_lease(self, route: _Route, delivery: Delivery) -> None:
        lease_s = route.lease_s
        while lease_s > 0:
            await self._sleep(lease_s / 3)
            try:
                await delivery.extend(route.extend_s)
            except LeaseExpired:
                log.warning("%r: the lease ran out before it was extended", delivery)
                return
            lease_s = route.extend_s

    async def _settle(
        self, route: _Route, delivery: Delivery, error: Exception | None, cancelled: bool
    ) -> None:
        try:
            if cancelled:
                await delivery.nack(delay=0.0, error=STOPPED_ERROR)
            elif error is None:
                await delivery.ack()
            elif isinstance(error, Reject):
                log.error("handler for %s rejected %r: %s; to the dead-letter topic",
                          route.queue, delivery, _said(error), exc_info=error)  # fmt: skip
                await delivery.reject(error=_text(error))
                await self._hook(self._on_dead_letter, delivery, error)
            else:
                await self._failed(route, delivery, error)
        except LeaseExpired:
            log.warning("%r: the lease ran out before it was settled; it comes back", delivery)

    async def _failed(self, route: _Route, delivery: Delivery, error: Exception) -> None:
        count, limit = delivery.delivery_count, route.max_deliveries
        of = "" if limit is None else f" of {limit}"
        if limit is not None and count >= limit:
            log.error("handler for %s failed on %r, attempt %d%s: %s; to the dead-letter topic",
                      route.queue, delivery, count, of, _said(error), exc_info=error)  # fmt: skip
            await delivery.nack(error=_text(error))
            await self._hook(self._on_dead_letter, delivery, error)
            return
        delay = self._retry_delay(route, delivery)
        when = "per the queue's retry policy" if delay is None else f"again in {delay:g} s"
        log.warning("handler for %s failed on %r, attempt %d%s: %s; %s",
                    route.queue, delivery, count, of, _said(error), when)  # fmt: skip
        log.debug("handler for %s failed on %r", route.queue, delivery, exc_info=error)
        await delivery.nack(delay=delay, error=_text(error))
        await self._hook(self._on_retry, delivery, error, delay)

    async def _hook(
        self, hook: Callable[..., Awaitable[None] | None] | None, *args: object
    ) -> None:
        if hook is None:
            return
        try:
            result = hook(*args)
            if result is not None:
                await result
        except Exception:
            log.exception("worker hook %r failed (the message was settled)", hook)

    def _retry_delay(self, route: _Route, delivery: Delivery) -> float | None:
        if route.retry is None:
            return None
        return route.retry.delay_ms(delivery.delivery_count, self._rng) / 1000

    # -- stopping -------------------------------------------------------------------------

    async def _drain(self, tasks: asyncio.TaskGroup) -> None:
        """Wait for the running handlers, up to the grace period; then cancel the rest."""
        grace = tasks.create_task(self._grace_period(), name="roost-worker grace period")
        try:
            while self._active and not self._force.is_set():
                self._changed.clear()
                await self._changed.wait()
        finally:
            grace.cancel()
        self._force.set()  # from here on, a delivery still starting is nacked, not run
        for work in list(self._working):
            if work.cancel():
                self._forced.add(work)

    async def _grace_period(self) -> None:
        await self._sleep(self.shutdown_timeout)
        if self._active:
            log.warning("worker: %d handlers still running after %s s; cancelling them",
                        self._active, self.shutdown_timeout)  # fmt: skip
        self._force.set()
        self._changed.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT call ``stop`` while ``run`` runs; the previous handlers return
        afterwards."""
        if not self._install_signal_handlers:
            yield
            return
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.getsignal(sig) for sig in signals}
        for sig in signals:
            loop.add_signal_handler(sig, self.stop)
        try:
            yield
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
                if previous[sig] is not None:  # None: set outside Python; leave the default
                    signal.signal(sig, previous[sig])


def typed(function: Callable[..., Awaitable[None]]) -> Handler:
    """``function`` as a handler of deliveries: as it is if its first parameter takes the
    ``Delivery`` (or says nothing), else wrapped to decode the value into that type first."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
        hints = get_type_hints(function)
    except (NameError, TypeError) as e:
        raise InvalidConfig("handler", getattr(function, "__name__", function),
                            f"its parameter types cannot be resolved: {e}") from None  # fmt: skip
    if not parameters:
        raise InvalidConfig("handler", function.__name__, "takes no parameter: give it one")
    kind = hints.get(parameters[0].name)
    if kind is None or kind is Delivery or kind is Any:
        return cast(Handler, function)
    decode = _decoder(kind)
    with_delivery = len(parameters) > 1
    name = getattr(kind, "__name__", str(kind))

    async def decoded(delivery: Delivery) -> None:
        try:
            value = decode(delivery)
        except ValueError as e:  # UnicodeDecodeError and pydantic's ValidationError are too
            raise Reject(f"cannot decode the value as {name}: {e}") from None
        await (function(value, delivery) if with_delivery else function(value))

    return decoded


def _decoder(kind: Any) -> Callable[[Delivery], object]:
    if kind is bytes:
        return lambda delivery: delivery.value
    if kind is str:
        return lambda delivery: delivery.text()
    return lambda delivery: delivery.decode(kind)


async def _outcome(function: Handler, delivery: Delivery) -> Exception | None:
    """The handler's failure as a value, so its task ends cleanly either way."""
    try:
        with tracing.processing(delivery):
            await function(delivery)
    except Exception as error:
        return error
    return None


def _said(error: Exception) -> str:
    """The error as one line of a log: its class and text."""
    return f"{type(error).__name__}: {_text(error)}"


def _text(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
