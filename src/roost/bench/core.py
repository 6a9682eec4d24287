"""``roost bench core``: the queue path through the broker against the bare log, in one run.

One process, one uvloop event loop and a real ``Host`` (core, storage engine, group-commit
flusher, timer) on a fresh data directory, so durability ``always`` is what users get: a publish
is confirmed once its batch is fsync'd, and a queue subscription delivers only durable records.
Values are 1 KiB, and every path is batched: ``batch`` messages per ``Host.publish``,
``Host.receive(max_messages=batch)``, and one ``broker.ack`` call for everything received.

Producers and consumers run concurrently, as in a real system: ``PRODUCERS`` tasks each publish
their share of the batches, awaiting each confirm before publishing again (so up to
``PRODUCERS`` batches are in flight and group commit merges their fsyncs), while ``CONSUMERS``
tasks long-poll ``Host.receive`` and ack what they got, until every message is acked. Messages
are built before the clock starts: the figures are the broker's cost, not the client's.

Fields (one run, in this order, each phase on its own topic of one partition):
  append_rps             ``topic.append`` + ``flusher.wait_durable`` with the same producers and
                         batches and no subscription: the log alone, the baseline
  queue_rps              messages/s from the first publish to the last ack, queue subscription
  queue_vs_append_ratio  queue_rps / append_rps (target >= 0.5)
  queue_cpu_us_per_msg   process CPU (every thread: loop and fsync) over the queue run, per
                         message published, received and acked (target <= 10)
  keyed_rps              as queue_rps, on a fifo queue (`keyed` mode), keys drawn at random
                         (seeded) from ``keys`` distinct ones
  stream_read_rps        records/s one member of a new `stream` subscription (start: earliest)
                         reads the append phase's topic to its end: ``Host.fetch`` of
                         ``batch`` records, then a commit of what it fetched. (That topic, not
                         a queue's: a queue's retention deletes what it has consumed.)
  log_read_rps           the raw log read beneath it: ``topic.read`` of the same topic from its
                         start to its end, 1 MiB at a time, decoding every record
  delayed_*              the queue phase again with ``delayed`` delayed records ahead, against
                         plain queues run beside it (core_delays.py)
The ``*_cpu_us_per_msg`` figures of the other phases are given for comparison.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from roost.bench.core_delays import delayed_phase
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.server.access import TRUSTED
from roost.server.host import Host
from roost.storage import Record

VALUE_BYTES = 1024
#: Batches in flight at once, one per producer task.
PRODUCERS = 4
CONSUMERS = 1
#: A consumer's long poll; the run ends when every message is acked, not when a poll times out.
RECEIVE_WAIT_S = 5.0


class Phase:
    """Wall time and process CPU time of one measured phase."""

    def __init__(self, messages: int) -> None:
        self.messages = messages
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self.rps = 0.0
        self.cpu_us_per_msg = 0.0

    def stop(self) -> None:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        self.rps = self.messages / wall
        self.cpu_us_per_msg = cpu / self.messages * 1e6


class CoreBench:
    def __init__(self, host: Host, messages: int, batch: int, keys: int, delayed: int = 0) -> None:
        if messages < batch or messages % batch:
            raise ValueError(f"messages ({messages}) must be a multiple of batch ({batch})")
        self.host = host
        self.messages = messages
        self.batch = batch
        self.keys = keys
        self.delayed = delayed
        self.value = os.urandom(VALUE_BYTES)

    async def run(self, progress: Callable[[str], None]) -> dict[str, Any]:
        progress("append: the log alone")
        append = await self.append_phase("append")
        progress("queue: publish, receive, ack")
        queue = await self.queue_phase("queue", fifo=False)
        progress(f"keyed: a fifo queue over {self.keys:,} keys")
        keyed = await self.queue_phase("keyed", fifo=True)
        progress("stream read")
        stream = await self.stream_phase("append")
        log_read_rps = self.log_read_rps("append")
        delayed = {}
        if self.delayed:
            delayed = await delayed_phase(self, self.delayed, progress)
        return {
            "append_rps": round(append.rps, 1),
            "queue_rps": round(queue.rps, 1),
            "queue_vs_append_ratio": round(queue.rps / append.rps, 3),
            "queue_cpu_us_per_msg": round(queue.cpu_us_per_msg, 2),
            "keyed_rps": round(keyed.rps, 1),
            "stream_read_rps": round(stream.rps, 1),
            "log_read_rps": round(log_read_rps, 1),
            "append_cpu_us_per_msg": round(append.cpu_us_per_msg, 2),
            "keyed_cpu_us_per_msg": round(keyed.cpu_us_per_msg, 2),
            "stream_cpu_us_per_msg": round(stream.cpu_us_per_msg, 2),
            **delayed,
            "settings": {
                "value_bytes": VALUE_BYTES,
                "messages": self.messages,
                "batch": self.batch,
                "keys": self.keys,
                "delayed": self.delayed,
                "producers": PRODUCERS,
                "consumers": CONSUMERS,
                "durability": "always",
                "cpus": os.cpu_count(),
            },
        }

    # -- phases ---------------------------------------------------------------------------

    async def append_phase(self, name: str) -> Phase:
        """The baseline: the producers' batches straight onto the log, each awaited durable."""
        self.host.door(TRUSTED).create_topic(name)
        topic = self.host.engine.topic(name)
        log = topic.log(0)
        flusher = self.host.flusher
        records = [Record(value=self.value) for _ in range(self.batch)]

        async def produce(batches: int) -> None:
            for _ in range(batches):
                result = topic.append(0, records)
                await flusher.wait_durable(log, result.next_offset)

        phase = Phase(self.messages)
        await asyncio.gather(*(produce(n) for n in self._shares(PRODUCERS)))
        phase.stop()
        return phase

    async def queue_phase(self, name: str, fifo: bool, create: bool = True) -> Phase:
        """Publish, receive and ack every message through the queue ``name``, concurrently."""
        door = self.host.door(TRUSTED)
        if create:
            door.create_queue(name, fifo=fifo, durability="always")
        batches = self._batches(fifo)
        acked = [0]

        async def produce(mine: Sequence[list[Outgoing]]) -> None:
            for messages in mine:
                await door.publish(name, messages)

        async def consume() -> None:
            while acked[0] < self.messages:
                received = await door.receive(name, name, self.batch, RECEIVE_WAIT_S)
                if not received:
                    continue
                refused = door.ack(name, name, [m.receipt for m in received])
                if refused:
                    raise RuntimeError(f"{len(refused)} acks refused: a lease ran out mid-run")
                acked[0] += len(received)

        phase = Phase(self.messages)
        await asyncio.gather(
            *(produce(batches[i::PRODUCERS]) for i in range(PRODUCERS)),
            *(consume() for _ in range(CONSUMERS)),
        )
        phase.stop()
        if acked[0] != self.messages:
            raise RuntimeError(f"acked {acked[0]} of {self.messages} messages")
        return phase

    async def stream_phase(self, topic: str) -> Phase:
        """One member of a new `stream` subscription reads ``topic`` from the start, committing."""
        name = "reader"
        door = self.host.door(TRUSTED)
        door.create_subscription(
            SubscriptionSpec(name=name, topic=topic, mode="stream", start="earliest")
        )
        member = door.join(topic, name)
        log = self.host.engine.topic(topic).log(0)
        offset, end = log.start_offset, log.end_offset
        phase = Phase(end - offset)
        while offset < end:
            records, _ = await door.fetch(
                topic, name, member.member_id, member.generation, self.batch
            )
            offset = records[-1].offset + 1
            door.commit(topic, name, member.member_id, member.generation, {0: offset})
        phase.stop()
        return phase

    def log_read_rps(self, name: str) -> float:
        """Decode ``name`` from its start to its end, 1 MiB per read: what a fetch sits on."""
        topic = self.host.engine.topic(name)
        offset, end = topic.start_offset(0), topic.end_offset(0)
        start = time.perf_counter()
        count = 0
        while offset < end:
            records = topic.read(0, offset)
            count += len(records)
            offset = records[-1].offset + 1
        return count / (time.perf_counter() - start)

    # -- inputs ---------------------------------------------------------------------------

    def _shares(self, workers: int) -> list[int]:
        """The batches each of ``workers`` publishes: as even as whole batches allow."""
        batches = self.messages // self.batch
        return [batches // workers + (i < batches % workers) for i in range(workers)]

    def _batches(self, keyed: bool) -> list[list[Outgoing]]:
        """Every publish of the phase, built up front. Unkeyed batches are one shared list."""
        count = self.messages // self.batch
        if not keyed:
            return [[Outgoing(value=self.value) for _ in range(self.batch)]] * count
        rng = random.Random(7)
        keys = [b"key-%d" % k for k in range(self.keys)]
        return [
            [Outgoing(value=self.value, key=rng.choice(keys)) for _ in range(self.batch)]
            for _ in range(count)
        ]


async def _bench(
    path: str,
    messages: int,
    batch: int,
    keys: int,
    delayed: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    host = await Host.start(path)
    try:
        return await CoreBench(host, messages, batch, keys, delayed).run(progress)
    finally:
        await host.aclose()


def _event_loop_run(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(main)
    return uvloop.run(main)


def run_core_bench(
    directory: str | None,
    messages: int,
    batch: int,
    keys: int,
    progress: Callable[[str], None],
    delayed: int = 0,
) -> dict[str, Any]:
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    parent = tempfile.mkdtemp(prefix="roost-bench-", dir=directory)
    try:
        return _event_loop_run(_bench(parent, messages, batch, keys, delayed, progress))
    finally:
        shutil.rmtree(parent, ignore_errors=True)
