"""The process ``test_kill_during_queue`` kills: it publishes, receives and acks until it dies.

Run as ``python queue_child.py DATA_DIR RUN PRODUCERS CONSUMERS MAX_PUBLISHED``. It opens the
broker at DATA_DIR with ``roost.open`` (recovering whatever the last kill left), creates the
queue ``jobs`` if it does not exist yet, prints ``ready`` and runs, until it is killed:

- PRODUCERS tasks, each publishing batches of 1-3 unique messages (``payload``). A producer
  prints ``pub <id>`` before it publishes a message and ``confirmed <id> <partition> <offset>``
  once ``publish`` returned, that is once the message is durable (the queue is ``always``).
  Together they stop after MAX_PUBLISHED messages, so that the parent's checks stay small.
- CONSUMERS tasks, each receiving up to 5 messages at a time. A consumer prints
  ``got <partition> <offset> <delivery_count> <value in hex>`` for each, then, per message,
  ``acking <id>``, acks it, and prints ``acked <id>`` once it returned.

Every line is one ``os.write`` of less than ``PIPE_BUF`` bytes, so a kill never tears one.
``acking``, the ack itself and ``acked`` run with no ``await`` in between: no other task's line
comes between them, and the order of the ``acking`` lines is the order of the acks in the
subscription's journal.

On SIGTERM the tasks finish what they are doing and stop (they are not cancelled: a cancelled
``receive`` may return anyway, see ``test_a_cancelled_receive_is_cancelled``); the child then
closes the broker cleanly, prints ``closed`` and exits 0.
After ``LIFETIME_S`` it exits on its own (SIGALRM), so a parent that died leaves nothing behind.

``python queue_child.py DATA_DIR --receive-and-die`` and ``... --snapshot-and-die`` are two
crashes placed exactly, for the tests that show known bugs (see their docstrings).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sys

import uvloop

import roost
from roost.client.embedded import EmbeddedBroker
from roost.storage import LocalEngine

QUEUE = "jobs"
WARM_UP = "warm-up"
JOURNAL = "probe"
PARTITIONS = 2
#: Far longer than any child lives: within one process no lease expires, so every second
#: delivery of a message is the work of a crash.
VISIBILITY_TIMEOUT_S = 600.0
LIFETIME_S = 30
#: A ``got`` line carries the value in hex: 2 * this + 40 stays below PIPE_BUF (4096).
MAX_VALUE_BYTES = 1800


def payload(message_id: str) -> bytes:
    """The value published as ``message_id``: the id, ``|``, then 0-1800 bytes that vary."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=32).digest()
    head = message_id.encode() + b"|"
    big = digest[0] % 20 == 0
    size = digest[1] * 8 % (MAX_VALUE_BYTES - len(head)) if big else digest[1] % 120
    return head + (digest * (size // len(digest) + 1))[:size]


def message_id(value: bytes) -> str:
    """The id a value was published as (the parent checks that it is ``payload(id)``)."""
    return value.partition(b"|")[0].decode(errors="replace")


def _say(line: str) -> None:
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


async def _ensure_queue(broker: EmbeddedBroker) -> None:
    if QUEUE in await broker.list_topics():
        return  # made by an earlier child, which printed ``ready`` only afterwards
    await broker.create_queue(
        QUEUE,
        partitions=PARTITIONS,
        visibility_timeout=VISIBILITY_TIMEOUT_S,
        max_deliveries=None,  # a message leased at many kills in a row is never dead-lettered
        dead_letter=None,
    )


async def _produce(
    broker: EmbeddedBroker, run: int, producer: int, budget: list[int], stop: asyncio.Event
) -> None:
    rng = random.Random(f"produce {run} {producer}")
    n = 0
    while budget[0] > 0 and not stop.is_set():
        count = min(rng.randint(1, 3), budget[0])
        budget[0] -= count
        ids = [f"{run}.{producer}.{n + i}" for i in range(count)]
        n += count
        for id_ in ids:
            _say(f"pub {id_}")
        if count == 1:
            published = [await broker.publish(QUEUE, payload(ids[0]))]
        else:
            published = await broker.publish_batch(
                QUEUE, [roost.Outgoing(value=payload(id_)) for id_ in ids]
            )
        for id_, where in zip(ids, published, strict=True):
            _say(f"confirmed {id_} {where.partition} {where.offset}")


async def _consume(broker: EmbeddedBroker, run: int, consumer: int, stop: asyncio.Event) -> None:
    rng = random.Random(f"consume {run} {consumer}")
    while not stop.is_set():
        batch = await broker.receive(QUEUE, max_messages=rng.randint(1, 5), wait=0.05)
        for delivery in batch:
            _say(
                f"got {delivery.partition} {delivery.offset} {delivery.delivery_count} "
                f"{delivery.value.hex()}"
            )
        for delivery in batch:
            if rng.random() < 0.3:
                await asyncio.sleep(0)  # let the other tasks run between receive and ack
            id_ = message_id(delivery.value)
            _say(f"acking {id_}")
            # The broker's own ack, not ``delivery.ack()``: that one waits a turn of the loop
            # to travel with other acks, which would let other tasks' lines in between.
            refused = await broker.ack(QUEUE, QUEUE, [delivery.receipt])
            delivery.settled(refused)
            _say(f"acked {id_}")


async def _run(data_dir: str, run: int, producers: int, consumers: int, budget: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with roost.open(data_dir) as broker:
        await _ensure_queue(broker)
        _say("ready")
        shared_budget = [budget]
        async with asyncio.TaskGroup() as tasks:
            for p in range(producers):
                tasks.create_task(_produce(broker, run, p, shared_budget, stop))
            for c in range(consumers):
                tasks.create_task(_consume(broker, run, c, stop))
    _say("closed")


# -- two deterministic crashes, for the known-bug tests ---------------------------------------


async def _receive_and_die(data_dir: str) -> None:
    """Receive the one message in the queue and die before the flusher's thread can run."""
    async with roost.open(data_dir) as broker:
        await broker.publish(WARM_UP, b"")  # the flusher's thread exists and waits for work
        sys.setswitchinterval(LIFETIME_S)  # and gets no chance to take the GIL from here on
        batch = await broker.receive(QUEUE, max_messages=10)
        if len(batch) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        sys.exit(f"expected one message, received {batch}")


def _snapshot_and_die(data_dir: str) -> None:
    """Snapshot a journal whose last entries the flusher has not written yet, as
    ``Host._snapshot_journals`` may, and die before it writes them."""
    engine = LocalEngine.open(data_dir)
    engine.on_dirty = lambda log, urgent: None  # a flusher that has not had its turn yet
    journal = engine.journal(JOURNAL)
    journal.append([b"e0", b"e1"])
    journal.log.flush()  # seq 0 and 1 are durable
    journal.append([b"e2", b"e3"])  # held back for the flusher
    job = journal.snapshot_job(b"state after e3")  # covers seq < 4
    journal.append([b"e4"])  # the loop goes on while the job runs in a thread
    job.run()
    journal.snapshot_done(job)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    data_dir = sys.argv[1]
    signal.alarm(LIFETIME_S)  # SIGALRM's default action ends the process
    if sys.argv[2] == "--receive-and-die":
        uvloop.run(_receive_and_die(data_dir))
    elif sys.argv[2] == "--snapshot-and-die":
        _snapshot_and_die(data_dir)
    else:
        run, producers, consumers, budget = map(int, sys.argv[2:6])
        uvloop.run(_run(data_dir, run, producers, consumers, budget))


if __name__ == "__main__":
    main()
