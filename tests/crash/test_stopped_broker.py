"""A real ``roost serve`` is SIGSTOPped under a client with a short heartbeat: the process
keeps its socket (the kernel still takes bytes and connections), it just never answers,
as a hung broker or a host gone without a FIN.

The client's heartbeat is 0.5 s, so it counts the broker gone after 2 s of silence; the
bounds here are 30 s, generous for a loaded machine: what is checked is what happens, never
how fast. The publish waiting when the broker stopped raises ``ConnectionLost`` (it may or may
not have been done); a list waiting then is retried on a new connection, which opens once
the process is SIGCONTed. The process is always continued and stopped at the end.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

import roost
from roost.client.reconnect import ReconnectingBackend
from roost.errors import ConnectionLost
from tests.e2e.test_serve import Server

BOUND_S = 30.0


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_a_stopped_broker_fails_the_publish_and_the_client_reconnects_once_continued(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "data")

    async def body() -> None:
        async with roost.connect(server.url, heartbeat=0.5) as client:
            await client.create_queue("jobs")
            await client.publish("jobs", b"before")
            server.process.send_signal(signal.SIGSTOP)
            try:
                publishing = asyncio.create_task(client.publish("jobs", b"while stopped"))
                listing = asyncio.create_task(client.list_topics())
                async with asyncio.timeout(BOUND_S):
                    with pytest.raises(ConnectionLost, match=r"during Publish .*sent nothing"):
                        await publishing
                assert not listing.done()  # retried, on a connection that waits for a WELCOME
            finally:
                server.process.send_signal(signal.SIGCONT)
            async with asyncio.timeout(BOUND_S):
                assert "jobs" in await listing
            backend = client._backend
            assert isinstance(backend, ReconnectingBackend) and backend.reconnects >= 1
            # Served again: what was confirmed before the stop is there (the publish that
            # failed may be too: the kernel took its bytes, the broker read them on SIGCONT).
            values: list[bytes] = []
            for _ in range(10):
                values += [m.value for m in await client.receive("jobs", max_messages=10)]
            assert b"before" in values
            assert set(values) <= {b"before", b"while stopped"}

    try:
        asyncio.run(body())
    finally:
        server.process.send_signal(signal.SIGCONT)
        if server.process.poll() is None:
            assert server.stop() == 0
