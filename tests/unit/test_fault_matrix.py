"""Every storage step under every disk fault: what must survive, and that it heals in place.

A table: for each step of the broker's work (publish under ``always`` and under ``never``, an
ack, a journal snapshot, a metadata change, a segment roll, retention) the file operations it
reaches, each failed through the fs seam with ENOSPC, EIO and EMFILE (and, for writes, torn
half way or landed whole and still failed, with ENOSPC or EIO). Each case asserts:

- the step fails, if it does, with a Roost error (never an OSError or a crash), and the fault
  was really reached (a case that cannot fail is not a case);
- the broker keeps serving other logs: a queue on the same disk publishes, delivers and acks;
- it recovers without a restart: after the disk heals, ``storage.check`` (the host's storage
  watch) repairs what failed, ``/readyz`` is ready, and the step succeeds when done again;
- nothing confirmed is lost and nothing unconfirmed is confirmed: every log holds exactly the
  records whose publishes were confirmed, once each and in order — while running and after a
  restart — and no acked message is delivered again.

Compaction does not exist yet (docs/design.md plans it): it has no row here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from roost.clock import ManualClock
from roost.core.model import Message
from roost.core.publishing import Outgoing
from roost.errors import RoostError
from roost.server.access import TRUSTED
from roost.server.host import Host
from roost.storage import TopicConfig
from roost.storage.fs import LocalFS
from tests.fault_fs import FaultFS, start_host

RETENTION_MS = 60_000
ROLL_CONFIG = TopicConfig(segment_max_bytes=4096, max_record_bytes=4000, retention_ms=RETENTION_MS)
BIG = 3000  # bytes: two such records never share a 4096-byte segment


@dataclass
class World:
    """The broker under test and what it has confirmed so far."""

    host: Host
    #: Per topic: offset -> value of every record whose publish was confirmed.
    confirmed: dict[str, dict[int, bytes]] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)  # offsets in queue q
    received: list[Message] = field(default_factory=list)
    created: int = 0

    @property
    def door(self):  # type: ignore[no-untyped-def]
        return self.host.door(TRUSTED)

    async def publish(self, topic: str, value: bytes) -> None:
        [published] = await self.host.publish(topic, [Outgoing(value=value)])
        self.confirmed.setdefault(topic, {})[published.offset] = value

    async def setup(self) -> None:
        self.door.create_topic("t")
        self.door.create_topic("n", TopicConfig(durability="never"))
        self.door.create_topic("r", ROLL_CONFIG)
        self.door.create_queue("q")
        self.door.create_queue("other")
        for i in range(4):
            await self.publish("t", b"t%d" % i)
            await self.publish("n", b"n%d" % i)
            await self.publish("q", b"q%d" % i)
        for i in range(3):
            await self.publish("r", b"r%d" % i + b"." * BIG)

    def check_logs(self) -> None:
        """Every log holds exactly its confirmed records (from its start: retention cuts)."""
        for topic, records in self.confirmed.items():
            log = self.host.engine.topic(topic).log(0)
            stored = [(r.offset, r.value) for r in log_records(log.start_offset, log)]
            expected = sorted((o, v) for o, v in records.items() if o >= log.start_offset)
            assert stored == expected, f"{topic}: what is stored is what was confirmed"


def log_records(start: int, log):  # type: ignore[no-untyped-def]
    offset, found = start, []
    while offset < log.end_offset:
        records = log.read(offset)
        found += records
        offset = records[-1].offset + 1
    return found


# -- the steps: (prepared before the fault is armed, done with it armed) -------------------


async def nothing(world: World) -> None:
    return None


async def publish_always(world: World) -> None:
    await world.publish("t", b"t-step")


async def publish_never(world: World) -> None:
    await world.publish("n", b"n-step")


async def receive_one(world: World) -> None:
    world.received = await world.host.receive("q", "q")
    assert world.received, "q has messages to ack"


async def ack(world: World) -> None:
    [message] = world.received
    journal = next(j for j in world.host.engine.journals() if j.name.startswith("sub-1"))
    world.door.ack("q", "q", [message.receipt])
    await world.host.flusher.wait_durable(journal.log, journal.log.end_offset)
    world.acked.add(message.offset)


async def snapshot(world: World) -> None:
    for sub in world.host._broker.subscriptions():
        await world.host._snapshot(sub.journal, sub.snapshot())


async def metadata_change(world: World) -> None:
    world.created += 1
    world.door.create_topic(f"new-{world.created}")


async def create_fresh(world: World) -> None:
    world.created += 1
    world.door.create_topic(f"fresh-{world.created}")


async def first_write(world: World) -> None:
    """The first publish to a topic created without files: it makes them (lazy creation)."""
    await world.publish(f"fresh-{world.created}", b"first")


async def metadata_snapshot(world: World) -> None:
    """A metadata change that compacts the journal into a snapshot (written in a thread of
    its own; waited for here, so that its file operations are part of the step)."""
    world.host.engine.metadata.snapshot_bytes = 0
    await metadata_change(world)
    world.host.engine.metadata.settle_snapshot()


async def roll(world: World) -> None:
    await world.publish("r", b"roll" + b"." * BIG)


async def retention(world: World) -> None:
    """Time retention as the broker runs it: the tick after r's segments expired (and, the
    second time, after the minute a failed log waits before retention looks again)."""
    clock = world.host.clock
    assert isinstance(clock, ManualClock)
    clock.advance(RETENTION_MS + 1_000)
    world.host._broker.tick()


Step = tuple[Callable[[World], Awaitable[None]], Callable[[World], Awaitable[None]]]
STEPS: dict[str, Step] = {
    "publish-always": (nothing, publish_always),
    "publish-never": (nothing, publish_never),
    "ack": (receive_one, ack),
    "journal-snapshot": (nothing, snapshot),
    "metadata-change": (nothing, metadata_change),
    "first-write": (create_fresh, first_write),
    "metadata-snapshot": (nothing, metadata_snapshot),
    "segment-roll": (nothing, roll),
    "retention": (nothing, retention),
}
#: The file operations each step reaches, and on which paths.
REACHES: dict[str, list[tuple[str, str]]] = {
    "publish-always": [("pwrite", "/topics/t/")],
    "publish-never": [("pwrite", "/topics/n/")],
    "ack": [("pwrite", "/journals/sub-1/"), ("fdatasync", "/journals/sub-1/")],
    "journal-snapshot": [
        ("open_rw", "snapshot.tmp"), ("pwrite", "snapshot.tmp"), ("fsync", "snapshot.tmp"),
        ("rename", "/snapshot"), ("fsync_dir", "/journals/sub-1"),
    ],
    # A create makes no file (lazy creation): the record is all it writes.
    "metadata-change": [
        ("pwrite", "metadata.json.journal"), ("fdatasync", "metadata.json.journal"),
    ],
    # The first write makes the directories and the segment, and its round syncs the entries.
    "first-write": [
        ("mkdir", "/topics/fresh-"), ("open_rw", "/topics/fresh-"), ("truncate", "/topics/fresh-"),
        ("open_dsync", "/topics/fresh-"), ("fsync_dir", "/topics/fresh-"),
    ],
    "metadata-snapshot": [
        ("open_rw", "metadata.json.tmp"), ("pwrite", "metadata.json.tmp"),
        ("fsync", "metadata.json.tmp"), ("rename", "metadata.json"),
        # then the journal, replaced by the records the snapshot does not hold
        ("open_rw", "metadata.json.journal.tmp"), ("pwrite", "metadata.json.journal.tmp"),
        ("fsync", "metadata.json.journal.tmp"), ("rename", "metadata.json.journal"),
    ],
    "segment-roll": [
        ("open_rw", "/topics/r/"), ("write_file", "/topics/r/"), ("truncate", "/topics/r/"),
        # then the first flush of the new segment: its O_DSYNC descriptor, the directory
        ("open_dsync", "/topics/r/"), ("fsync_dir", "/topics/r/"),
    ],
    "retention": [("remove", "/topics/r/")],
}  # fmt: skip
ERRORS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EMFILE": errno.EMFILE}
#: How a failed write leaves the file: nothing of it, half of it, or all of it (the device
#: took it and failed to confirm: a retry must not find it stored too).
WRITES = {"": "none", "-torn": "half", "-written": "all"}
CASES = [
    pytest.param(step, operation, match, error, landed, id=f"{step}-{operation}-{name}{suffix}")
    for step, reaches in REACHES.items()
    for operation, match in reaches
    for name, error in ERRORS.items()
    for suffix, landed in (WRITES.items() if operation == "pwrite" else [("", "none")])
    if not (landed != "none" and error == errno.EMFILE)
]


@pytest.mark.parametrize(("step", "operation", "match", "error", "landed"), CASES)
def test_a_fault_at_each_step(
    data_dir: str, step: str, operation: str, match: str, error: int, landed: str
) -> None:
    clock = ManualClock()
    fs = FaultFS()
    prepare, act = STEPS[step]
    world: World | None = None

    async def run_case() -> World:
        host = await start_host(data_dir, clock, fs)
        world = World(host)
        try:
            await world.setup()
            await prepare(world)
            fault = fs.arm(operation, error, match, tear=landed == "half", written=landed == "all")
            # Failing is allowed; failing with anything but a Roost error is not.
            with contextlib.suppress(RoostError):
                await act(world)
            assert fault.hits == 1, f"the step never reached {operation} on {match}"
            fs.disarm()
            await still_serving(host)
            await host.storage.check()
            assert host.engine.failed_logs() == [], "repaired in place, no restart"
            await host.check_ready()
            await prepare(world)
            await act(world)
            world.check_logs()
        finally:
            fs.disarm()
            await host.aclose()
        return world

    world = asyncio.run(run_case())

    async def after_restart() -> None:
        host = await start_host(data_dir, clock, LocalFS())
        try:
            world.host = host
            world.check_logs()
            delivered = await host.receive("q", "q", max_messages=100)
            assert not {m.offset for m in delivered} & world.acked, "an ack was lost"
            assert host.engine.recovery.clean_shutdown, "a repaired broker shuts down cleanly"
        finally:
            await host.aclose()

    asyncio.run(after_restart())
    assert not os.path.exists(os.path.join(data_dir, "WRITE_PROBE"))


async def still_serving(host: Host) -> None:
    """Another log on the same disk publishes, delivers and acks."""
    await host.publish("other", [Outgoing(value=b"other")])
    messages = await host.receive("other", "other", max_messages=10)
    assert messages
    assert host.door(TRUSTED).ack("other", "other", [m.receipt for m in messages]) == []


def test_a_metadata_write_that_cannot_be_taken_back_is_repaired_by_the_storage_watch(
    data_dir: str,
) -> None:
    """The journal record's sync fails and so does its undo: the record may be on disk, so
    definition changes are refused (and /readyz says why) until the storage watch, once the
    disk takes writes, cuts the journal back to what was committed."""
    clock = ManualClock()
    fs = FaultFS()

    async def run_case() -> None:
        host = await start_host(data_dir, clock, fs)
        world = World(host)
        try:
            await world.setup()
            fs.arm("fdatasync", errno.EIO, "metadata.json.journal", written=True)
            fs.arm("truncate", errno.EIO, "metadata.json.journal")
            with pytest.raises(RoostError):
                world.door.create_topic("lost")
            with pytest.raises(RoostError, match="until it is repaired"):
                world.door.create_topic("refused")
            with pytest.raises(RoostError, match="until it is repaired"):
                await host.check_ready()
            await still_serving(host)
            fs.disarm()
            await host.storage.check()
            await host.check_ready()
            world.door.create_topic("after")
        finally:
            await host.aclose()
        host = await start_host(data_dir, clock, fs)
        try:
            topics = host.engine.list_topics()
            assert "after" in topics and "lost" not in topics and "refused" not in topics
        finally:
            await host.aclose()

    asyncio.run(run_case())


@pytest.mark.parametrize(
    ("operation", "error"),
    [("mkdir", errno.EMFILE), ("mkdir", errno.ENOSPC), ("open_rw", errno.EIO)],
)
def test_a_journal_whose_files_cannot_be_made_fails_one_delivery_and_loses_nothing(
    data_dir: str, operation: str, error: int
) -> None:
    """A queue's create makes no file (lazy creation); its subscription's journal is made by
    the first delivery. When that cannot make it, the delivery fails with a Roost error, the
    broker serves on, and the message comes again once its lease ends, then is acked for good."""
    clock = ManualClock()
    fs = FaultFS()

    async def run_case() -> None:
        host = await start_host(data_dir, clock, fs)
        try:
            host.door(TRUSTED).create_queue("jobs")
            host.door(TRUSTED).create_queue("other")
            assert not os.path.exists(os.path.join(data_dir, "topics", "jobs"))
            await host.publish("jobs", [Outgoing(value=b"job")])
            fault = fs.arm(operation, error, "/journals/")
            with pytest.raises(RoostError):
                await host.receive("jobs", "jobs")
            assert fault.hits == 1
            fs.disarm()
            await still_serving(host)
            await host.check_ready()
            # Out of descriptors, the journal owes a snapshot (it carries the lost entry), which
            # the host's tick writes first; then the lease ends and the message is due again.
            await host._snapshot_journals()
            clock.advance(31_000)
            host._broker.tick()
            [message] = await host.receive("jobs", "jobs")
            assert message.value == b"job"
            assert host.door(TRUSTED).ack("jobs", "jobs", [message.receipt]) == []
        finally:
            await host.aclose()
        host = await start_host(data_dir, clock, LocalFS())
        try:
            assert await host.receive("jobs", "jobs") == [], "the ack was kept"
        finally:
            await host.aclose()

    asyncio.run(run_case())
