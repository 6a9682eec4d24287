"""Running a test's body against an embedded broker (``roost.open``) on a driven clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import roost
from roost.clock import ManualClock

Body = Callable[[roost.EmbeddedBroker], Awaitable[None]]


def run(data_dir: str, clock: ManualClock, body: Body) -> None:
    """Open the broker at ``data_dir`` on ``clock``, run ``body`` against it, close it."""

    async def main() -> None:
        async with roost.open(data_dir, clock=clock) as broker:
            await body(broker)

    asyncio.run(main())
