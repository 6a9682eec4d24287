"""A real ``roost serve`` on a real, tiny filesystem (12 MiB of tmpfs or of ext4 on a loop
device), filled up.

Skipped, with the reason, where a filesystem cannot be mounted (not root, no CAP_SYS_ADMIN, no
loop device); CI runs as root in a container, where both mount.

The broker's background storage watch runs on real time (about once a second), so these tests
poll for its effect in bounded loops rather than inject a clock.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import roost
from roost.client.api import Client
from roost.errors import DiskFull, RoostError
from tests.e2e.test_serve import Server, run

MiB = 1024 * 1024
#: Polls for what the storage watch does: up to 100 x 0.1 s.
POLLS, POLL_S = 100, 0.1


@pytest.fixture(params=["tmpfs", "ext4-loop"])
def small_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB filesystem: tmpfs, or ext4 on a loop device (a journaling filesystem whose
    ENOSPC may come at the write or, with delayed allocation, at the fsync)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root in a container)")
    if request.param == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)]
    else:
        image = tmp_path / "small.img"
        with open(image, "wb") as f:
            f.truncate(12 * MiB)
        made = _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
        if made is not None:
            pytest.skip(f"cannot make an ext4 image here: {made}")
        command = ["mount", "-o", "loop", str(image), str(mount)]
    failed = _run(command)
    if failed is not None:
        pytest.skip(f"cannot mount a {request.param} filesystem here: {failed}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _run(command: list[str]) -> str | None:
    """None if ``command`` succeeded, else why not."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        return str(e)
    return None if done.returncode == 0 else done.stderr.strip()


def filler(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * size)


async def publish_until_refused(broker: Client, confirmed: set[bytes], size: int) -> RoostError:
    for i in range(200):
        value = b"%06d" % len(confirmed) + b"." * size
        try:
            await broker.publish("q", value)
        except RoostError as e:
            return e
        confirmed.add(value)
        assert i < 199, "the disk never filled"
    raise AssertionError("unreachable")


async def publish_once_space_returns(broker: Client, confirmed: set[bytes]) -> None:
    for _ in range(POLLS):
        value = b"after %06d" % len(confirmed)
        try:
            await broker.publish("q", value)
        except (DiskFull, RoostError) as e:
            assert e.retriable, e
            await asyncio.sleep(POLL_S)
            continue
        confirmed.add(value)
        return
    raise AssertionError("publishes did not resume once space was freed")


async def drain(broker: Client) -> list[bytes]:
    values: list[bytes] = []
    while batch := await broker.receive("q", max_messages=100):
        values += [m.value for m in batch]
        assert await broker.ack("q", "q", [m.receipt for m in batch]) == []
    return values


def test_below_the_watermark_publishes_stop_acks_go_on_and_publishing_resumes(
    small_fs: Path,
) -> None:
    server = Server(small_fs / "data", args=("--min-free-bytes", str(4 * MiB)))
    confirmed: set[bytes] = set()

    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q")
            for i in range(5):
                value = b"early %d" % i
                await broker.publish("q", value)
                confirmed.add(value)
            free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
            filler(small_fs / "filler", free - 3 * MiB)  # leaves 3 MiB: below the watermark
            for attempt in range(POLLS):
                value = b"refused? %d" % attempt
                try:
                    await broker.publish("q", value)
                except DiskFull as refused:
                    assert refused.retriable and refused.min_free_bytes == 4 * MiB
                    assert refused.free_bytes is not None and refused.free_bytes < 4 * MiB
                    break
                confirmed.add(value)  # stored before the storage watch saw the filler
                await asyncio.sleep(POLL_S)
            else:
                raise AssertionError("publishes were never refused")
            early = await broker.receive("q", max_messages=3)
            assert early, "receives go on below the watermark"
            assert await broker.ack("q", "q", [m.receipt for m in early]) == [], "acks too"
            received = [m.value for m in early]
            os.remove(small_fs / "filler")
            await publish_once_space_returns(broker, confirmed)
            received += await drain(broker)
            assert sorted(received) == sorted(confirmed), "each confirmed message once"

    try:
        run(body)
    finally:
        assert server.stop() == 0


def test_a_real_enospc_fails_only_what_hit_it_and_heals_without_a_restart(
    small_fs: Path,
) -> None:
    server = Server(small_fs / "data", args=("--min-free-bytes", "0"))  # no watermark
    filler(small_fs / "filler", 3 * MiB)
    confirmed: set[bytes] = set()

    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q")
            refused = await publish_until_refused(broker, confirmed, 200 * 1024)
            assert refused.retriable, refused
            for _ in range(3):  # the broker answers, it does not fall over
                with pytest.raises(RoostError) as again:
                    await broker.publish("q", b"x" * 200 * 1024)
                assert again.value.retriable
            os.remove(small_fs / "filler")
            await publish_once_space_returns(broker, confirmed)
            received = await drain(broker)
            assert len(received) == len(set(received)), "no duplicates"
            assert set(received) == confirmed, "every confirmed message, nothing refused"

    try:
        run(body)
    finally:
        assert server.stop() == 0
    restarted = Server(small_fs / "data")

    async def after() -> None:
        async with roost.connect(restarted.url) as broker:
            assert await broker.receive("q", max_messages=100) == [], "acks survived"

    try:
        run(after)
    finally:
        restarted.stop()


@dataclass
class Traffic:
    """Producers and a consumer on one queue, and what each was told."""

    confirmed: set[bytes] = field(default_factory=set)
    received: list[bytes] = field(default_factory=list)
    failed_acks: int = 0

    async def produce(self, broker: Client, lane: int, attempts: int, errors_wanted: int) -> int:
        """Publish until ``errors_wanted`` retriable errors (or ``attempts``); the errors."""
        errors = 0
        for n in range(attempts):
            value = b"%d-%d-%d." % (lane, n, len(self.confirmed)) + b"." * 20_000
            try:
                await broker.publish("q", value)
            except RoostError as e:
                assert e.retriable, e
                errors += 1
                if errors == errors_wanted:
                    break
                continue
            self.confirmed.add(value)
        return errors

    async def consume(self, broker: Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                batch = await broker.receive("q", max_messages=50, wait=0.2)
            except RoostError as e:  # a delivery's journal entry found the disk full
                assert e.retriable, e
                continue
            self.received.extend(m.value for m in batch)
            try:
                await broker.ack("q", "q", [m.receipt for m in batch])
            except RoostError as e:
                assert e.retriable, e
                self.failed_acks += 1


def test_concurrent_producers_and_a_consumer_through_a_full_disk_lose_nothing(
    small_fs: Path,
) -> None:
    """Eight producers fill the disk while a consumer drains it, on one broker: publishes that
    share a failed group commit all get the error, none of them is ever delivered, every
    confirmed one is, and it all goes on once space is freed."""
    server = Server(small_fs / "data", args=("--min-free-bytes", "0"))
    filler(small_fs / "filler", 2 * MiB)
    traffic = Traffic()

    async def body() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_queue("q", visibility_timeout=1.0)
            stop = asyncio.Event()
            consuming = asyncio.create_task(traffic.consume(broker, stop))
            errors = await asyncio.gather(*(traffic.produce(broker, i, 400, 3) for i in range(8)))
            assert sum(errors) > 0, "the disk never filled"
            os.remove(small_fs / "filler")
            await publish_once_space_returns(broker, traffic.confirmed)
            await asyncio.gather(*(traffic.produce(broker, 100 + i, 5, 5) for i in range(8)))
            stop.set()
            await consuming
            for _ in range(POLLS):  # leases of failed acks run out (1 s), then redeliver
                traffic.received += await drain(broker)
                if set(traffic.received) >= traffic.confirmed:
                    break
                await asyncio.sleep(POLL_S)
            received = traffic.received
            assert set(received) == traffic.confirmed, "all confirmed, nothing that failed"
            if not traffic.failed_acks:
                assert len(received) == len(set(received)), "no duplicates"

    try:
        run(body)
    finally:
        assert server.stop() == 0
