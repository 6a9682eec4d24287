"""Running a test's body against an embedded broker (``roost.open``) on a driven clock, or
against the same broker served on 127.0.0.1 in this process, through the network client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import roost
from roost.clock import ManualClock
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native

Body = Callable[[roost.EmbeddedBroker], Awaitable[None]]


def run(data_dir: str, clock: ManualClock, body: Body) -> None:
    """Open the broker at ``data_dir`` on ``clock``, run ``body`` against it, close it."""

    async def main() -> None:
        async with roost.open(data_dir, clock=clock) as broker:
            await body(broker)

    asyncio.run(main())


async def over_the_network(tmp_path: Path, body: Callable[[Any], Awaitable[None]]) -> None:
    """Serve a broker at ``tmp_path/data`` on 127.0.0.1 (a ``ManualClock`` nobody moves), run
    ``body`` against a network client of it, close both; on the running loop."""
    host = await Host.start(str(tmp_path / "data"), ManualClock())
    server = await serve_native(host, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as broker:
            await body(broker)
    finally:
        await close_native(server)
        await host.aclose()


def run_over_the_network(tmp_path: Path, body: Callable[[Any], Awaitable[None]]) -> None:
    """``over_the_network`` under ``asyncio.run``."""
    asyncio.run(over_the_network(tmp_path, body))


#: Where a test body runs: ``run_either(where, ...)``, parametrized over both.
WAYS = ("embedded", "network")


def run_either(where: str, tmp_path: Path, clock: ManualClock, body: Body) -> None:
    """``body`` against an embedded broker on ``clock`` or, over the network, against one
    served on 127.0.0.1 on a ``ManualClock`` of its own (nobody moves it)."""
    if where == "embedded":
        run(str(tmp_path / "data"), clock, body)
    else:
        run_over_the_network(tmp_path, body)  # type: ignore[arg-type]


class OlderBroker:
    """A client backend whose broker chose protocol ``version``: a request reaching it fails
    the test (what an older broker could not decode must be refused before sending)."""

    def __init__(self, version: int) -> None:
        self.protocol_version = version

    async def call(self, request: object) -> object:
        raise AssertionError(
            f"{type(request).__name__} was sent to a version-{self.protocol_version} broker"
        )
