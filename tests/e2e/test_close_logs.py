"""Why connections were closed, logged at the rate an operator can read and the broker can
afford: a flood of broken peers gets its first lines in full and one summary counting the
rest, while the listener's counters count every one. On 127.0.0.1 in this process, on a
``ManualClock`` the test moves, with the watchdog ticked by the test."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, Kind
from roost.server.log_limit import LINES_PER_INTERVAL
from roost.server.native_server import OVERDUE_CLOSES, PROTOCOL_ERROR_CLOSES
from roost.server.watchdog import Timeouts
from tests.e2e.auth_support import RawClient, serving

FLOOD = LINES_PER_INTERVAL + 15
TIMEOUTS = Timeouts(frame_timeout_ms=30_000, heartbeat_ms=10_000)


async def never(seconds: float) -> None:
    """The watchdog's sleep: it ticks only when the test calls ``tick``."""
    await asyncio.Event().wait()


def closes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "roost.native"]


async def failed_and_closed(raw: RawClient) -> m.Failure:
    frame = await raw.receive()
    assert frame is not None and frame.kind is Kind.FAILURE
    assert await raw.closed()
    assert isinstance(frame.message, m.Failure)
    return frame.message


def test_a_flood_of_broken_frames_logs_ten_closes_then_one_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        options = {"timeouts": TIMEOUTS, "watchdog_sleep": never}
        async with serving(tmp_path, **options) as served:
            served.host.protocol_strikes.limit = FLOOD  # not held back: only logs are tested
            for _ in range(FLOOD):
                reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.write(b"\xff" * 64)  # no HELLO: a protocol error at once
                async with asyncio.timeout(5):
                    answer = await reader.read()  # to the broker's close
                assert b"protocol_error" in answer
                writer.close()
                await writer.wait_closed()
            assert served.host.listeners["native"].protocol_errors == FLOOD
            lines = closes(caplog)
            assert len(lines) == LINES_PER_INTERVAL
            assert all(line.startswith("closing ('127.0.0.1', ") for line in lines)
            served.clock.advance(9_999)
            served.listener.watchdog.tick()  # type: ignore[union-attr]
            assert len(closes(caplog)) == LINES_PER_INTERVAL, "the interval has not ended"
            served.clock.advance(1)
            served.listener.watchdog.tick()  # type: ignore[union-attr]
            assert closes(caplog)[LINES_PER_INTERVAL:] == [
                f"... and 15 more like it in the last 10.0 s: {PROTOCOL_ERROR_CLOSES}"
            ]

    with caplog.at_level(logging.WARNING, "roost.native"):
        asyncio.run(body())


def test_stalled_frames_timed_out_together_are_counted_once_and_summed_up_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        options = {"timeouts": TIMEOUTS, "watchdog_sleep": never}
        async with serving(tmp_path, **options) as served:
            stalled = []
            for _ in range(FLOOD):
                raw = await RawClient.open(served.port)
                welcome = await raw.hello([5, 4])
                assert welcome is not None and welcome.kind is Kind.WELCOME
                raw.send_bytes(HEADER.pack(1024 * 1024, Kind.REQUEST, 1) + bytes(100))
                stalled.append(raw)
            async with asyncio.timeout(5):  # every frame has started to arrive
                while (
                    not all(
                        c._stream.frame_started_ms is not None for c in served.listener.connections
                    )
                    or len(served.listener.connections) < FLOOD
                ):
                    await asyncio.sleep(0.001)
            served.clock.advance(30_000)
            served.listener.watchdog.tick()  # type: ignore[union-attr]
            for raw in stalled:
                assert "is not whole" in (await failed_and_closed(raw)).message
            stats = served.host.listeners["native"]
            assert (stats.timed_out, stats.protocol_errors) == (FLOOD, 0), (
                "a frame cut short by the broker's own close is no protocol error of the peer's"
            )
            assert len(closes(caplog)) == LINES_PER_INTERVAL
        # Closing the listener sums up what the watchdog had not.
        assert closes(caplog)[LINES_PER_INTERVAL:] == [
            f"... and 15 more like it in the last 0.0 s: {OVERDUE_CLOSES}"
        ]

    with caplog.at_level(logging.WARNING, "roost.native"):
        asyncio.run(body())
