"""Every time argument of the client takes seconds (int or float) or a ``timedelta``, the same
way embedded and over the network; anything else is ``InvalidConfig`` naming the argument
(issue 16, item 4). ``RetryPolicy.fixed`` / ``.exponential`` say a policy in seconds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

import roost
from roost.clock import ManualClock
from roost.core.retry import RetryPolicy
from roost.errors import InvalidConfig
from tests.embedded_support import WAYS, run_either


@pytest.mark.parametrize("where", WAYS)
def test_timedeltas_are_seconds(where: str, tmp_path: Path, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        spec = await broker.create_queue(
            "q", visibility_timeout=timedelta(minutes=2), delay=timedelta(0),
            retention=timedelta(days=14), durability="never",
        )  # fmt: skip
        assert spec.visibility_timeout_ms == 120_000
        assert (await broker.describe_topic("q")).config.retention_ms == 14 * 86_400_000
        await broker.publish("q", b"later", delay=timedelta(seconds=90))
        await broker.publish("q", b"now")
        [now] = await broker.receive(
            "q", wait=timedelta(seconds=1), visibility_timeout=timedelta(seconds=10)
        )
        assert now.value == b"now"
        await now.extend(timedelta(seconds=30))
        await now.nack(delay=timedelta(seconds=5))
        assert (await broker.queue_stats("q")).delayed == 2

    run_either(where, tmp_path, clock, body)


@pytest.mark.parametrize("where", WAYS)
@pytest.mark.parametrize("bad", ["5", True, float("nan"), timedelta(seconds=-1)])
def test_anything_else_is_refused_naming_the_argument(
    where: str, bad: object, tmp_path: Path, clock: ManualClock
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        with pytest.raises(InvalidConfig) as raised:
            await broker.create_queue("q", visibility_timeout=bad)  # type: ignore[arg-type]
        assert raised.value.field == "visibility_timeout"
        assert await broker.list_topics() == []

    run_either(where, tmp_path, clock, body)


def test_retry_policies_in_seconds() -> None:
    assert RetryPolicy.fixed(5) == RetryPolicy(kind="fixed", base_ms=5_000, max_ms=5_000, jitter=0)
    assert RetryPolicy.fixed(timedelta(milliseconds=250)).base_ms == 250
    assert RetryPolicy.exponential(base=0.5, limit=timedelta(minutes=1), jitter=0.0) == (
        RetryPolicy(base_ms=500, max_ms=60_000, jitter=0.0)
    )
    assert RetryPolicy.exponential() == RetryPolicy()
    for bad in ("1", -1, float("inf"), timedelta(days=1)):
        with pytest.raises(InvalidConfig):
            RetryPolicy.fixed(bad)  # type: ignore[arg-type]


def test_a_worker_takes_timedeltas(tmp_path: Path) -> None:
    async def body() -> None:
        async with roost.open(str(tmp_path / "data")) as broker:
            worker = roost.Worker(broker, shutdown_timeout=timedelta(seconds=3))
            assert worker.shutdown_timeout == 3.0
            worker.handler("q", visibility_timeout=timedelta(seconds=45))(_handle)
            with pytest.raises(InvalidConfig):
                roost.Worker(broker, shutdown_timeout="3")  # type: ignore[arg-type]

    asyncio.run(body())


async def _handle(delivery: roost.Delivery) -> None:
    pass
