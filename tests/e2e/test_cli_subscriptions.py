"""``roost subscription ...``, ``roost group ...``, tables read from a pipe, ``stats --watch``
rates and ``publish``'s summary when interrupted, against a real ``roost serve`` (issue 16,
item 9)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

import roost
from roost.cli import monitoring
from roost.cli.main import main
from roost.cli.monitoring import Rates
from roost.cli.render import stats_table
from roost.core.stats import SubscriptionStats
from tests.e2e.test_serve import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("cli-subs") / "data")
    yield running
    running.stop()


def cli(server: Server, *args: str, input: Any = None) -> Result:
    return CliRunner().invoke(
        main, ["--url", server.url, "--admin-url", server.admin_url, *args], input=input
    )


def ok(server: Server, *args: str) -> Any:
    result = cli(server, *args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def error_line(server: Server, *args: str) -> str:
    result = cli(server, *args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    return line


def with_client(server: Server, body: Any) -> Any:
    async def session() -> Any:
        async with roost.connect(server.url) as broker:
            return await body(broker)

    return asyncio.run(session())


def test_subscriptions_create_list_describe_delete(server: Server) -> None:
    ok(server, "topic", "create", "s-orders", "--durability", "never")
    spec = ok(server, "subscription", "create", "s-orders", "billing", "--start", "earliest",
              "--visibility-timeout", "5", "--max-deliveries", "3")  # fmt: skip
    assert (spec["mode"], spec["start"], spec["dead_letter"]) == (
        "queue", "earliest", "s-orders.billing.dlq",
    )  # fmt: skip
    again = ok(server, "subscription", "create", "s-orders", "billing", "--start", "earliest",
               "--visibility-timeout", "5", "--max-deliveries", "3")  # fmt: skip
    assert again == spec, "a declare: the same settings again are fine"
    conflict = error_line(server, "subscription", "create", "s-orders", "billing")
    assert conflict.startswith("error: subscription 's-orders/billing' already exists with other")
    assert "visibility_timeout_ms is 5000 (5 s), not 30000 (30 s)" in conflict

    ok(server, "subscription", "create", "s-orders", "audit", "--mode", "stream")
    forever = ok(server, "subscription", "create", "s-orders", "retry", "--retry-forever")
    assert (forever["max_deliveries"], forever["dead_letter"]) == (None, None)
    with_client(server, lambda b: b.publish("s-orders", b"order 1"))

    listed = ok(server, "subscription", "list", "s-orders")
    assert [s["name"] for s in listed] == ["audit", "billing", "retry"]
    described = ok(server, "subscription", "describe", "s-orders", "billing")
    assert described["settings"]["visibility_timeout_ms"] == 5000
    assert described["stats"]["depth"] == 1
    table = cli(server, "subscription", "describe", "s-orders", "billing")
    assert table.exit_code == 0 and "visibility timeout" in table.stdout

    assert ok(server, "subscription", "delete", "s-orders", "retry", "--yes") == {
        "deleted": "s-orders/retry"
    }
    refused = cli(server, "subscription", "delete", "s-orders", "audit")
    assert refused.exit_code == 2 and "--yes" in refused.stderr  # no terminal to ask
    assert [s["name"] for s in ok(server, "subscription", "list", "s-orders")] == [
        "audit", "billing",
    ]  # fmt: skip


def test_a_piped_table_is_never_cut(server: Server) -> None:
    long_name = "a-subscription-with-a-name-long-enough-to-overflow-eighty-columns-" + "x" * 40
    ok(server, "topic", "create", "s-wide", "--durability", "never")
    ok(server, "subscription", "create", "s-wide", long_name, "--mode", "stream")
    result = cli(server, "subscription", "list", "s-wide")
    assert result.exit_code == 0
    [row] = [line for line in result.stdout.splitlines() if long_name in line]
    assert "s-wide" in row and "stream" in row, "one row, every column, nothing cut"


def test_groups_list_describe_seek(server: Server) -> None:
    ok(server, "topic", "create", "s-clicks", "--partitions", "2", "--durability", "never")
    ok(server, "subscription", "create", "s-clicks", "analytics", "--mode", "stream",
       "--start", "earliest")  # fmt: skip

    async def consume(broker: roost.Client) -> None:
        for n in range(6):
            await broker.publish("s-clicks", b"click %d" % n, partition=n % 2)
        member = await broker.join("s-clicks", "analytics")
        assert len(await member.fetch(max_records=100)) == 6
        await member.commit()
        await member.leave()

    with_client(server, consume)
    [listed] = ok(server, "group", "list", "s-clicks")
    assert (listed["group"], listed["lag"], listed["members"]) == ("analytics", 0, [])
    described = ok(server, "group", "describe", "s-clicks", "analytics")
    assert [p["committed"] for p in described["partitions"]] == [3, 3]

    moved = ok(server, "group", "seek", "s-clicks", "analytics", "--to", "earliest",
               "--partition", "1", "--yes")  # fmt: skip
    assert [p["committed"] for p in moved["partitions"]] == [3, 0]
    assert moved["lag"] == 3
    moved = ok(server, "group", "seek", "s-clicks", "analytics", "--to", "2", "--yes")
    assert [p["committed"] for p in moved["partitions"]] == [2, 2]
    table = cli(server, "group", "describe", "s-clicks", "analytics")
    assert table.exit_code == 0 and "committed" in table.stdout

    async def busy(broker: roost.Client) -> str:
        member = await broker.join("s-clicks", "analytics")
        try:
            return error_line(server, "group", "seek", "s-clicks", "analytics", "--to",
                              "latest", "--yes")  # fmt: skip
        finally:
            await member.leave()

    assert "member" in with_client(server, busy)
    usage = cli(server, "group", "seek", "s-clicks", "analytics", "--yes")
    assert usage.exit_code == 2 and "--to" in usage.stderr
    bad = cli(server, "group", "seek", "s-clicks", "analytics", "--to", "soon", "--yes")
    assert bad.exit_code == 2 and "earliest, latest or an offset" in bad.stderr
    missing = error_line(server, "group", "describe", "s-clicks", "nobody")
    assert missing == "error: topic 's-clicks' has no subscription 'nobody'"


def test_watch_rates_are_per_second_between_two_looks() -> None:
    rates = Rates()
    assert rates.update(10.0, published=100, finished=40) is None
    assert rates.update(12.0, published=300, finished=90) == {
        "published_per_s": 100.0, "finished_per_s": 25.0,
    }  # fmt: skip
    assert rates.update(12.0, published=400, finished=90) is None, "no time: no rate"
    stats = SubscriptionStats("q", "q", "queue", 5, 1, 0, 4, None, "q.dlq", 0, [])
    table = stats_table(stats, {"published_per_s": 1234.5, "finished_per_s": 0.0})
    assert table.caption == "published 1,234.5/s · finished 0.0/s"


def test_watch_prints_rates_from_the_second_look(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(server, "queue", "create", "s-watched")
    # Two looks, then Ctrl-C (the way --watch ends: exit 0).
    looks = iter([None, KeyboardInterrupt()])

    async def pause(seconds: float) -> None:
        await asyncio.sleep(0.05)  # a little time between the looks, for a rate
        step = next(looks)
        if step is not None:
            raise step

    monkeypatch.setattr(monitoring, "pause", pause)
    result = cli(server, "stats", "s-watched", "--watch", "0.1", "--json")
    assert result.exit_code == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["rates"] is None
    assert second["rates"] == {"published_per_s": 0.0, "finished_per_s": 0.0}
    assert second["depth"] == 0


class _InterruptedInput(io.BytesIO):
    """stdin whose reader presses Ctrl-C after ``lines`` lines."""

    def __init__(self, lines: int) -> None:
        super().__init__(b"".join(b"line %d\n" % n for n in range(lines)))
        self._left = lines

    def readline(self, size: int | None = -1) -> bytes:
        if self._left == 0:
            raise KeyboardInterrupt
        self._left -= 1
        return super().readline(size)

    def __iter__(self) -> _InterruptedInput:
        return self

    def __next__(self) -> bytes:
        return self.readline()


def test_an_interrupted_publish_says_what_was_confirmed(server: Server) -> None:
    ok(server, "queue", "create", "s-bulk")
    result = cli(server, "publish", "s-bulk", "-", input=_InterruptedInput(1200))
    assert result.exit_code == 130
    # 1,200 lines read: two full batches of 500 were confirmed, the last 200 never sent.
    assert result.stderr.splitlines() == [
        "interrupted: 1000 messages published and confirmed; nothing after them was sent"
    ]
    assert ok(server, "queue", "describe", "s-bulk")["depth"] == 1000


def test_redrive_tasks_from_the_command_line(server: Server) -> None:
    ok(server, "queue", "create", "s-mail", "--max-deliveries", "1")

    async def dead(broker: roost.Client) -> None:
        for n in range(3):
            await broker.publish("s-mail", b"mail %d" % n)
        for delivery in await broker.receive("s-mail", max_messages=3):
            await delivery.nack(error="smtp 550")
        async with asyncio.timeout(5):
            while (stats := await broker.queue_stats("s-mail")).dead_letters < 3 or stats.backlog:
                await asyncio.sleep(0.01)

    with_client(server, dead)
    task = ok(server, "dlq", "redrive", "s-mail", "--background", "--rate", "1000")
    assert (task["state"], task["to_move"], task["dead_letter_topic"]) == (
        "running", 3, "s-mail.dlq",
    )  # fmt: skip

    async def finished(broker: roost.Client) -> None:
        async with asyncio.timeout(5):
            while (await broker.redrive_tasks())[0].state == "running":
                await asyncio.sleep(0.01)

    with_client(server, finished)
    [listed] = ok(server, "dlq", "tasks", "s-mail")
    assert (listed["id"], listed["state"], listed["moved"]) == (task["id"], "completed", 3)
    table = cli(server, "dlq", "tasks")
    assert table.exit_code == 0 and task["id"] in table.stdout and "completed" in table.stdout
    cancelled = ok(server, "dlq", "cancel", "s-mail", task["id"])
    assert cancelled["state"] == "completed", "a finished task is left as it is"
    missing = error_line(server, "dlq", "cancel", "s-mail", "nope")
    assert missing == "error: unknown redrive task 'nope'"


def test_an_interrupted_redrive_says_what_it_moved(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(server, "queue", "create", "s-stuck", "--max-deliveries", "1")

    async def dead(broker: roost.Client) -> None:
        await broker.publish("s-stuck", b"one")
        [delivery] = await broker.receive("s-stuck", wait=1)
        await delivery.nack(error="boom")

    with_client(server, dead)

    async def interrupted(client: Any, topic: str, moving: Any, progress: Any) -> None:
        progress.advance(1)  # what the follower had seen moved when Ctrl-C came
        raise KeyboardInterrupt

    monkeypatch.setattr(monitoring, "_follow", interrupted)
    result = cli(server, "dlq", "redrive", "s-stuck")
    assert result.exit_code == 130
    assert result.stderr.splitlines() == [
        "interrupted: about 1 dead letter moved back to s-stuck; the broker finishes the batch "
        "it was moving and stops, and the rest stay dead letters"
    ]


def test_a_rate_limit_from_the_command_line(server: Server) -> None:
    spec = ok(server, "queue", "create", "s-paced", "--rate-limit", "2.5", "--rate-burst", "3")
    assert (spec["rate_limit_per_s"], spec["rate_burst"]) == (2.5, 3)
    sub = ok(server, "subscription", "create", "s-paced", "audit", "--rate-limit", "100")
    assert (sub["rate_limit_per_s"], sub["rate_burst"]) == (100, None)
    table = cli(server, "stats", "s-paced")
    assert "at most 2.5/s, held back 0 times" in table.stdout
    refused = cli(server, "queue", "create", "s-paced-2", "--rate-limit", "0")
    assert refused.exit_code == 2 and "--rate-limit" in refused.stderr
