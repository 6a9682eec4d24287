"""The producer processes of ``roost bench chaos``: lanes that publish through every kill.

``python -m roost.bench.chaos_lanes URL SPEC`` (SPEC a JSON object: ``lanes``, a list of
``[lane, workload, seed]``, and the settings below) runs one asyncio task per lane, each on
its own connection. A lane publishes its messages in sequence (``chaos_ledger.payload``), one
request at a time, and counts one as confirmed only when the broker's answer came back. When
the connection fails (the broker was killed), the lane keeps the unconfirmed request, connects
again (every ``RECONNECT_S`` until the broker is back) and sends it again, unchanged, first:
a producer without idempotence, so a request whose first try was stored is stored twice.

Workloads (the topics ``chaos.py`` declares):
- ``jobs``: batches of 1..``max_batch`` to a standard queue;
- ``orders``: batches of 1..``max_batch`` to a keyed queue, over ``keys`` keys the lane owns;
- ``log``: batches to a topic read by a `stream` consumer group;
- ``route``: one message at a time through a topic exchange, routed by sequence number
  (``route_key``); the answer must name the topics the bindings promise (``ROUTES``).

It prints ``ready`` once every lane has connected once, runs until a line arrives on stdin
(the parent sends it once the broker is up for the last time), lets each lane finish its
request in flight, then prints one JSON line: each lane's history (``chaos_ledger.Lane``)
and what it saw (errors by class, reconnects, misrouted answers).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from roost.bench.chaos_ledger import add_range, payload

RECONNECT_S = 0.05
#: A request not answered in this long is treated as failed (a broker hung, not killed).
REQUEST_TIMEOUT_S = 60.0
#: After the stop, how long a lane may take to have its last request confirmed.
FINISH_TIMEOUT_S = 60.0

QUEUE, KEYED, STREAM, EXCHANGE = "chaos.jobs", "chaos.orders", "chaos.log", "chaos.route"
WORKLOADS = ("jobs", "orders", "log", "route")
#: routing key -> the topics the exchange's bindings route it to (chaos.py binds them so).
ROUTES = {
    "a.even": ("chaos.route.a", "chaos.route.all"),
    "b.odd.x": ("chaos.route.b", "chaos.route.all"),
}


def route_key(seq: int) -> str:
    return "a.even" if seq % 2 == 0 else "b.odd.x"


class LaneRun:
    """One lane: its sequence, its unconfirmed request, what it has seen."""

    def __init__(self, lane: int, workload: str, seed: int, settings: dict[str, Any]) -> None:
        self.lane = lane
        self.workload = workload
        self.rng = random.Random(seed)
        self.value_bytes: int = settings["value_bytes"]
        self.max_batch: int = settings["max_batch"]
        self.keys = [b"L%d.k%d" % (lane, i) for i in range(settings["keys"])]
        self.attempted = 0
        self.confirmed: list[tuple[int, int]] = []
        self.pending: tuple[int, list[Any]] | None = None
        self.errors: dict[str, int] = {}
        self.reconnects = 0
        self.misrouted = 0
        self.connected = asyncio.Event()

    def _next(self) -> tuple[int, list[Any]]:
        from roost.core.publishing import Outgoing

        first = self.attempted
        count = 1 if self.workload == "route" else self.rng.randint(1, self.max_batch)
        batch = []
        for seq in range(first, first + count):
            key = self.rng.choice(self.keys) if self.workload == "orders" else None
            batch.append(Outgoing(value=payload(self.lane, seq, key, self.value_bytes), key=key))
        self.attempted += count
        return first, batch

    async def _publish(self, client: Any) -> None:
        if self.pending is None:
            self.pending = self._next()
        first, batch = self.pending
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            if self.workload == "route":
                [only] = batch
                published = await client.publish_to_exchange(EXCHANGE, route_key(first), only.value)
                if sorted(p.topic for p in published) != sorted(ROUTES[route_key(first)]):
                    self.misrouted += 1
            else:
                topic = {"jobs": QUEUE, "orders": KEYED, "log": STREAM}[self.workload]
                await client.publish_batch(topic, batch)
        self.pending = None
        add_range(self.confirmed, first, first + len(batch))

    async def run(self, url: str, stop: asyncio.Event) -> None:
        import roost
        from roost.errors import RoostError

        while not (stop.is_set() and self.pending is None):
            try:
                async with roost.connect(url, reconnect=False) as client:
                    self.connected.set()
                    while not (stop.is_set() and self.pending is None):
                        await self._publish(client)
                    return
            except (OSError, RoostError, TimeoutError) as e:
                name = type(e).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                self.reconnects += 1
                await asyncio.sleep(RECONNECT_S)

    def report(self) -> dict[str, Any]:
        return {
            "lane": self.lane, "workload": self.workload, "attempted": self.attempted,
            "confirmed": self.confirmed, "errors": self.errors, "reconnects": self.reconnects,
            "misrouted": self.misrouted, "unconfirmed_at_end": self.pending is not None,
        }  # fmt: skip


async def _main(url: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    lanes = [LaneRun(n, workload, seed, spec) for n, workload, seed in spec["lanes"]]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(lane.run(url, stop)) for lane in lanes]
    await asyncio.gather(*(lane.connected.wait() for lane in lanes))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop.set()
    done, late = await asyncio.wait(tasks, timeout=FINISH_TIMEOUT_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    for task in done:
        task.result()  # a lane that crashed is a bench bug: say so
    return [lane.report() for lane in lanes]


def main(argv: list[str]) -> None:
    url, spec = argv[0], json.loads(argv[1])
    try:
        import uvloop

        reports = uvloop.run(_main(url, spec))
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        reports = asyncio.run(_main(url, spec))
    print(json.dumps(reports), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
