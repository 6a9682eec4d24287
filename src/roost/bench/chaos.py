"""``roost bench chaos``: SIGKILL a real ``roost serve`` under confirmed load; count what is lost.

A broker (``BrokerProcess``: 127.0.0.1, a port kept across restarts, a temp data directory)
serves four workloads, each durability ``always``:

    chaos.jobs     a standard queue (2 partitions)
    chaos.orders   a keyed (fifo) queue (3 partitions), per-key order promised
    chaos.log      a topic (3 partitions) read by the `stream` consumer group ``readers``
    chaos.route    a topic exchange bound to the queues chaos.route.a (``a.*``),
                   chaos.route.b (``b.#``) and chaos.route.all (``#``)

``lanes`` producer lanes, spread over ``processes`` OS processes (``chaos_lanes``), publish
with confirms, each on its own connection, reconnecting after every kill. The bench sleeps a
seeded random 0.5-3 s (``interval``) after the broker is listening, SIGKILLs it, starts it
again on the same data directory and times how long it takes to listen again (recovery
included). After ``kills`` kills, or once ``max_seconds`` have passed, the lanes are told to
stop (the broker is up: each finishes its request in flight), report what they sent and what
was confirmed, and the bench drains every queue (receive, ack) and reads the whole group,
within ``drain_timeout_s``, then checks the deliveries against the lanes' histories
(``chaos_ledger``): lost, unexpected, duplicated, per-key order violations.

The kill schedule and the lanes' batches come from ``seed``; where each kill lands in the
broker's work does not. Nothing is consumed during the kills: the drain runs on the broker of
the last restart, so every delivery it sees comes from what recovery kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from roost.bench.broker_process import BrokerProcess
from roost.bench.chaos_lanes import EXCHANGE, KEYED, QUEUE, ROUTES, STREAM, WORKLOADS, route_key
from roost.bench.chaos_ledger import Figures, Lane, TopicTally

GROUP = "readers"
#: Far longer than the drain: no lease expires while it runs, so duplicates are the kills'.
VISIBILITY_TIMEOUT_S = 3600.0
RECEIVE_BATCH = 1000
FETCH_BATCH = 5000
ROUTE_TOPICS = ("chaos.route.a", "chaos.route.b", "chaos.route.all")
ROUTE_BINDINGS = {"chaos.route.a": "a.*", "chaos.route.b": "b.#", "chaos.route.all": "#"}


async def _declare(url: str) -> None:
    import roost

    queue_options: dict[str, Any] = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S, "max_deliveries": None, "dead_letter": None,
    }  # fmt: skip
    async with roost.connect(url, reconnect=False) as client:
        await client.create_queue(QUEUE, partitions=2, **queue_options)
        await client.create_queue(KEYED, fifo=True, partitions=3, **queue_options)
        await client.create_topic(STREAM, partitions=3)
        await client.create_subscription(STREAM, GROUP, mode="stream", start="earliest")
        await client.declare_exchange(EXCHANGE, "topic")
        for topic, pattern in ROUTE_BINDINGS.items():
            await client.create_queue(topic, **queue_options)
            await client.bind(EXCHANGE, topic, key=pattern)


# -- the drain --------------------------------------------------------------------------------


async def _drain_queue(client: Any, topic: str, tally: TopicTally) -> None:
    """Receive and ack until a receive is empty and the stats show nothing left."""
    while True:
        got = await client.receive(topic, max_messages=RECEIVE_BATCH, wait=0.2)
        if got:
            for delivery in got:
                tally.delivered(delivery.key, delivery.value)
            refused = await client.ack(topic, topic, [d.receipt for d in got])
            if refused:
                raise RuntimeError(f"{topic}: {len(refused)} acks refused during the drain")
            continue
        stats = await client.stats(topic)
        if (stats.backlog, stats.in_flight) == (0, 0):
            return


async def _drain_group(client: Any, tally: TopicTally) -> None:
    """Read the group from its committed offsets until it has no lag."""
    member = await client.join(STREAM, GROUP)
    while True:
        records = await member.fetch(max_records=FETCH_BATCH, wait=0.2)
        if records:
            for record in records:
                tally.delivered(record.key, record.value)
            await member.commit()
            continue
        if (await client.stats(STREAM, GROUP)).lag == 0:
            await member.leave()
            return


async def _drain(url: str, tallies: dict[str, TopicTally], timeout_s: float) -> None:
    import roost

    async with roost.connect(url, reconnect=False) as client, asyncio.timeout(timeout_s):
        for topic, tally in tallies.items():
            if topic == STREAM:
                await _drain_group(client, tally)
            else:
                await _drain_queue(client, topic, tally)


def _tallies(lanes: list[Lane], value_bytes: int) -> dict[str, TopicTally]:
    def of(workload: str) -> list[Lane]:
        return [lane for lane in lanes if lane.workload == workload]

    tallies = {
        QUEUE: TopicTally(QUEUE, of("jobs"), value_bytes),
        KEYED: TopicTally(KEYED, of("orders"), value_bytes, keyed=True),
        STREAM: TopicTally(STREAM, of("log"), value_bytes),
    }
    for topic in ROUTE_TOPICS:
        tallies[topic] = TopicTally(topic, of("route"), value_bytes)
    return tallies


def routed_to(lane: Lane, seq: int, topic: str) -> bool:
    """Whether the exchange's bindings route message ``seq`` of a route lane to ``topic``."""
    return topic in ROUTES[route_key(seq)]


# -- the lanes' processes ----------------------------------------------------------------------


def _lane_plan(lanes: int, processes: int, seed: int) -> list[list[tuple[int, str, int]]]:
    """Lanes round robin over the workloads, then over the processes."""
    rng = random.Random(seed)
    plan: list[list[tuple[int, str, int]]] = [[] for _ in range(processes)]
    for n in range(lanes):
        plan[n % processes].append((n, WORKLOADS[n % len(WORKLOADS)], rng.getrandbits(32)))
    return [chunk for chunk in plan if chunk]


def _spawn_lanes(url: str, lanes: list[tuple[int, str, int]], settings: dict[str, Any]) -> Any:
    spec = json.dumps({**settings, "lanes": lanes})
    return subprocess.Popen(
        [sys.executable, "-m", "roost.bench.chaos_lanes", url, spec],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


# -- the run ------------------------------------------------------------------------------------


def run_chaos_bench(
    kills: int,
    lanes: int = 16,
    processes: int = 4,
    seed: int = 1,
    interval_s: tuple[float, float] = (0.5, 3.0),
    max_seconds: float = 3600.0,
    drain_timeout_s: float = 1800.0,
    value_bytes: int = 100,
    max_batch: int = 8,
    keys: int = 8,
    directory: str | None = None,
    serve_args: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Kill the broker ``kills`` times under load, drain, and return the figures (module doc).

    Bounded: the kills stop after ``max_seconds``; the drain after ``drain_timeout_s``. The
    temp directory is removed at the end unless something was lost or the run failed (then
    its path is in the figures or the error: the data and the broker's log, to investigate).
    """
    root = tempfile.mkdtemp(prefix="roost-chaos-", dir=directory)
    broker = BrokerProcess(os.path.join(root, "data"), os.path.join(root, "serve.log"), serve_args)
    rng = random.Random(seed)
    settings = {"value_bytes": value_bytes, "max_batch": max_batch, "keys": keys}
    workers: list[Any] = []
    keep = True
    try:
        restarts = [broker.start()]
        asyncio.run(_declare(broker.url))
        workers = [_spawn_lanes(broker.url, chunk, settings)
                   for chunk in _lane_plan(lanes, processes, seed)]  # fmt: skip
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a lane process failed to connect")
        started = time.monotonic()
        done = _kill_repeatedly(broker, kills, rng, interval_s, started + max_seconds, restarts,
                                progress)  # fmt: skip
        killing_s = time.monotonic() - started
        reports = _stop_lanes(workers)
        workers = []
        histories = [Lane(r["lane"], r["workload"], r["attempted"],
                          [tuple(c) for c in r["confirmed"]]) for r in reports]  # fmt: skip
        tallies = _tallies(histories, value_bytes)
        progress("draining")
        drain_started = time.monotonic()
        asyncio.run(_drain(broker.url, tallies, drain_timeout_s))
        drain_s = time.monotonic() - drain_started
        exit_status = broker.stop()
        figures = _figures(tallies, histories, reports, restarts, done, killing_s, drain_s)
        keep = any(figures[name] for name in ("lost", "unexpected", "order_violations"))
        figures["final_exit_status"] = exit_status
        figures["settings"] = {
            "kills": kills, "lanes": lanes, "processes": len(_lane_plan(lanes, processes, seed)),
            "seed": seed, "interval_s": list(interval_s), "max_seconds": max_seconds,
            "value_bytes": value_bytes, "max_batch": max_batch, "keys_per_lane": keys,
            "durability": "always", "serve_args": list(serve_args),
        }  # fmt: skip
        if keep:
            figures["kept"] = root
        return figures
    except BaseException as e:
        e.add_note(f"roost bench chaos: data and log kept in {root}; last log lines:\n"
                   f"{broker.tail() if os.path.exists(broker.log_path) else ''}")  # fmt: skip
        raise
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
        broker.kill()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _kill_repeatedly(
    broker: BrokerProcess,
    kills: int,
    rng: random.Random,
    interval_s: tuple[float, float],
    deadline: float,
    restarts: list[float],
    progress: Callable[[str], None],
) -> int:
    """SIGKILL the broker ``interval_s`` after it listens, and start it again, ``kills`` times
    or until ``deadline``; each restart's seconds appended to ``restarts``. How many kills."""
    done = 0
    while done < kills and time.monotonic() < deadline:
        time.sleep(rng.uniform(*interval_s))
        broker.kill()
        done += 1
        restarts.append(broker.start())
        progress(f"{done}/{kills} kills, last restart {restarts[-1]:.2f} s")
    return done


def _stop_lanes(workers: list[Any]) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    for worker in workers:
        worker.stdin.write("stop\n")
        worker.stdin.flush()
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        if worker.returncode != 0:
            raise RuntimeError(f"a lane process exited with {worker.returncode}")
        reports += json.loads(out.strip().splitlines()[-1])
    return reports


def _figures(
    tallies: dict[str, TopicTally],
    lanes: list[Lane],
    reports: list[dict[str, Any]],
    restarts: list[float],
    kills: int,
    killing_s: float,
    drain_s: float,
) -> dict[str, Any]:
    total = Figures()
    per_topic = {}
    for topic, tally in tallies.items():
        figures = tally.finish(routed_to if topic in ROUTE_TOPICS else None)
        total.add(figures)
        per_topic[topic] = {
            "delivered": figures.delivered, "lost": figures.lost,
            "unexpected": figures.unexpected, "duplicated": figures.duplicated,
            "order_violations": figures.order_violations,
        }  # fmt: skip
    errors: dict[str, int] = {}
    for report in reports:
        for name, count in report["errors"].items():
            errors[name] = errors.get(name, 0) + count
    confirmed = {w: sum(lane.confirmed_count() for lane in lanes if lane.workload == w)
                 for w in WORKLOADS}  # fmt: skip
    ordered = sorted(restarts[1:]) or [0.0]
    quarter = max(1, len(restarts[1:]) // 4)
    quarters = (restarts[1 : 1 + quarter] or [0.0], restarts[-quarter:] if kills else [0.0])
    return {
        "kills": kills,
        "confirmed": sum(confirmed.values()),
        "attempted": sum(lane.attempted for lane in lanes),
        "delivered": total.delivered,
        "lost": total.lost,
        "unexpected": total.unexpected,
        "duplicated": total.duplicated,
        "order_violations": total.order_violations,
        "misrouted": sum(report["misrouted"] for report in reports),
        "unconfirmed_at_end": sum(report["unconfirmed_at_end"] for report in reports),
        "confirmed_per_workload": confirmed,
        "per_topic": per_topic,
        "restart_s": {
            "first": round(restarts[0], 3),
            "median": round(statistics.median(ordered), 3),
            "p99": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 3),
            "max": round(ordered[-1], 3),
            # Does recovery slow down as the data grows? The first and last quarter of restarts.
            "first_quarter_median": round(statistics.median(quarters[0]), 3),
            "last_quarter_median": round(statistics.median(quarters[1]), 3),
        },
        "killing_s": round(killing_s, 1),
        "drain_s": round(drain_s, 1),
        "confirmed_per_s": round(sum(confirmed.values()) / max(killing_s, 1e-9), 1),
        "lane_errors": errors,
        "examples": total.examples,
    }
