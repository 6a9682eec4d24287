"""Redrive tasks (server/redrive_tasks.py, issue 15 item 10): a redrive started in the
background, followed with its progress, cancelled, refused while one runs on the same
dead-letter topic, and resumed after the broker closes — embedded and over the network."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import roost
from roost.clock import ManualClock
from roost.core.redrive import RedriveTask
from roost.errors import InvalidConfig, InvalidRequest, UnknownRedriveTask
from tests.embedded_support import WAYS, run_either


async def dead_letters(broker: Any, queue: str, count: int) -> None:
    """``count`` messages of ``queue`` in its dead-letter topic (max_deliveries=1)."""
    await broker.create_queue(queue, max_deliveries=1, durability="never")
    for n in range(count):
        await broker.publish(queue, b"job %d" % n)
    for delivery in await broker.receive(queue, max_messages=count):
        await delivery.nack(error="boom")
    async with asyncio.timeout(5):  # each dead letter appended, and its original settled
        while (stats := await broker.queue_stats(queue)).dead_letters < count or stats.backlog:
            await asyncio.sleep(0.01)


async def finished(broker: Any, task: RedriveTask) -> RedriveTask:
    async with asyncio.timeout(10):
        while True:
            [now] = [t for t in await broker.redrive_tasks() if t.id == task.id]
            if now.state != "running":
                return now
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("where", WAYS)
def test_a_task_moves_every_dead_letter_back(
    where: str, tmp_path: Path, clock: ManualClock
) -> None:
    async def body(broker: Any) -> None:
        await dead_letters(broker, "jobs", 5)
        task = await broker.start_redrive("jobs.dlq", source_topic="jobs", rate=1000)
        assert (task.state, task.to_move, task.dead_letter_topic) == ("running", 5, "jobs.dlq")
        done = await finished(broker, task)
        assert (done.state, done.moved, done.error) == ("completed", 5, None)
        assert done.finished_ms is not None
        stats = await broker.queue_stats("jobs")
        assert (stats.depth, stats.dead_letters) == (5, 0)
        assert [t.id for t in await broker.redrive_tasks("jobs.dlq")] == [task.id]
        assert await broker.redrive_tasks("other.dlq") == []

    run_either(where, tmp_path, clock, body)


@pytest.mark.parametrize("where", WAYS)
def test_one_task_at_a_time_per_topic_and_cancel(
    where: str, tmp_path: Path, clock: ManualClock
) -> None:
    async def body(broker: Any) -> None:
        await dead_letters(broker, "jobs", 3)
        slow = await broker.start_redrive("jobs.dlq", rate=0.001)  # one letter, then a wait
        with pytest.raises(InvalidRequest, match=f"redrive task {slow.id} is moving"):
            await broker.start_redrive("jobs.dlq")
        with pytest.raises(UnknownRedriveTask):
            await broker.cancel_redrive("other.dlq", slow.id)  # not through another topic
        with pytest.raises(UnknownRedriveTask):
            await broker.cancel_redrive("jobs.dlq", "no-such-task")
        cancelled = await broker.cancel_redrive("jobs.dlq", slow.id)
        assert cancelled.state == "cancelled" and cancelled.moved <= 1
        again = await broker.cancel_redrive("jobs.dlq", slow.id)
        assert again == cancelled, "cancelling a finished task changes nothing"
        rest = await finished(broker, await broker.start_redrive("jobs.dlq", rate=1000))
        assert rest.moved + cancelled.moved == 3
        with pytest.raises(InvalidConfig):
            await broker.start_redrive("jobs.dlq", rate=float("inf"))

    run_either(where, tmp_path, clock, body)


def test_a_task_running_when_the_broker_closes_runs_again_when_it_opens(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = str(tmp_path / "data")

    async def body() -> None:
        async with roost.open(path, clock=clock) as broker:
            await dead_letters(broker, "jobs", 4)
            task = await broker.start_redrive("jobs.dlq", rate=1000)
        # Closed before its first batch: saved as running.
        async with roost.open(path, clock=clock) as broker:
            done = await finished(broker, task)
            assert (done.state, done.moved) == ("completed", 4)
            assert (await broker.queue_stats("jobs")).depth == 4
        async with roost.open(path, clock=clock) as broker:
            [kept] = await broker.redrive_tasks()
            assert kept == done, "finished tasks are kept across restarts"

    asyncio.run(body())
