"""``ProcessedMessages`` and ``message_key``: effects once per message, on sqlite3."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import roost
from roost import Delivery
from roost.client.idempotency import (
    DEDUP_HEADER,
    MAX_KEY_CHARS,
    ProcessedMessages,
    SqlParams,
    message_key,
    paramstyle_of,
)
from roost.client.worker import Worker
from roost.clock import ManualClock
from roost.core.retry import RetryPolicy
from roost.core.stats import SubscriptionStats
from roost.errors import InvalidConfig
from tests.embedded_support import run


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE sent (value BLOB)")
    yield connection
    connection.close()


def sent(connection: sqlite3.Connection) -> list[bytes]:
    return [row[0] for row in connection.execute("SELECT value FROM sent ORDER BY rowid")]


def apply(connection: sqlite3.Connection, processed: ProcessedMessages, message: Delivery) -> bool:
    """The recipe from the module docstring: effects and key in one transaction."""
    with connection, processed.once(message_key(message)) as fresh:
        if fresh:
            connection.execute("INSERT INTO sent VALUES (?)", (message.value,))
    return fresh


def test_a_redelivery_does_not_repeat_the_effects(
    data_dir: str, clock: ManualClock, db: sqlite3.Connection
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        processed = ProcessedMessages(db, clock=clock)
        processed.create_table()
        processed.create_table()  # idempotent
        await broker.create_queue("q", visibility_timeout=10)
        await broker.publish("q", b"welcome")
        [first] = await broker.receive("q")
        assert apply(db, processed, first)
        clock.advance(10_000)  # committed, but the ack never came: the lease runs out
        [again] = await broker.receive("q")
        assert again.delivery_count == 2
        assert not apply(db, processed, again)
        await again.ack()
        assert sent(db) == [b"welcome"]

    run(data_dir, clock, body)


def test_a_worker_whose_ack_failed_applies_the_effects_once(
    data_dir: str, clock: ManualClock, db: sqlite3.Connection
) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        processed = ProcessedMessages(db, clock=clock)
        processed.create_table()
        await broker.create_queue("q")
        await broker.publish("q", b"charge 10")
        worker = Worker(broker)
        outcomes: list[bool] = []

        @worker.handler("q", retry=RetryPolicy(kind="fixed", base_ms=0, max_ms=0, jitter=0))
        async def handle(message: Delivery) -> None:
            outcomes.append(apply(db, processed, message))
            if message.delivery_count == 1:
                raise ConnectionError("lost after the commit")  # as a crash before the ack

        running = asyncio.create_task(worker.run())
        async with asyncio.timeout(5):
            while len(outcomes) < 2 or not await _drained(broker):
                await asyncio.sleep(0.002)
        worker.stop()
        await asyncio.wait_for(running, 5)
        assert outcomes == [True, False]
        assert sent(db) == [b"charge 10"]

    run(data_dir, clock, body)


async def _drained(broker: roost.EmbeddedBroker) -> bool:
    stats = await broker.stats("q")
    assert isinstance(stats, SubscriptionStats)
    return (stats.backlog, stats.in_flight) == (0, 0)


def test_a_rollback_leaves_no_key(db: sqlite3.Connection) -> None:
    processed = ProcessedMessages(db)
    processed.create_table()
    with pytest.raises(RuntimeError), db, processed.once("q:q/0@0") as fresh:
        assert fresh
        db.execute("INSERT INTO sent VALUES (?)", (b"half",))
        raise RuntimeError("effect failed")
    assert sent(db) == []
    with db, processed.once("q:q/0@0") as fresh:
        assert fresh, "the key went with the rollback"
    with db, processed.once("q:q/0@0") as fresh:
        assert not fresh


def test_a_second_transaction_on_one_key_fails_until_the_first_ends(tmp_path: Path) -> None:
    path = f"{tmp_path}/app.db"
    first, second = sqlite3.connect(path, timeout=0), sqlite3.connect(path, timeout=0)
    try:
        ProcessedMessages(first).create_table()
        with first, ProcessedMessages(first).once("k") as fresh:
            assert fresh
            with pytest.raises(sqlite3.OperationalError), ProcessedMessages(second).once("k"):
                pass  # locked: roll back, the message comes back
            second.rollback()
        with second, ProcessedMessages(second).once("k") as fresh:
            assert not fresh
    finally:
        first.close()
        second.close()


def test_message_keys_by_position_or_dedup_header(data_dir: str, clock: ManualClock) -> None:
    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        for name in ("a", "b"):
            await broker.create_subscription("t", name, start="earliest", visibility_timeout=1)
        await broker.publish("t", b"x")
        await broker.publish("t", b"x")  # republished: same content, a new offset
        await broker.publish("t", b"y", headers=[(DEDUP_HEADER, b"order-17")])
        await broker.publish("t", b"y", headers=[(DEDUP_HEADER, b"order-17")])
        first = await broker.receive("t", "a", max_messages=10)
        keys = [message_key(m) for m in first]
        assert keys == ["a:t/0@0", "a:t/0@1", "a:t:id:order-17", "a:t:id:order-17"]
        assert message_key(first[0], header=None) == "a:t/0@0"
        assert message_key(first[2], header=None) == "a:t/0@2"
        clock.advance(1000)
        again = await broker.receive("t", "a", max_messages=10)
        assert [m.delivery_count for m in again] == [2, 2, 2, 2]
        assert [message_key(m) for m in again] == keys, "a redelivery keeps its key"
        [other, *_] = await broker.receive("t", "b", max_messages=10)
        assert message_key(other) == "b:t/0@0", "subscriptions do not share keys"
        long_name = "x" * 249
        await broker.create_topic(long_name)
        await broker.create_subscription(
            long_name, long_name, start="earliest", dead_letter=None, max_deliveries=None
        )
        await broker.publish(long_name, b"z")
        [long] = await broker.receive(long_name, long_name)
        key = message_key(long)
        assert key.startswith("sha256:") and len(key) <= MAX_KEY_CHARS

    run(data_dir, clock, body)


def test_prune_removes_old_keys_only(db: sqlite3.Connection, clock: ManualClock) -> None:
    processed = ProcessedMessages(db, "processed", clock=clock, paramstyle="named")
    processed.create_table()
    with db, processed.once("old"):
        pass
    clock.advance(10_000)
    with db, processed.once("new"):
        pass
    assert processed.prune(older_than=5) == 1
    with db, processed.once("new") as fresh:
        assert not fresh
    with db, processed.once("old") as fresh:
        assert fresh


def test_placeholders_for_every_paramstyle() -> None:
    template = "UPDATE t SET a = {a} WHERE b = {b}"
    expected = {
        "qmark": ("UPDATE t SET a = ? WHERE b = ?", (1, 2)),
        "numeric": ("UPDATE t SET a = :1 WHERE b = :2", (1, 2)),
        "named": ("UPDATE t SET a = :a WHERE b = :b", {"a": 1, "b": 2}),
        "format": ("UPDATE t SET a = %s WHERE b = %s", (1, 2)),
        "pyformat": ("UPDATE t SET a = %(a)s WHERE b = %(b)s", {"a": 1, "b": 2}),
    }
    for style, (sql, parameters) in expected.items():
        assert SqlParams(style).bind(template, b=2, a=1) == (sql, parameters)  # type: ignore[arg-type]
    assert SqlParams("qmark").bind_many("{a}, {b}", [{"a": 1, "b": 2}, {"a": 3, "b": 4}]) == (
        "?, ?",
        [(1, 2), (3, 4)],
    )


def test_refusals(db: sqlite3.Connection) -> None:
    assert paramstyle_of(db) == "qmark"
    with pytest.raises(InvalidConfig):
        paramstyle_of(object())
    with pytest.raises(InvalidConfig):
        ProcessedMessages(db, "processed; DROP TABLE sent")
    with pytest.raises(InvalidConfig):
        SqlParams("percent")  # type: ignore[arg-type]
    processed = ProcessedMessages(db)
    processed.create_table()
    with pytest.raises(InvalidConfig), processed.once("k" * (MAX_KEY_CHARS + 1)):
        pass
