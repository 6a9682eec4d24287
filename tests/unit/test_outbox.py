"""``Outbox`` and ``OutboxRelay``: published once, in order, if and only if the rows committed.

A relay "crash" between publishing and marking rows sent is a fault injected at the database
seam: a connection whose UPDATE or DELETE fails.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import roost
from roost import Delivery
from roost.client.idempotency import DEDUP_HEADER, ProcessedMessages, message_key
from roost.client.outbox import Outbox, OutboxRelay
from roost.clock import ManualClock
from roost.errors import InvalidConfig, InvalidName, UnknownTopic
from tests.embedded_support import run

_inspections = itertools.count()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "app.db")


@pytest.fixture
def app(db_path: str, clock: ManualClock) -> Iterator[tuple[sqlite3.Connection, Outbox]]:
    """The application's connection and its outbox (table created)."""
    connection = sqlite3.connect(db_path)
    outbox = Outbox(connection, clock=clock)
    outbox.create_table()
    outbox.create_table()  # idempotent
    yield connection, outbox
    connection.close()


async def contents(broker: roost.EmbeddedBroker, topic: str) -> list[Delivery]:
    """Every record of ``topic``, through a new subscription reading from the start."""
    name = f"inspect-{next(_inspections)}"
    await broker.create_subscription(topic, name, start="earliest", max_deliveries=None,
                                     dead_letter=None)  # fmt: skip
    return await broker.receive(topic, name, max_messages=100)


class FailingCursor:
    def __init__(self, cursor: sqlite3.Cursor, fail_on: str) -> None:
        self._cursor = cursor
        self._fail_on = fail_on

    rowcount = property(lambda self: self._cursor.rowcount)

    def _check(self, operation: str) -> None:
        if operation.startswith(self._fail_on):
            raise sqlite3.OperationalError("injected: the relay died here")

    def execute(self, operation: str, parameters: Any = (), /) -> object:
        self._check(operation)
        return self._cursor.execute(operation, parameters)

    def executemany(self, operation: str, seq_of_parameters: Any, /) -> object:
        self._check(operation)
        return self._cursor.executemany(operation, seq_of_parameters)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def close(self) -> None:
        self._cursor.close()


class FailingConnection:
    """A sqlite3 connection whose statements starting with ``fail_on`` fail."""

    def __init__(self, path: str, fail_on: str) -> None:
        self._connection = sqlite3.connect(path)
        self._fail_on = fail_on
        self.closed = False

    def cursor(self) -> FailingCursor:
        return FailingCursor(self._connection.cursor(), self._fail_on)

    def commit(self) -> None:
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()

    def close(self) -> None:
        self.closed = True
        self._connection.close()


def test_rows_are_published_in_order_once(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        for topic in ("orders", "audit"):
            await broker.create_topic(topic)
        with connection:
            outbox.add("orders", b"o1", key=b"order-1", headers=[("kind", b"created")])
            outbox.add("orders", b"o2", key=b"order-1")
            outbox.add("audit", b"a1")
            ids = [outbox.add("orders", b"o3", dedup_id="order-1-shipped")]
        relay_db = sqlite3.connect(db_path)
        relay = OutboxRelay(relay_db, broker, clock=clock)
        assert await relay.run_once() == 4
        assert await relay.run_once() == 0, "sent rows are not published again"
        orders = await contents(broker, "orders")
        assert [(m.value, m.key) for m in orders] == [
            (b"o1", b"order-1"), (b"o2", b"order-1"), (b"o3", None),
        ]  # fmt: skip
        assert orders[0].headers[0] == ("kind", b"created")
        assert orders[2].message.header(DEDUP_HEADER) == ids[0].encode()
        assert all(m.message.header(DEDUP_HEADER) for m in orders)
        assert [m.value for m in await contents(broker, "audit")] == [b"a1"]
        assert connection.execute("SELECT count(*) FROM roost_outbox").fetchone() == (0,)
        relay_db.close()

    run(data_dir, clock, body)


def test_only_committed_rows_are_published(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        relay = OutboxRelay(lambda: sqlite3.connect(db_path, timeout=0), broker)
        outbox.add("t", b"not yet")  # an open transaction
        assert await relay.run_once() == 0
        connection.rollback()
        assert await relay.run_once() == 0
        with connection:
            outbox.add("t", b"committed")
        assert await relay.run_once() == 1
        assert [m.value for m in await contents(broker, "t")] == [b"committed"]
        relay.close()

    run(data_dir, clock, body)


def test_a_relay_crash_between_publish_and_mark_is_deduplicated(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        with connection:
            for i in range(5):
                outbox.add("t", b"%d" % i)
        opened: list[FailingConnection] = []

        def factory() -> FailingConnection:
            # The first connection fails to mark rows sent; the next one is healthy.
            opened.append(FailingConnection(db_path, "DELETE" if not opened else "-"))
            return opened[-1]

        relay = OutboxRelay(factory, broker, paramstyle="qmark")
        with pytest.raises(sqlite3.OperationalError):
            await relay.run_once()
        assert opened[0].closed, "a failed connection is closed and replaced"
        assert connection.execute("SELECT count(*) FROM roost_outbox").fetchone() == (5,)
        clock.advance(60_000)  # the relay restarts a minute later, inside the dedup window
        assert await relay.run_once() == 5
        assert [m.value for m in await contents(broker, "t")] == [b"%d" % i for i in range(5)]
        assert (await broker.describe_topic("t")).partitions[0].end_offset == 5
        assert await relay.run_once() == 0
        relay.close()

    run(data_dir, clock, body)


def test_past_the_dedup_window_the_header_lets_consumers_skip_the_copy(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_queue("payments")
        with connection:
            outbox.add("payments", b"charge 10")
        crashing = FailingConnection(db_path, "DELETE")
        with pytest.raises(sqlite3.OperationalError):
            await OutboxRelay(crashing, broker, paramstyle="qmark").run_once()
        crashing.close()
        clock.advance(6 * 60_000)  # past the 5-minute window: the broker stores a copy
        assert await OutboxRelay(connection, broker).run_once() == 1
        [first, copy] = await broker.receive("payments", max_messages=10)
        assert first.offset != copy.offset
        consumer_db = sqlite3.connect(":memory:")
        consumer_db.execute("CREATE TABLE charges (value BLOB)")
        processed = ProcessedMessages(consumer_db)
        processed.create_table()
        for message in (first, copy):
            with consumer_db, processed.once(message_key(message)) as fresh:
                if fresh:
                    consumer_db.execute("INSERT INTO charges VALUES (?)", (message.value,))
            await message.ack()
        assert consumer_db.execute("SELECT count(*) FROM charges").fetchone() == (1,)
        consumer_db.close()

    run(data_dir, clock, body)


def test_mark_mode_keeps_sent_rows_until_pruned(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        with connection:
            for i in range(5):
                outbox.add("t", b"%d" % i)
        relay = OutboxRelay(
            lambda: sqlite3.connect(db_path), broker, after_publish="mark", clock=clock
        )
        assert [await relay.run_once(max_messages=2) for _ in range(4)] == [2, 2, 1, 0]
        assert [m.value for m in await contents(broker, "t")] == [b"%d" % i for i in range(5)]
        unsent = "SELECT count(*) FROM roost_outbox WHERE sent_at_ms IS NULL"
        assert connection.execute(unsent).fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM roost_outbox").fetchone() == (5,)
        clock.advance(10_000)
        with connection:
            outbox.add("t", b"late")
        assert await relay.run_once() == 1
        assert outbox.prune_sent(older_than=5) == 5
        assert connection.execute("SELECT count(*) FROM roost_outbox").fetchone() == (1,)
        assert await relay.run_once() == 0
        relay.close()

    run(data_dir, clock, body)


def test_run_publishes_on_wake_and_returns_on_stop(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        relay = OutboxRelay(lambda: sqlite3.connect(db_path), broker)
        running = asyncio.create_task(relay.run(interval=3600))
        await asyncio.sleep(0.01)
        with connection:
            outbox.add("t", b"now")
        relay.wake()
        async with asyncio.timeout(5):
            while (await broker.describe_topic("t")).partitions[0].end_offset == 0:
                await asyncio.sleep(0.002)
        relay.stop()
        await asyncio.wait_for(running, 5)
        relay.close()

    run(data_dir, clock, body)


def test_run_retries_after_a_database_error(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        await broker.create_topic("t")
        with connection:
            outbox.add("t", b"once")
        opened: list[FailingConnection] = []

        def factory() -> FailingConnection:
            opened.append(FailingConnection(db_path, "SELECT" if not opened else "-"))
            return opened[-1]

        relay = OutboxRelay(factory, broker, paramstyle="qmark")
        running = asyncio.create_task(relay.run(interval=0.005))
        async with asyncio.timeout(5):
            while (await broker.describe_topic("t")).partitions[0].end_offset == 0:
                await asyncio.sleep(0.002)
        relay.stop()
        await asyncio.wait_for(running, 5)
        assert len(opened) == 2 and opened[0].closed
        relay.close()

    run(data_dir, clock, body)


def test_run_ends_on_an_error_that_retrying_cannot_fix(
    data_dir: str, clock: ManualClock, db_path: str, app: tuple[sqlite3.Connection, Outbox]
) -> None:
    connection, outbox = app

    async def body(broker: roost.EmbeddedBroker) -> None:
        with connection:
            outbox.add("missing", b"x")
        relay = OutboxRelay(lambda: sqlite3.connect(db_path), broker)
        with pytest.raises(UnknownTopic):
            await asyncio.wait_for(relay.run(interval=3600), 5)
        assert connection.execute("SELECT count(*) FROM roost_outbox").fetchone() == (1,)
        relay.close()

    run(data_dir, clock, body)


def test_refusals(app: tuple[sqlite3.Connection, Outbox]) -> None:
    connection, outbox = app
    with pytest.raises(InvalidName):
        outbox.add("bad topic", b"x")
    with pytest.raises(InvalidConfig):
        outbox.add("t", b"x", dedup_id="")
    with pytest.raises(InvalidConfig):
        outbox.pending(0)
    with pytest.raises(InvalidConfig):
        Outbox(connection, "roost_outbox where 1=1")
    connection.rollback()
