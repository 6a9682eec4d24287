"""SIGKILL a real ``roost serve`` while clients publish with confirms; restart it on the same
data directory; in the end every confirmed message is there, and per-key order holds.

Two queues: ``jobs`` (a plain queue, 2 partitions) and ``orders`` (fifo, that is `keyed`, 3
partitions, ``KEYS`` keys). Each round starts the server (the e2e ``Server``), and publisher
tasks in this process, each on its own connection, publish batches: the ``jobs`` publishers
unique messages, each ``orders`` publisher to the keys it owns alone, with a sequence number
per key in the value (``k07:42``). A message is recorded as confirmed only once
``publish``/``publish_batch`` returned. Once the round has seen a seeded number of
confirms, the publisher that saw the last one SIGKILLs the server at once: the other
publishers have requests in flight. They see the connection fail, record nothing for those
requests, and keep the unconfirmed batch to send again, unchanged, first thing in the next
round, as a producer without idempotence would. A publisher sends its next batch only after
the previous one was confirmed.

After the last kill the server starts once more and a consumer drains both queues (receive,
ack everything, until a receive comes back empty and the stats show nothing left, within a
bounded time). Then:

1. Every confirmed message is delivered at the partition and offset it was confirmed at, byte
   for byte, and no two confirms name one place.
2. Every message delivered was published (attempted) before, byte for byte, with its key,
   and is stored no more often than it was sent.
3. In ``orders``, per key, the sequence numbers in delivery order, first occurrences only,
   are increasing: a retried batch may show up twice, but nothing comes before what was
   confirmed ahead of it. Delivery is also in offset order per key (fifo).
4. Within the drain's one server process nothing is delivered twice (no lease can expire).

The rounds and the confirm count at which each kill lands come from a fixed seed; where the
kill lands in the server's work still varies. No check waits on a clock.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import signal
import threading
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

import roost
from roost.client.api import Client
from roost.client.network import NetworkBackend
from roost.errors import ConnectionClosed, ConnectionLost, StorageClosed
from tests.crash.queue_child import message_id, payload
from tests.e2e.test_serve import Server

SEED = 0x5EED_C0DE
ROUNDS = 16
#: A round's kill lands once it has seen this many confirmed messages: log-uniform between
#: these, so some kills land just after a restart (recovery then finds the last one's cuts).
KILL_AFTER_CONFIRMS = (1, 4000)
JOB_PUBLISHERS = 4
ORDER_PUBLISHERS = 5
KEYS = 20
MAX_JOB_BATCH = 12
MAX_ORDER_BATCH = 8
JOBS, ORDERS = "jobs", "orders"
#: Far longer than the drain takes: within one process no lease expires.
VISIBILITY_TIMEOUT_S = 600.0
ROUND_TIMEOUT_S = 20.0
DRAIN_TIMEOUT_S = 30.0
#: What a publisher sees when the server dies under it.
LOST = (ConnectionClosed, StorageClosed, ConnectionLost, ConnectionError)


class Running:
    """A ``roost serve`` whose stderr is read as it comes (a full pipe would stall it)."""

    def __init__(self, data_dir: Path) -> None:
        self.server = Server(data_dir)
        self.url = self.server.url
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stderr = self.server.process.stderr
        assert stderr is not None
        self._stderr.extend(iter(stderr.readline, b""))

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr[-40:]).decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL, at once, from the event loop: no waiting here."""
        self.server.process.send_signal(signal.SIGKILL)

    def wait(self, expected: int) -> None:
        returncode = self.server.process.wait(30)
        self._reader.join(30)
        assert returncode == expected, f"the server ended with {returncode}: {self.stderr}"

    def stop(self) -> None:
        self.server.process.send_signal(signal.SIGTERM)
        self.wait(0)

    def close(self) -> None:
        if self.server.process.poll() is None:
            self.server.process.kill()
            self.server.process.wait()
        self._reader.join(30)
        assert self.server.process.stderr is not None
        self.server.process.stderr.close()


@dataclass
class Ledger:
    """What the publishers did, over all rounds."""

    #: topic -> every value ever sent (confirmed or not) -> its key
    attempted: dict[str, dict[bytes, bytes | None]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: value -> how many times it was sent (more than once: a retried batch)
    sends: Counter[bytes] = field(default_factory=Counter)
    #: (topic, partition, offset) -> the value confirmed there
    confirmed: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    #: confirms seen in the current round, and the count at which it kills the server
    round_confirms: int = 0
    kill_at: int = 0
    killed: bool = False
    #: publish requests sent and not answered yet, now and at each kill
    in_flight: int = 0
    in_flight_at_kill: list[int] = field(default_factory=list)
    kills_at: list[int] = field(default_factory=list)
    #: per round, the publish requests the kill failed (the rest were answered in time)
    lost: list[int] = field(default_factory=list)


class Publisher:
    """One task's publishing state; it survives the rounds, its connection does not."""

    def __init__(self, topic: str, name: str, keys: Sequence[bytes], seed: int) -> None:
        self.topic = topic
        self.name = name
        self.keys = list(keys)
        self.rng = random.Random(seed)
        self.next_seq: dict[bytes, int] = dict.fromkeys(self.keys, 0)
        self.next_n = 0
        #: The batch sent and not confirmed (sent again, unchanged, next round).
        self.pending: list[roost.Outgoing] | None = None

    def _next_batch(self) -> list[roost.Outgoing]:
        if not self.keys:
            count = self.rng.randint(1, MAX_JOB_BATCH)
            ids = [f"{self.name}.{self.next_n + i}" for i in range(count)]
            self.next_n += count
            return [roost.Outgoing(value=payload(id_)) for id_ in ids]
        batch = []
        for _ in range(self.rng.randint(1, MAX_ORDER_BATCH)):
            key = self.rng.choice(self.keys)
            id_ = f"{key.decode()}:{self.next_seq[key]}"
            self.next_seq[key] += 1
            batch.append(roost.Outgoing(value=payload(id_), key=key))
        return batch

    async def run(self, url: str, ledger: Ledger, server: Running) -> None:
        """Publish until the kill; a call that started before it may fail, none starts after
        it (a reconnecting client would wait for a server that is gone)."""
        try:
            async with roost.connect(url) as broker:
                while not ledger.killed:
                    await self._publish_one(broker, ledger, server)
        except LOST:
            assert ledger.killed, f"{self.name} lost its connection before the kill"
            ledger.lost[-1] += 1

    async def _publish_one(self, broker: Client, ledger: Ledger, server: Running) -> None:
        if self.pending is None:
            self.pending = self._next_batch()
        batch = self.pending
        for message in batch:
            ledger.attempted[self.topic][message.value] = message.key
            ledger.sends[message.value] += 1
        ledger.in_flight += 1
        try:
            if len(batch) == 1:
                [only] = batch
                published = [await broker.publish(self.topic, only.value, key=only.key)]
            else:
                published = await broker.publish_batch(self.topic, batch)
        finally:
            ledger.in_flight -= 1
        self.pending = None
        for message, where in zip(batch, published, strict=True):
            place = (where.topic, where.partition, where.offset)
            before = ledger.confirmed.get(place)
            assert before is None, (
                f"{place} confirmed for {message_id(before)}, then for {message_id(message.value)}"
            )
            ledger.confirmed[place] = message.value
        ledger.round_confirms += len(batch)
        if not ledger.killed and ledger.round_confirms >= ledger.kill_at:
            server.kill()
            ledger.killed = True
            ledger.in_flight_at_kill.append(ledger.in_flight)
            ledger.kills_at.append(ledger.round_confirms)


async def publish_round(
    server: Running, ledger: Ledger, publishers: list[Publisher], first: bool
) -> None:
    if first:
        async with roost.connect(server.url) as broker:
            await broker.create_queue(JOBS, partitions=2, visibility_timeout=VISIBILITY_TIMEOUT_S)
            await broker.create_queue(
                ORDERS, fifo=True, partitions=3, visibility_timeout=VISIBILITY_TIMEOUT_S
            )
    async with asyncio.timeout(ROUND_TIMEOUT_S), asyncio.TaskGroup() as group:
        tasks = [group.create_task(p.run(server.url, ledger, server)) for p in publishers]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assert ledger.killed, "a publisher stopped before the kill"


def kill_after(rng: random.Random) -> int:
    low, high = KILL_AFTER_CONFIRMS
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


class Got(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes


async def drain(url: str, topic: str) -> list[Got]:
    """Receive and ack everything ``topic`` holds, in delivery order, until a receive finds
    nothing and the stats agree that nothing is left; within ``DRAIN_TIMEOUT_S``."""
    got: list[Got] = []
    stats = None
    async with roost.connect(url) as broker:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while True:
                    batch = await broker.receive(topic, max_messages=500, wait=1.0)
                    if batch:
                        got += [Got(d.partition, d.offset, d.key, d.value) for d in batch]
                        refused = await broker.ack(topic, topic, [d.receipt for d in batch])
                        assert not refused, f"{topic}: acks refused: {refused}"
                        continue
                    stats = await broker.stats(topic)
                    if (stats.backlog, stats.in_flight) == (0, 0):
                        return got
        except TimeoutError:
            raise AssertionError(
                f"{topic}: not drained in {DRAIN_TIMEOUT_S} s ({len(got)} received): {stats}"
            ) from None


def check_delivered(topic: str, got: list[Got], ledger: Ledger) -> None:
    """(1), (2) and (4) for one topic."""
    places: dict[tuple[int, int], bytes] = {}
    copies: Counter[bytes] = Counter()
    for item in got:
        place = (item.partition, item.offset)
        where = f"{topic} {place} {message_id(item.value)!r}"
        assert place not in places, f"{where}: delivered twice in one process"
        places[place] = item.value
        assert item.value in ledger.attempted[topic], f"{where}: never published"
        assert item.value == payload(message_id(item.value)), f"{where}: not the value sent"
        assert item.key == ledger.attempted[topic][item.value], f"{where}: not the key sent"
        copies[item.value] += 1
        assert copies[item.value] <= ledger.sends[item.value], (
            f"{where}: stored {copies[item.value]} times, sent {ledger.sends[item.value]}"
        )
    missing = []
    for (confirmed_topic, partition, offset), value in ledger.confirmed.items():
        if confirmed_topic != topic:
            continue
        delivered = places.get((partition, offset))
        if delivered != value:
            instead = None if delivered is None else message_id(delivered)
            missing.append((partition, offset, message_id(value), instead))
    assert not missing, f"{topic}: {len(missing)} confirmed messages lost, e.g. {missing[:5]}"


def check_key_order(got: list[Got]) -> None:
    """(3): per key, one partition, offsets increasing, and the first occurrences of the
    sequence numbers increasing."""
    seen: dict[bytes, set[int]] = defaultdict(set)
    last_seq: dict[bytes, int] = {}
    last_place: dict[bytes, tuple[int, int]] = {}
    for item in got:
        key_text, _, seq_text = message_id(item.value).partition(":")
        key, seq, place = key_text.encode(), int(seq_text), (item.partition, item.offset)
        before = last_place.setdefault(key, (item.partition, -1))
        assert before[0] == item.partition and before[1] < item.offset, (
            f"key {key!r}: {place} delivered after {before}"
        )
        last_place[key] = place
        if seq in seen[key]:
            continue  # a retried batch whose first try had landed
        assert seq > last_seq.get(key, -1), (
            f"key {key!r}: sequence {seq} first delivered after {last_seq[key]} ({place})"
        )
        seen[key].add(seq)
        last_seq[key] = seq


@pytest.mark.crash
@pytest.mark.timeout(120)
def test_kill_server_loses_no_confirmed_message_and_keeps_key_order(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    keys = [b"k%02d" % i for i in range(KEYS)]
    publishers = [Publisher(JOBS, f"j{i}", [], rng.getrandbits(32)) for i in range(JOB_PUBLISHERS)]
    publishers += [
        Publisher(ORDERS, f"o{i}", keys[i::ORDER_PUBLISHERS], rng.getrandbits(32))
        for i in range(ORDER_PUBLISHERS)
    ]
    ledger = Ledger()
    for round_ in range(ROUNDS):
        ledger.round_confirms, ledger.killed = 0, False
        ledger.lost.append(0)
        ledger.kill_at = kill_after(rng)
        server = Running(data_dir)
        try:
            asyncio.run(publish_round(server, ledger, publishers, first=round_ == 0))
            server.wait(-signal.SIGKILL)
        except BaseException as e:
            e.add_note(f"round {round_}, server stderr:\n{server.stderr}")
            raise
        finally:
            server.close()

    server = Running(data_dir)
    try:
        got = {topic: asyncio.run(drain(server.url, topic)) for topic in (JOBS, ORDERS)}
        server.stop()
    except BaseException as e:
        e.add_note(f"drain, server stderr:\n{server.stderr}")
        raise
    finally:
        server.close()

    for topic in (JOBS, ORDERS):
        check_delivered(topic, got[topic], ledger)
    check_key_order(got[ORDERS])

    assert ledger.confirmed, "nothing was confirmed: the test checked nothing"
    assert any(ledger.lost), "no kill landed while a publish was in flight"
    confirmed = set(ledger.confirmed.values())
    for topic in (JOBS, ORDERS):
        values = [item.value for item in got[topic]]
        sent = ledger.attempted[topic]
        print(
            f"{topic}: {len(sent)} sent, {len(confirmed.intersection(sent))} confirmed, "
            f"{len(values)} delivered ({len(values) - len(set(values))} twice, "
            f"{len(set(values) - confirmed)} never confirmed)"
        )
    print(
        f"{ROUNDS} rounds, kills after {ledger.kills_at} confirms, with "
        f"{ledger.in_flight_at_kill} publishes in flight, of which {ledger.lost} failed"
    )


@pytest.mark.crash
@pytest.mark.timeout(60)
def test_a_client_whose_server_died_closes_cleanly(tmp_path: Path) -> None:
    """Once the server had closed the connection (EOF), ``NetworkBackend.aclose`` used to send
    GOODBYE through a codec that had seen the stream end: it raised ``ProtocolError`` and
    never closed its socket (the test above hit it at every kill; fixed in 1555854, which
    sends GOODBYE only while the codec is open and closes the writer in ``finally``). A
    receive waits on the server when it dies, so the client sees EOF, not a reset: nothing is
    written after the kill."""
    server = Running(tmp_path / "data")
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None

    async def body() -> None:
        broker = Client(await NetworkBackend.connect(address.hostname, address.port))
        await broker.create_queue("q")
        waiting = asyncio.create_task(broker.receive("q", wait=10))
        await broker.list_topics()  # answered after the receive was read: the receive waits
        server.kill()
        with pytest.raises(ConnectionClosed):
            await waiting
        await broker.aclose()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(body())
            gc.collect()  # a socket left open warns when it is collected
        server.wait(-signal.SIGKILL)
    finally:
        server.close()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
