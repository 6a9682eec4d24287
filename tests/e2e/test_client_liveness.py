"""The client notices a broker gone silent (client/liveness.py), on 127.0.0.1 in this process,
with time the test drives (``DrivenTime``): nothing here waits for a timeout to pass.

- a broker that answers the handshake and then nothing: a request waiting on it raises
  ``ConnectionLost`` when the clock reaches twice the heartbeat and the margin, not a
  millisecond before; the socket is dropped;
- a broker that answers PINGs keeps the connection however long nothing else happens, and
  so does a broker that said ``BLOCKED``; ``heartbeat=0`` never judges; a broker owed more
  than half of the requests it reads at once is given 60 s more (it may not be reading);
- a broker that takes the connection and never answers the ``HELLO``: opening the connection
  raises ``TimeoutError`` at the limit;
- a real listener behind a proxy that stops passing bytes (as a stopped process would): the
  non-idempotent publish waiting raises ``ConnectionLost``, the safe request waiting is
  retried on a new connection once bytes pass again, and a subscriber gets its deliveries on
  the new connection; without reconnecting, the subscriber's iteration ends with the loss;
- a broker asking for 2^31 SCRAM iterations is refused, naming the count and the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import roost
from roost.client.api import Opening
from roost.client.liveness import BROKER_MAX_IN_FLIGHT, HELD_MS, MARGIN_MS
from roost.client.network import NetworkBackend
from roost.client.reconnect import ReconnectingBackend
from roost.errors import ConnectionClosed, ConnectionLost, NotAuthenticated
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind
from tests.e2e.auth_support import serving
from tests.e2e.liveness_support import DrivenTime, Freezer, MuteBroker, until

HEARTBEAT_MS = 1_000
LIMIT_MS = 2 * HEARTBEAT_MS + MARGIN_MS


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def connect(url: str, time: DrivenTime, **options: Any) -> Opening:
    return roost.connect(url, clock=time.clock, sleep=time.sleep, **options)


def pings(broker: MuteBroker) -> int:
    return sum(frame.kind is Kind.PING for frame in broker.received)


def network(client: roost.Client) -> NetworkBackend:
    backend = client._backend
    current = backend._current if isinstance(backend, ReconnectingBackend) else backend
    assert isinstance(current, NetworkBackend)
    return current


def test_a_request_to_a_silent_broker_raises_connection_lost_at_the_limit() -> None:
    async def body() -> None:
        time = DrivenTime()
        async with (
            MuteBroker(HEARTBEAT_MS).serving() as broker,
            connect(broker.url(), time, reconnect=False) as client,
        ):
            asking = asyncio.create_task(client.create_queue("jobs"))
            await until(lambda: any(f.kind is Kind.REQUEST for f in broker.received))
            await time.advance(LIMIT_MS - 1)
            assert not asking.done()
            assert network(client).alive
            # PINGed at 1 s and 2 s: the broker was asked twice.
            await until(lambda: pings(broker) == 2)
            await time.advance(1)
            assert asking.done()
            with pytest.raises(ConnectionLost) as lost:
                await asking
            assert str(lost.value) == (
                "connection lost during CreateQueue (the broker sent nothing for "
                "3000 ms though PINGed every 1000 ms; the limit is twice that + 1000 ms): "
                "it may or may not have been done"
            )
            assert not network(client).alive
            with pytest.raises(ConnectionClosed):  # nothing more goes over it
                await client.list_topics()

    run(body)


def test_a_broker_that_answers_pings_keeps_the_connection() -> None:
    async def body() -> None:
        time = DrivenTime()
        async with (
            MuteBroker(HEARTBEAT_MS, pongs=True).serving() as broker,
            connect(broker.url(), time, reconnect=False) as client,
        ):
            stream = network(client)._stream
            for step in range(1, 51):  # 50 intervals: 16 times the limit
                await time.advance(HEARTBEAT_MS)
                # The PING just sent is answered over a real socket: wait for the PONG.
                await until(lambda: stream.last_received_ms == time.clock.monotonic_ms())
                assert network(client).alive, f"lost after {step} intervals"
            assert pings(broker) == 50

    run(body)


def test_a_real_listener_keeps_a_client_that_asks_for_a_shorter_heartbeat(
    tmp_path: Path,
) -> None:
    """The listener's heartbeat is 10 s; the client's 0.5 s: it PINGs that often, and its
    limit is 2 s."""

    async def body() -> None:
        time = DrivenTime()
        async with (
            serving(tmp_path) as served,
            connect(served.url(), time, heartbeat=0.5, reconnect=False) as client,
        ):
            backend = network(client)
            assert backend.pulse is not None and backend.pulse.limit_ms == 2 * 500 + MARGIN_MS
            for _ in range(20):
                await time.advance(500)
                await until(lambda: backend._stream.last_received_ms == time.clock.monotonic_ms())
            assert backend.alive
            assert await client.list_topics() == []

    run(body)


def test_a_blocked_broker_is_not_judged_for_its_silence() -> None:
    async def body() -> None:
        time = DrivenTime()
        async with (
            MuteBroker(HEARTBEAT_MS).serving() as broker,
            connect(broker.url(), time, reconnect=False) as client,
        ):
            backend = network(client)
            backend._on_frame(Frame(Kind.BLOCKED, 0, m.Blocked("memory alarm")))
            await time.advance(20 * LIMIT_MS)
            assert backend.alive
            backend._on_frame(Frame(Kind.UNBLOCKED, 0, m.Empty()))
            await time.advance(LIMIT_MS - 1)  # judged again, from the UNBLOCKED
            assert backend.alive
            await time.advance(1)
            assert not backend.alive

    run(body)


def test_a_broker_owed_many_answers_is_given_as_long_as_one_may_take() -> None:
    """Past half of ``BROKER_MAX_IN_FLIGHT`` requests waiting, the broker may not be reading
    the PINGs: a publish it holds for room may be answered after up to 60 s."""

    async def body() -> None:
        time = DrivenTime()
        async with (
            MuteBroker(HEARTBEAT_MS).serving() as broker,
            connect(broker.url(), time, reconnect=False) as client,
        ):
            owed = BROKER_MAX_IN_FLIGHT // 2 + 1
            asking = [asyncio.create_task(client.list_topics()) for _ in range(owed)]
            await until(lambda: sum(f.kind is Kind.REQUEST for f in broker.received) == owed)
            assert network(client).broker_may_hold
            await time.advance(LIMIT_MS + HELD_MS - 1)
            assert network(client).alive and not any(task.done() for task in asking)
            await time.advance(1)
            assert not network(client).alive
            failures = await asyncio.gather(*asking, return_exceptions=True)
            assert all(isinstance(failure, ConnectionLost) for failure in failures)

    run(body)


def test_heartbeat_zero_never_judges_the_broker() -> None:
    async def body() -> None:
        time = DrivenTime()
        async with (
            MuteBroker(HEARTBEAT_MS).serving() as broker,
            connect(broker.url(), time, heartbeat=0, reconnect=False) as client,
        ):
            await time.advance(100 * LIMIT_MS)
            assert network(client).alive
            await until(lambda: pings(broker) == 300)  # the broker's heartbeat is kept

    run(body)


class Unanswered(MuteBroker):
    """Takes the connection, reads the HELLO, says nothing."""

    def _answers(self, frame: Frame) -> list[Frame]:
        return []


def test_a_broker_that_never_answers_the_hello_times_the_connect_out() -> None:
    async def body() -> None:
        time = DrivenTime()
        async with Unanswered(HEARTBEAT_MS).serving() as broker:
            opening = asyncio.ensure_future(
                connect(broker.url(), time, heartbeat=1, reconnect=False)._open()
            )
            await until(lambda: broker.received and time.sleepers == 1)
            await time.advance(LIMIT_MS - 1)
            assert not opening.done()
            await time.advance(1)
            assert opening.done()
            with pytest.raises(TimeoutError, match=f"127.0.0.1:{broker.port}: no answer within"):
                await opening

    run(body)


def test_a_frozen_broker_fails_the_publish_then_the_client_reconnects(tmp_path: Path) -> None:
    """Default heartbeat: the listener's 10 s, so the limit is 21 s (driven)."""

    async def body() -> None:
        time = DrivenTime()
        async with (
            serving(tmp_path) as served,
            Freezer(served.port).serving() as freezer,
            connect(freezer.url(), time) as client,
        ):
            await client.create_queue("jobs")
            async with client.subscribe("jobs", prefetch=10) as deliveries:
                freezer.freeze()
                publishing = asyncio.create_task(client.publish("jobs", b"lost?"))
                listing = asyncio.create_task(client.list_topics())
                receiving = asyncio.create_task(anext(aiter(deliveries)))
                await time.advance(21_000 - 1)
                assert not publishing.done() and not listing.done()
                await time.advance(1)
                assert publishing.done()
                with pytest.raises(ConnectionLost, match=r"during Publish .*21000 ms"):
                    await publishing
                # The list is retried, and the subscription made again, on a connection
                # that waits for the broker to answer its HELLO.
                await until(lambda: freezer.connections >= 2)
                assert not listing.done()
                freezer.thaw()
                assert "jobs" in await listing
                await client.publish("jobs", b"after")
                # The frozen publish may or may not have been stored (it was: the
                # proxy passed it on when thawed); the subscriber gets what is there.
                delivery = await asyncio.wait_for(receiving, 5)
                assert delivery.value in (b"lost?", b"after")
                await delivery.ack()
                backend = client._backend
                assert isinstance(backend, ReconnectingBackend) and backend.reconnects == 1

    run(body)


def test_without_reconnect_a_subscriber_sees_the_loss(tmp_path: Path) -> None:
    async def body() -> None:
        time = DrivenTime()
        async with (
            serving(tmp_path) as served,
            Freezer(served.port).serving() as freezer,
            connect(freezer.url(), time, reconnect=False) as client,
        ):
            await client.create_queue("jobs")
            async with client.subscribe("jobs") as deliveries:
                freezer.freeze()
                receiving = asyncio.create_task(anext(aiter(deliveries)))
                await time.advance(21_000 - 1)
                assert not receiving.done()
                await time.advance(1)
                assert receiving.done()
                with pytest.raises(ConnectionClosed) as closed:
                    await receiving
                lost = closed.value.__cause__
                assert isinstance(lost, ConnectionLost)
                assert "the broker sent nothing for 21000 ms" in str(lost)
            freezer.thaw()

    run(body)


def test_a_broker_asking_for_2_to_the_31_scram_iterations_is_refused() -> None:
    async def body() -> None:
        async with MuteBroker(HEARTBEAT_MS, iterations=2**31).serving() as broker:
            with pytest.raises(NotAuthenticated, match="asks for 2147483648 SCRAM iterations, "
                               "more than this client's limit of 1000000"):  # fmt: skip
                await roost.connect(
                    broker.url(), username="ada", password="s3cret", reconnect=False
                )

    run(body)
