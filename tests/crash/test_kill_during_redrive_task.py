"""SIGKILL a real ``roost serve`` while a redrive task moves dead letters back; restart it on
the same data directory: the task runs again by itself and finishes, and every dead letter is
back in its queue — at least once (a batch copied and not yet acked when the kill came is
copied again), never lost (issue 15 item 10)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import roost
from tests.crash.test_kill_server import Running

pytestmark = pytest.mark.crash

LETTERS = 60
RATE = 10.0  # batches of 10 a second apart: the kill lands between the first and the last


async def _dead_letters(url: str) -> str:
    async with roost.connect(url) as broker:
        await broker.create_queue("mail", max_deliveries=1)
        for n in range(LETTERS):
            await broker.publish("mail", b"mail %d" % n)
        taken = 0
        while taken < LETTERS:
            for delivery in await broker.receive("mail", max_messages=LETTERS, wait=1):
                await delivery.nack(error="smtp 550")
                taken += 1
        async with asyncio.timeout(10):
            while (s := await broker.queue_stats("mail")).dead_letters < LETTERS or s.backlog:
                await asyncio.sleep(0.01)
        task = await broker.start_redrive("mail.dlq", source_topic="mail", rate=RATE)
        async with asyncio.timeout(10):  # some, not all, moved when the kill comes
            while not 0 < (await broker.queue_stats("mail")).depth < LETTERS:
                await asyncio.sleep(0.005)
        return task.id


async def _after_restart(url: str, task_id: str) -> None:
    async with roost.connect(url) as broker:
        async with asyncio.timeout(30):
            while True:
                [task] = [t for t in await broker.redrive_tasks() if t.id == task_id]
                if task.state != "running":
                    break
                await asyncio.sleep(0.05)
        assert task.state == "completed", task
        values: set[bytes] = set()
        while deliveries := await broker.receive("mail", max_messages=100):
            values.update(d.value for d in deliveries)
            for delivery in deliveries:
                await delivery.ack()
        assert values == {b"mail %d" % n for n in range(LETTERS)}, "every letter is back"
        assert (await broker.queue_stats("mail")).dead_letters == 0


def test_a_killed_redrive_task_resumes_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Running(data)
    try:
        task_id = asyncio.run(_dead_letters(first.url))
        first.kill()
        first.wait(-9)
    finally:
        first.close()
    second = Running(data)
    try:
        asyncio.run(_after_restart(second.url, task_id))
        second.stop()
    finally:
        second.close()
