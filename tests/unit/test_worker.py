"""``Worker``: handlers over queues on the embedded broker, with a driven clock and sleep.

Leases follow the broker's ``ManualClock``; the worker's lease keeper and grace period sleep
through ``Timers``, which the test wakes as it moves the clock. Background progress (a
handler starting, a dead letter landing) is awaited with ``eventually``: bounded polling.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import msgspec
import pytest

import roost
from roost import Delivery, Outgoing
from roost.client.worker import STOPPED_ERROR, Reject, Worker
from roost.clock import ManualClock
from roost.core.retry import RetryPolicy
from roost.core.stats import SubscriptionStats
from roost.errors import InvalidConfig, UnknownSubscription
from tests.embedded_support import run

NO_DELAY = RetryPolicy(kind="fixed", base_ms=0, max_ms=0, jitter=0.0)


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.002)


async def stats(broker: roost.EmbeddedBroker, queue: str) -> SubscriptionStats:
    result = await broker.stats(queue)
    assert isinstance(result, SubscriptionStats)
    return result


class Timers:
    """The worker's ``sleep``: sleepers wake when the test moves the clock past their time."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.sleeping: list[tuple[int, asyncio.Future[None]]] = []
        self.calls = 0

    async def sleep(self, seconds: float) -> None:
        self.calls += 1
        entry = (self.clock.monotonic_ms() + round(seconds * 1000), asyncio.Future[None]())
        self.sleeping.append(entry)
        try:
            await entry[1]
        finally:
            self.sleeping.remove(entry)

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        for wake_at, future in self.sleeping:
            if wake_at <= self.clock.monotonic_ms() and not future.done():
                future.set_result(None)


def test_success_acks(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("emails")
        await broker.publish_batch("emails", [Outgoing(value=b"%d" % i) for i in range(5)])
        worker = Worker(broker)
        seen: list[bytes] = []

        @worker.handler("emails", concurrency=2)
        async def handle(message: Delivery) -> None:
            seen.append(message.value)

        running = asyncio.create_task(worker.run())
        await eventually(lambda: len(seen) == 5)
        await eventually(lambda: _drained(broker, "emails"))
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert sorted(seen) == [b"%d" % i for i in range(5)]
        assert await broker.receive("emails") == []

    run(data_dir, clock, body)


async def _drained(broker: roost.EmbeddedBroker, queue: str) -> bool:
    current = await stats(broker, queue)
    return (current.backlog, current.in_flight) == (0, 0)


def test_failure_nacks_with_the_error_and_dead_letters(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=2)
        await broker.publish("q", b"poison")
        worker = Worker(broker)
        deliveries: list[int] = []

        @worker.handler("q", retry=NO_DELAY)
        async def handle(message: Delivery) -> None:
            deliveries.append(message.delivery_count)
            raise ValueError("smtp down: 421")

        running = asyncio.create_task(worker.run())
        await eventually(lambda: _dead(broker, "q"))
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert deliveries == [1, 2]
        await broker.create_subscription("q.dlq", "inspect", start="earliest")
        [dead] = await broker.receive("q.dlq", "inspect")
        headers = dict(dead.headers)
        assert headers["x-roost-last-error"] == b"smtp down: 421"
        assert headers["x-roost-delivery-count"] == b"2"

    run(data_dir, clock, body)


async def _dead(broker: roost.EmbeddedBroker, queue: str) -> bool:
    current = await stats(broker, queue)
    return (current.backlog, current.dead_letters) == (0, 1)


def test_retry_delay_from_the_policy_else_the_queues(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        for queue in ("policy", "default"):
            await broker.create_queue(queue)
            await broker.publish(queue, b"job")
        worker = Worker(broker)
        failures: list[str] = []

        async def fail(message: Delivery) -> None:
            failures.append(message.topic)
            raise RuntimeError("later")

        worker.handler("policy", retry=RetryPolicy(kind="fixed", base_ms=5000, jitter=0.0))(fail)
        worker.handler("default")(fail)
        running = asyncio.create_task(worker.run())
        for queue in ("policy", "default"):
            await eventually(lambda q=queue: _delayed(broker, q))  # type: ignore[misc]
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert sorted(failures) == ["default", "policy"]
        clock.advance(1000)  # the queue's policy: exponential from 1 s, with jitter
        [again] = await broker.receive("default")
        assert again.delivery_count == 2
        assert await broker.receive("policy") == []
        clock.advance(4000)
        [again] = await broker.receive("policy")
        assert again.delivery_count == 2

    run(data_dir, clock, body)


async def _delayed(broker: roost.EmbeddedBroker, queue: str) -> bool:
    current = await stats(broker, queue)
    return (current.delayed, current.in_flight) == (1, 0)


def test_concurrency_limit_is_respected(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish_batch("q", [Outgoing(value=b"%d" % i) for i in range(10)])
        worker = Worker(broker)
        gate = asyncio.Event()
        running_now, most, done = [0], [0], [0]

        @worker.handler("q", concurrency=3)
        async def handle(message: Delivery) -> None:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
            await gate.wait()
            running_now[0] -= 1
            done[0] += 1

        running = asyncio.create_task(worker.run())
        await eventually(lambda: running_now[0] == 3)
        await asyncio.sleep(0.02)  # room for a fourth to start, were it allowed
        assert running_now[0] == 3
        assert (await stats(broker, "q")).in_flight == 3, "only three leased"
        gate.set()
        await eventually(lambda: done[0] == 10)
        await eventually(lambda: _drained(broker, "q"))
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert most[0] == 3

    run(data_dir, clock, body)


def test_stop_lets_running_handlers_finish_and_takes_nothing_new(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish("q", b"first")
        worker = Worker(broker)
        started, gate = asyncio.Event(), asyncio.Event()
        finished: list[bytes] = []

        @worker.handler("q", concurrency=4)
        async def handle(message: Delivery) -> None:
            started.set()
            await gate.wait()
            finished.append(message.value)

        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 5)
        worker.stop()
        await broker.publish("q", b"second")
        await asyncio.sleep(0.02)
        assert not running.done(), "waits for the running handler"
        gate.set()
        await asyncio.wait_for(running, 5)
        assert finished == [b"first"]
        current = await stats(broker, "q")
        assert (current.backlog, current.in_flight, current.depth) == (1, 0, 1)
        [second] = await broker.receive("q")
        assert (second.value, second.delivery_count) == (b"second", 1), "never taken"

    run(data_dir, clock, body)


def test_stop_cancels_and_nacks_handlers_after_the_grace_period(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=1)
        await broker.publish("q", b"stuck")
        timers = Timers(clock)
        worker = Worker(broker, shutdown_timeout=5, sleep=timers.sleep)
        started, cancelled = asyncio.Event(), asyncio.Event()

        @worker.handler("q")
        async def handle(message: Delivery) -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 5)
        worker.stop()
        await eventually(lambda: len(timers.sleeping) == 2)  # the lease keeper, the grace
        timers.advance(4999)
        await asyncio.sleep(0.01)
        assert not running.done()
        timers.advance(1)
        await asyncio.wait_for(running, 5)
        assert cancelled.is_set()
        await eventually(lambda: _dead(broker, "q"))
        await broker.create_subscription("q.dlq", "inspect", start="earliest")
        [dead] = await broker.receive("q.dlq", "inspect")
        assert dict(dead.headers)["x-roost-last-error"] == STOPPED_ERROR.encode()

    run(data_dir, clock, body)


def test_a_second_stop_cancels_at_once(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        await broker.publish("q", b"stuck")
        worker = Worker(broker, shutdown_timeout=3600)
        started = asyncio.Event()

        @worker.handler("q")
        async def handle(message: Delivery) -> None:
            started.set()
            await asyncio.Event().wait()

        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 5)
        worker.stop()
        worker.stop()
        await asyncio.wait_for(running, 5)
        [again] = await broker.receive("q")  # nacked with no delay
        assert again.delivery_count == 2

    run(data_dir, clock, body)


def test_lease_keeper_extends_a_slow_handler(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", visibility_timeout=3)
        await broker.publish("q", b"slow")
        timers = Timers(clock)
        worker = Worker(broker, sleep=timers.sleep)
        gate = asyncio.Event()
        calls: list[int] = []

        @worker.handler("q")
        async def handle(message: Delivery) -> None:
            calls.append(message.delivery_count)
            await gate.wait()

        running = asyncio.create_task(worker.run())
        await eventually(lambda: timers.calls == 1)  # the keeper: every 1 s, 3 s leases
        for step in range(1, 11):  # 10 s: more than three leases
            timers.advance(1000)
            await eventually(lambda step=step: timers.calls == step + 1)  # type: ignore[misc]
            assert await broker.receive("q") == [], f"still leased after {step} s"
        gate.set()
        await eventually(lambda: _drained(broker, "q"))
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert calls == [1]

    run(data_dir, clock, body)


def test_a_lease_runs_out_without_the_keeper(data_dir: str, clock: ManualClock) -> None:
    """The control for the test above: the same wait, no extensions, a redelivery."""

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", visibility_timeout=3)
        await broker.publish("q", b"slow")
        [_first] = await broker.receive("q")
        clock.advance(3000)
        [again] = await broker.receive("q")
        assert again.delivery_count == 2
        await again.ack()

    run(data_dir, clock, body)


def test_sigterm_stops_the_worker(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q")
        worker = Worker(broker, install_signal_handlers=True)

        @worker.handler("q")
        async def handle(message: Delivery) -> None:
            signal.raise_signal(signal.SIGTERM)

        before = signal.getsignal(signal.SIGTERM)
        running = asyncio.create_task(worker.run())
        await broker.publish("q", b"go")
        await asyncio.wait_for(running, 5)
        assert await _drained(broker, "q")
        assert signal.getsignal(signal.SIGTERM) == before

    run(data_dir, clock, body)


def test_misconfigurations_are_refused(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        worker = Worker(broker)
        with pytest.raises(InvalidConfig):
            await worker.run()
        with pytest.raises(InvalidConfig):
            worker.handler("q", concurrency=0)
        with pytest.raises(InvalidConfig):
            worker.handler("q", visibility_timeout=0)

        @worker.handler("missing")
        async def handle(message: Delivery) -> None:
            pass

        with pytest.raises(InvalidConfig):
            worker.handler("missing")
        with pytest.raises(UnknownSubscription):
            await worker.run()

    run(data_dir, clock, body)


def test_each_failed_attempt_is_one_line_and_the_hooks_say_what_happened(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A WARNING line per retried attempt (no traceback), an ERROR with the traceback for the
    last; ``on_retry`` after each retry, ``on_dead_letter`` once, with the error."""
    retried: list[tuple[int, str, float | None]] = []
    died: list[tuple[int, str]] = []

    async def on_retry(delivery: Delivery, error: Exception, delay: float | None) -> None:
        retried.append((delivery.delivery_count, str(error), delay))

    def on_dead_letter(delivery: Delivery, error: Exception) -> None:
        died.append((delivery.delivery_count, str(error)))

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=3)
        await broker.publish("q", b"poison")
        worker = Worker(broker, on_retry=on_retry, on_dead_letter=on_dead_letter)

        @worker.handler("q", retry=NO_DELAY)
        async def handle(message: Delivery) -> None:
            raise TimeoutError(f"smtp timed out ({message.delivery_count})")

        running = asyncio.create_task(worker.run())
        await eventually(lambda: _dead(broker, "q"))
        await eventually(lambda: len(died) == 1)
        worker.stop()
        await asyncio.wait_for(running, 5)

    caplog.set_level("WARNING", logger="roost.worker")
    run(data_dir, clock, body)
    assert retried == [(1, "smtp timed out (1)", 0.0), (2, "smtp timed out (2)", 0.0)]
    assert died == [(3, "smtp timed out (3)")]
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert [(level, tb) for level, _, tb in lines] == [
        ("WARNING", False), ("WARNING", False), ("ERROR", True)]  # fmt: skip
    assert "attempt 1 of 3: TimeoutError: smtp timed out (1); again in 0 s" in lines[0][1]
    assert (
        "attempt 3 of 3: TimeoutError: smtp timed out (3); to the dead-letter topic"
        in (lines[2][1])
    )


def test_a_handler_that_raises_reject_dead_letters_at_once(
    data_dir: str, clock: ManualClock
) -> None:
    died: list[str] = []

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=5)
        await broker.publish("q", b"not json")
        worker = Worker(broker, on_dead_letter=lambda d, e: died.append(str(e)))
        calls: list[int] = []

        @worker.handler("q")
        async def handle(message: Delivery) -> None:
            calls.append(message.delivery_count)
            raise Reject("not JSON: cannot parse")

        running = asyncio.create_task(worker.run())
        await eventually(lambda: _dead(broker, "q"))
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert calls == [1], "one attempt, not five"
        await broker.create_subscription("q.dlq", "inspect", start="earliest")
        [dead] = await broker.receive("q.dlq", "inspect")
        headers = dict(dead.headers)
        assert headers["x-roost-death-reason"] == b"rejected"
        assert headers["x-roost-last-error"] == b"not JSON: cannot parse"

    run(data_dir, clock, body)
    assert died == ["not JSON: cannot parse"]


def test_a_hook_that_fails_is_logged_and_the_worker_goes_on(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(delivery: Delivery, error: Exception, delay: float | None) -> None:
        raise RuntimeError("the metrics backend is down")

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("q", max_deliveries=2)
        await broker.publish("q", b"x")
        worker = Worker(broker, on_retry=broken)
        seen: list[int] = []

        @worker.handler("q", retry=NO_DELAY)
        async def handle(message: Delivery) -> None:
            seen.append(message.delivery_count)
            if message.delivery_count == 1:
                raise TimeoutError("once")

        running = asyncio.create_task(worker.run())
        await eventually(lambda: seen == [1, 2])
        await eventually(lambda: _done(broker, "q"))
        worker.stop()
        await asyncio.wait_for(running, 5)

    run(data_dir, clock, body)
    assert any("worker hook" in r.getMessage() for r in caplog.records)


async def _done(broker: roost.EmbeddedBroker, queue: str) -> bool:
    return (await stats(broker, queue)).backlog == 0


class Order(msgspec.Struct):
    id: int
    items: list[str]


def test_a_typed_handler_gets_the_value_decoded(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        for queue in ("orders", "notes", "raw"):
            await broker.create_queue(queue)
        await broker.publish("orders", Order(7, ["tea"]), serializer="json")
        await broker.publish("notes", "héllo")
        await broker.publish("raw", b"\x00\x01")
        worker = Worker(broker)
        seen: list[object] = []

        @worker.handler("orders")
        async def bill(order: Order, delivery: Delivery) -> None:
            seen.append((order, delivery.topic))

        @worker.handler("notes")
        async def note(text: str) -> None:
            seen.append(text)

        @worker.handler("raw")
        async def raw(value: bytes) -> None:
            seen.append(value)

        running = asyncio.create_task(worker.run())
        await eventually(lambda: len(seen) == 3)
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert sorted(map(repr, seen)) == sorted(
            map(repr, [(Order(7, ["tea"]), "orders"), "héllo", b"\x00\x01"])
        )
        for queue in ("orders", "notes", "raw"):
            assert (await stats(broker, queue)).backlog == 0, "acked"

    run(data_dir, clock, body)


def test_a_value_that_does_not_decode_is_rejected_at_once(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("orders", max_deliveries=5)
        await broker.publish("orders", b'{"id": "seven"}')
        worker = Worker(broker)
        calls: list[Order] = []

        @worker.handler("orders")
        async def bill(order: Order) -> None:
            calls.append(order)

        running = asyncio.create_task(worker.run())
        await eventually(lambda: _dead(broker, "orders"))
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert calls == [], "never called with what does not decode"
        await broker.create_subscription("orders.dlq", "inspect", start="earliest")
        [dead] = await broker.receive("orders.dlq", "inspect")
        assert dead.headers["x-roost-death-reason"] == b"rejected"
        error = dead.headers["x-roost-last-error"].decode()
        assert error.startswith("cannot decode the value as Order: the value is not a Order")

    run(data_dir, clock, body)


def test_a_handler_whose_types_cannot_be_read_is_refused_when_registered(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        worker = Worker(broker)

        async def unresolvable(order: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
            pass

        with pytest.raises(InvalidConfig, match="cannot be resolved"):
            worker.handler("q")(unresolvable)
        with pytest.raises(InvalidConfig, match="takes no parameter"):
            worker.handler("q")(_no_parameter)

    run(data_dir, clock, body)


async def _no_parameter() -> None:
    pass
