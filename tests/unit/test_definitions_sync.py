"""Creates group-committed through the host (server/definitions_sync.py): creates arriving
together share one metadata sync, each is answered once its record is durable, a publish into
a create not yet durable is not confirmed before it, and a failed sync fails only the creates
it covered (and what was published into them)."""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.errors import ConfigConflict, StorageFailure
from roost.server.access import TRUSTED
from roost.server.host import Host
from tests.fault_fs import FaultFS, start_host


class JournalSyncs(FaultFS):
    """Counts the metadata journal's syncs, and notes them in ``events``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def fdatasync(self, fd: int) -> None:
        super().fdatasync(fd)  # raises first when a fault is armed
        if self._paths.get(fd, "").endswith("metadata.json.journal"):
            self.events.append("metadata synced")


def run(data_dir: str, fs: FaultFS, body: Callable[[Host], Awaitable[None]]) -> None:
    async def main() -> None:
        host = await start_host(data_dir, ManualClock(now_ms=1_700_000_000_000), fs)
        try:
            await body(host)
        finally:
            fs.disarm()
            await host.aclose()

    asyncio.run(main())


def out(value: bytes) -> list[Outgoing]:
    return [Outgoing(value=value)]


def test_creates_arriving_together_share_one_sync_and_are_answered_once_durable(
    data_dir: str,
) -> None:
    fs = JournalSyncs()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("warm")  # the journal exists (its own sync)
        fs.events.clear()
        rounds = host.definitions.rounds

        async def create(name: str) -> Any:
            spec = await door.durably(lambda: door.create_queue(name))
            fs.events.append(f"answered {name}")
            return spec

        specs = await asyncio.gather(*(create(f"q{i}") for i in range(4)))
        assert [spec.name for spec in specs] == ["q0", "q1", "q2", "q3"]
        assert host.definitions.rounds == rounds + 1
        assert fs.events == ["metadata synced"] + [f"answered q{i}" for i in range(4)]
        assert host.engine.metadata.durable_version == host.engine.metadata.version

    run(data_dir, fs, body)


def test_a_publish_into_a_create_not_yet_durable_is_confirmed_after_it(data_dir: str) -> None:
    fs = JournalSyncs()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("warm")
        fs.events.clear()

        creating = asyncio.ensure_future(door.durably(lambda: door.create_queue("fresh")))
        await asyncio.sleep(0)  # the create has run: "fresh" exists in memory, unsynced
        assert host.definitions.pending and not creating.done()
        outcome = host.publish_now("fresh", out(b"m"))  # appended now, before the round
        assert outcome is not None

        async def confirm() -> None:
            await host.confirm(outcome, {"fresh"})
            fs.events.append("confirmed")

        await asyncio.gather(creating, confirm())
        assert fs.events.index("metadata synced") < fs.events.index("confirmed")

    run(data_dir, fs, body)


def test_a_failed_sync_fails_the_creates_it_covered_and_what_was_published_into_them(
    data_dir: str,
) -> None:
    fs = JournalSyncs()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("old")  # durable before the fault
        fs.arm("fdatasync", errno.EIO, match="metadata.json.journal")
        creates = [
            asyncio.ensure_future(door.durably(lambda n=name: door.create_queue(n)))  # type: ignore[misc]
            for name in ("q1", "q2")
        ]
        await asyncio.sleep(0)  # both created in memory, their round not run yet
        appended = [
            host.publish_now(topic, out(v)) for topic, v in (("q1", b"lost"), ("old", b"kept"))
        ]
        into_new, into_old = (
            asyncio.ensure_future(host.confirm(outcome, {topic}))  # type: ignore[arg-type]
            for outcome, topic in zip(appended, ("q1", "old"), strict=True)
        )
        results = await asyncio.gather(*creates, into_new, into_old, return_exceptions=True)

        # (the publish: its log was closed with its topic, or its confirm found it gone)
        assert all(isinstance(r, StorageFailure) for r in results[:3]), results
        assert not isinstance(results[3], BaseException)  # its topic was durable all along
        assert not any(host.engine.has_topic(n) for n in ("q1", "q1.dlq", "q2", "q2.dlq"))
        assert [spec.name for spec in door.list_subscriptions()] == ["old"]
        assert host.engine.metadata.failure is None  # not poisoned

        # The names are free again, and everything works as if the group never happened.
        await door.durably(lambda: door.create_queue("q1"))
        await host.publish("q1", out(b"again"))
        got = await host.receive("q1", "q1", max_messages=10)
        assert [m.value for m in got] == [b"again"]
        assert [m.value for m in await host.receive("old", "old", max_messages=10)] == [b"kept"]

    run(data_dir, fs, body)


def test_a_declare_of_a_pending_create_is_answered_once_that_create_is_durable(
    data_dir: str,
) -> None:
    """Found with the same settings (returned as it is) or other ones (refused), either
    answer speaks of a create that a failed round could still undo: it waits for the round."""
    fs = JournalSyncs()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("warm")
        fs.events.clear()
        first = asyncio.ensure_future(door.durably(lambda: door.create_queue("dup")))
        await asyncio.sleep(0)

        async def same() -> None:
            await door.durably(lambda: door.create_queue("dup"))
            fs.events.append("found")

        async def other() -> None:
            try:
                await door.durably(lambda: door.create_queue("dup", fifo=True))
            except ConfigConflict:
                fs.events.append("refused")

        await asyncio.gather(first, same(), other())
        assert fs.events == ["metadata synced", "found", "refused"]

    run(data_dir, fs, body)


class QuickDisk(FaultFS):
    def fdatasync(self, fd: int) -> None:
        pass  # a sync this test times must be quick whatever the machine does


def test_a_slow_disk_sends_the_rounds_to_a_thread_until_one_is_quick(data_dir: str) -> None:
    fs = QuickDisk()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        host.definitions.disk_slow = True
        await door.durably(lambda: door.create_queue("a"))  # in a thread: quick, so back
        assert not host.definitions.disk_slow
        assert host.engine.has_topic("a")

    run(data_dir, fs, body)


@pytest.fixture
def data_dir(tmp_path: Any) -> str:
    return str(tmp_path / "data")


class HeldSync(FaultFS):
    """The metadata journal's ``fdatasync`` waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.release = threading.Event()

    def fdatasync(self, fd: int) -> None:
        if self.hold and self._paths.get(fd, "").endswith("metadata.json.journal"):
            assert self.release.wait(timeout=10)
        super().fdatasync(fd)


def test_only_a_publish_into_the_pending_create_waits_for_its_round(data_dir: str) -> None:
    fs = HeldSync()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("old")
        host.definitions.disk_slow = True  # the round goes to a thread, where it is held
        fs.hold = True
        creating = asyncio.ensure_future(door.durably(lambda: door.create_queue("fresh")))
        await asyncio.sleep(0)
        into_new = asyncio.ensure_future(host.publish("fresh", out(b"new")))
        await host.publish("old", out(b"old"))  # confirmed while the round is held
        for _ in range(50):  # turns of the loop, not time: the round is held until released
            await asyncio.sleep(0)
        assert not creating.done() and not into_new.done()
        fs.release.set()
        await asyncio.wait_for(asyncio.gather(creating, into_new), timeout=10)

    run(data_dir, fs, body)


def test_a_delete_and_a_re_create_of_a_pending_name_keep_their_order(data_dir: str) -> None:
    """Create, delete (which syncs itself, and the pending create with it), create again:
    each is ordered as committed. If the re-create's round then fails, only it is undone:
    the name is gone, as the delete left it, in memory and after a restart."""
    fs = JournalSyncs()

    async def body(host: Host) -> None:
        door = host.door(TRUSTED)
        door.create_queue("warm")
        first = asyncio.ensure_future(door.durably(lambda: door.create_queue("q")))
        await asyncio.sleep(0)
        assert host.engine.metadata.pending is not None
        door.delete_queue("q")
        assert host.engine.metadata.pending is None  # its first sync covered the create
        await first  # answered: durable with the delete's sync
        fs.arm("fdatasync", errno.EIO, match="metadata.json.journal")
        with pytest.raises(StorageFailure):
            await door.durably(lambda: door.create_queue("q"))
        assert not host.engine.has_topic("q") and host.engine.has_topic("q.dlq")

    run(data_dir, fs, body)

    async def reopened(host: Host) -> None:
        assert sorted(host.engine.list_topics()) == ["q.dlq", "warm", "warm.dlq"]

    run(data_dir, FaultFS(), reopened)  # a restart on the same directory, no faults
