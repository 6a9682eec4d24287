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


def run_over_the_network(tmp_path: Path, body: Callable[[Any], Awaitable[None]]) -> None:
    """Serve a broker at ``tmp_path/data`` on 127.0.0.1 (a ``ManualClock`` nobody moves), run
    ``body`` against a network client of it, close both."""

    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with roost.connect(f"roost://127.0.0.1:{port}", reconnect=False) as broker:
                await body(broker)
        finally:
            await close_native(server)
            await host.aclose()

    asyncio.run(main())
