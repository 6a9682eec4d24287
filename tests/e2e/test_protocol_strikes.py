"""An address whose connections keep breaking the protocol is held back, on 127.0.0.1 in this
process; the host's clock is a ``ManualClock`` and every hold lasts until the test fires it.

- past ``LIMIT`` protocol errors within the window, a new connection from that address waits,
  unread, before its handshake; then it is served as any other; a client connected before is
  not disturbed; once the strikes leave the window, connections are served at once again;
- at most ``max_held_per_address`` wait at once: the next one is refused, retriably;
- a held connection that goes away, or is held when the listener closes, ends quietly.
"""

from __future__ import annotations

from pathlib import Path

import roost
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind
from roost.server import protocol_strikes
from tests.e2e.auth_support import RawClient, Served, serving
from tests.e2e.test_listener_bounds import failure_then_closed, refused_before_hello, run

HOLD_S = protocol_strikes.HOLD_MS / 1000
HELLO = Frame(Kind.HELLO, 0, m.Hello([4, 3, 2, 1]))


async def break_the_protocol(served: Served, times: int) -> None:
    for _ in range(times):
        raw = await RawClient.open(served.port)
        assert (await raw.hello()).kind is Kind.WELCOME  # type: ignore[union-attr]
        raw.send_bytes(b"GET / HTTP/1.1\r\nHost: roost\r\n\r\n")  # then garbage
        failure = await failure_then_closed(raw)
        assert failure.code == "protocol_error"


async def held(served: Served, count: int) -> list[RawClient]:
    """``count`` new raw clients that said hello and wait, unanswered, to be served."""
    clients = [await RawClient.open(served.port) for _ in range(count)]
    for raw in clients:
        raw.send(HELLO)
    await served.sleeps.until(HOLD_S, count)
    return clients


def test_an_address_that_keeps_breaking_the_protocol_waits_to_be_served(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with serving(tmp_path) as served:
            stats = served.host.listeners["native"]
            async with roost.connect(served.url(), reconnect=False) as good:
                await good.create_topic("t")
                await break_the_protocol(served, protocol_strikes.LIMIT - 1)
                raw = await RawClient.open(served.port)
                assert (await raw.hello()).kind is Kind.WELCOME  # type: ignore[union-attr]
                await raw.aclose()
                assert stats.held == 0  # under the limit: served at once

                await break_the_protocol(served, 1)
                (waiting,) = await held(served, 1)
                assert stats.held == 1
                assert not any(c.peer == waiting.stream.get_extra_info("sockname")
                               for c in served.listener.connections)  # fmt: skip
                # A client connected before is served while the newcomer waits.
                await good.publish("t", b"while another waits")
                served.sleeps.fire(HOLD_S)
                welcome = await waiting.receive()
                assert welcome is not None and welcome.kind is Kind.WELCOME
                await waiting.aclose()

                # The strikes leave the window: served at once again.
                served.clock.advance(protocol_strikes.WINDOW_MS)
                raw = await RawClient.open(served.port)
                assert (await raw.hello()).kind is Kind.WELCOME  # type: ignore[union-attr]
                await raw.aclose()
                assert stats.held == 1
                assert stats.protocol_errors == protocol_strikes.LIMIT

    run(body)


def test_past_the_held_connections_of_an_address_the_next_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path) as served:
            assert served.listener.tarpit is not None
            served.listener.tarpit.max_held_per_address = 2
            await break_the_protocol(served, protocol_strikes.LIMIT)
            waiting = await held(served, 2)
            refused = await RawClient.open(served.port)
            said = await refused_before_hello(refused)
            assert "broke the protocol lately" in said
            assert "2 of its connections are waiting already" in said
            assert served.host.listeners["native"].refused == 1
            served.sleeps.fire(HOLD_S)
            for raw in waiting:
                welcome = await raw.receive()
                assert welcome is not None and welcome.kind is Kind.WELCOME
                await raw.aclose()

    run(body)


def test_a_held_connection_that_went_away_or_outlives_the_listener_ends_quietly(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with serving(tmp_path) as served:
            tarpit = served.listener.tarpit
            assert tarpit is not None
            await break_the_protocol(served, protocol_strikes.LIMIT)
            leaving, staying = await held(served, 2)
            assert tarpit.holding == 2
            await leaving.aclose()  # unread, its close is seen once the hold ends
            served.sleeps.fire(HOLD_S)
            welcome = await staying.receive()
            assert welcome is not None and welcome.kind is Kind.WELCOME
            assert tarpit.holding == 0
            (last,) = await held(served, 1)
        # The listener closed with ``last`` still held: it was closed, not left waiting.
        assert await last.closed()
        await staying.aclose()
        assert served.host.listeners["native"].protocol_errors == protocol_strikes.LIMIT

    run(body)
