"""``roost stats`` and ``roost dlq ...``: what a subscription holds, and its dead letters.

``dlq peek`` reads dead letters without moving or leasing them: it makes a temporary `stream`
subscription on the dead-letter topic (``roost-peek-<random>``, starting at the earliest
record), joins it, seeks each partition past what the redrive subscription has already acked
contiguously, fetches up to ``--max`` records, then leaves and deletes the subscription, even
after an error or Ctrl-C. A stream subscription holds no leases and counts no deliveries, so a
peek changes nothing a consumer or a redrive sees. Its limit: the log keeps a record after it
is redriven, so a dead letter moved by a filtered redrive (``--key``, ``--error-contains``)
still shows until every one before it has been moved too. A peek killed with SIGKILL leaves its
subscription behind; ``roost-peek-*`` subscriptions are safe to delete.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.live import Live
from rich.table import Table

from roost.cli import render
from roost.cli.params import PositiveRate, Seconds
from roost.cli.progress import Counting
from roost.cli.session import EXIT_INTERRUPTED, CliError, done, echo_json, json_option, run, show
from roost.client.api import Client
from roost.core.model import Message
from roost.core.redrive import REDRIVE_SUBSCRIPTION, RedriveTask
from roost.core.stats import StreamStats, SubscriptionStats
from roost.errors import UnknownSubscription

PEEK_PREFIX = "roost-peek-"
#: How often a redrive's progress is looked at (a stats request beside it).
FOLLOW_EVERY_S = 0.5

F = TypeVar("F", bound=Callable[..., Any])


@click.command()
@click.argument("topic")
@click.argument("subscription", required=False)
@click.option(
    "--watch",
    type=Seconds(0.1, 86_400),
    default=None,
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl-C (with --json: a line each).",
)
@json_option
def stats(topic: str, subscription: str | None, watch: float | None, as_json: bool) -> None:
    """Depth, in flight, delayed, oldest age, lag and dead letters of SUBSCRIPTION (default:
    the queue TOPIC), per partition."""
    if watch is None:
        found = run(lambda c: c.stats(topic, subscription))
        if as_json:
            echo_json(found)
        else:
            show(render.stats_table(found))
        return

    async def watching(client: Client) -> None:
        rates = Rates()
        if as_json:
            while True:
                found, counts = await _stats_and_counts(client, topic, subscription)
                per_second = rates.update(time.monotonic(), *counts)
                echo_json({**msgspec.to_builtins(found), "rates": per_second})
                await pause(watch)
        found, counts = await _stats_and_counts(client, topic, subscription)
        rates.update(time.monotonic(), *counts)
        with Live(render.stats_table(found), console=Console(), auto_refresh=False) as live:
            while True:
                await pause(watch)
                found, counts = await _stats_and_counts(client, topic, subscription)
                per_second = rates.update(time.monotonic(), *counts)
                live.update(render.stats_table(found, per_second))
                live.refresh()

    run(watching, interrupt_is_exit=True)


async def pause(seconds: float) -> None:
    """Between two looks of ``stats --watch`` (a test steps through them instead)."""
    await asyncio.sleep(seconds)


async def _stats_and_counts(
    client: Client, topic: str, subscription: str | None
) -> tuple[SubscriptionStats | StreamStats, tuple[int, int]]:
    """The stats, and (records published to the topic, records the subscription is done
    with) as counts that only grow, for ``Rates``."""
    found = await client.stats(topic, subscription)
    if isinstance(found, StreamStats):
        published = sum(p.end_offset for p in found.partitions)
        return found, (published, sum(p.committed for p in found.partitions))
    info = await client.describe_topic(topic)
    published = sum(p.end_offset for p in info.partitions)
    # What is no longer in its backlog was acked or dead-lettered (or never will be read).
    return found, (published, published - found.backlog)


class Rates:
    """Per second between two looks: published to the topic, and finished by the
    subscription (acked or dead-lettered; for a stream, committed)."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None

    def update(self, now: float, published: int, finished: int) -> dict[str, float] | None:
        last, self._last = self._last, (now, published, finished)
        if last is None or now <= last[0]:
            return None
        seconds = now - last[0]
        return {
            "published_per_s": round(max(0, published - last[1]) / seconds, 1),
            "finished_per_s": round(max(0, finished - last[2]) / seconds, 1),
        }


@click.group()
def dlq() -> None:
    """A queue's dead letters: count them, look at them, move them back."""


def _subscription_option(command: F) -> F:
    return click.option(
        "--subscription", default=None, help="A subscription of topic QUEUE (default: QUEUE)."
    )(command)


async def _dead_letters(
    client: Client, queue: str, subscription: str | None
) -> tuple[SubscriptionStats, str]:
    """The queue's stats and its dead-letter topic; ``CliError`` if it has none."""
    stats = await client.stats(queue, subscription)
    if isinstance(stats, StreamStats) or stats.dead_letter_topic is None:
        raise CliError(f"{queue}/{subscription or queue} has no dead-letter topic")
    return stats, stats.dead_letter_topic


@dlq.command("list")
@click.argument("queue")
@json_option
@_subscription_option
def dlq_list(queue: str, subscription: str | None, as_json: bool) -> None:
    """How many dead letters QUEUE has, and where."""

    async def listed(client: Client) -> dict[str, object]:
        stats, topic = await _dead_letters(client, queue, subscription)
        info = await client.describe_topic(topic)
        return {
            "queue": queue,
            "subscription": stats.subscription,
            "dead_letter_topic": topic,
            "dead_letters": stats.dead_letters,
            "records": sum(p.end_offset - p.start_offset for p in info.partitions),
            "partitions": info.partitions,
        }

    found = run(listed)
    if as_json:
        echo_json(found)
        return
    table = Table("queue", "dead-letter topic", "waiting", "records in log")
    table.add_row(
        queue, str(found["dead_letter_topic"]), str(found["dead_letters"]), str(found["records"])
    )
    show(table)


@dlq.command("peek")
@click.argument("queue")
@click.option("--max", "limit", type=click.IntRange(min=1), default=10, show_default=True)
@json_option
@_subscription_option
def dlq_peek(queue: str, subscription: str | None, limit: int, as_json: bool) -> None:
    """Show QUEUE's dead letters with their x-roost-* headers, leaving them where they are."""

    async def peek(client: Client) -> list[Message]:
        _, topic = await _dead_letters(client, queue, subscription)
        return await _peek(client, topic, limit)

    found = run(peek)
    if as_json:
        echo_json([render.message_json(message) for message in found])
    elif found:
        show(render.dead_letters_table(found))
    else:
        click.echo(f"no dead letters waiting for {queue}")


async def _peek(client: Client, topic: str, limit: int) -> list[Message]:
    """Up to ``limit`` records of ``topic`` not yet redriven; see the module docstring."""
    starts = await _unredriven(client, topic)
    name = PEEK_PREFIX + secrets.token_hex(6)
    await client.create_subscription(topic, name, mode="stream", start="earliest")
    try:
        member = await client.join(topic, name, client="roost dlq peek")
        try:
            for partition in member.partitions:
                if starts.get(partition):
                    await member.seek(partition, starts[partition])
            found: list[Message] = []
            while len(found) < limit and (records := await member.fetch(limit - len(found))):
                found += records
            return found
        finally:
            await member.leave()
    finally:
        await client.delete_subscription(topic, name)


async def _unredriven(client: Client, topic: str) -> dict[int, int]:
    """Per partition, the first offset the redrive subscription has not acked (0: none yet)."""
    info = await client.describe_topic(topic)
    try:
        redrive = await client.stats(topic, REDRIVE_SUBSCRIPTION)
    except UnknownSubscription:
        return {}
    assert isinstance(redrive, SubscriptionStats)
    start = {p.partition: p.start_offset for p in info.partitions}
    return {p.partition: max(p.ack_floor, start[p.partition]) for p in redrive.partitions}


async def _follow(
    client: Client, topic: str, moving: asyncio.Future[int], progress: Counting
) -> None:
    """Until ``moving`` ends, count what the redrive subscription has finished (its backlog
    going down), for the progress line and for what an interruption reports."""
    first: int | None = None
    while not moving.done():
        await asyncio.wait([moving], timeout=FOLLOW_EVERY_S)
        try:
            found = await client.stats(topic, REDRIVE_SUBSCRIPTION)
        except UnknownSubscription:  # made by the redrive's first step
            continue
        if isinstance(found, SubscriptionStats):
            first = found.backlog if first is None else first
            progress.advance(max(0, first - found.backlog - progress.done))


@dlq.command("redrive")
@click.argument("queue")
@click.option(
    "--rate",
    type=PositiveRate(),
    default=100.0,
    show_default=True,
    help="Messages a second at most.",
)
@click.option("--key", default=None, help="Only dead letters with this key.")
@click.option("--error-contains", default=None, help="Only those whose last error has this.")
@click.option(
    "--background",
    is_flag=True,
    help="Start it as a task and return: `roost dlq tasks` follows it, a restart resumes it.",
)
@json_option
@_subscription_option
def dlq_redrive(
    queue: str,
    subscription: str | None,
    rate: float,
    key: str | None,
    error_contains: str | None,
    background: bool,
    as_json: bool,
) -> None:
    """Move QUEUE's dead letters (all, or those matching) back to QUEUE."""
    if background:

        async def start(client: Client) -> RedriveTask:
            _, topic = await _dead_letters(client, queue, subscription)
            return await client.start_redrive(
                topic, source_topic=queue, rate=rate, error_contains=error_contains,
                key=None if key is None else key.encode(),
            )  # fmt: skip

        task = run(start)
        waiting = render.plural(task.to_move, "dead letter")
        line = (f"started redrive task {task.id}: {waiting} waiting in "
                f"{task.dead_letter_topic}; `roost dlq tasks {queue}` follows it")  # fmt: skip
        done(as_json, task, line)
        return

    progress = Counting("moved")

    async def redrive(client: Client) -> tuple[str, int]:
        _, topic = await _dead_letters(client, queue, subscription)
        moving = asyncio.ensure_future(client.redrive(
            topic, source_topic=queue, rate=rate, error_contains=error_contains,
            key=None if key is None else key.encode(),
        ))  # fmt: skip
        try:
            await _follow(client, topic, moving, progress)
            return topic, await moving
        finally:
            moving.cancel()

    try:
        with progress:
            topic, moved = run(redrive)
    except click.exceptions.Exit as e:
        if e.exit_code == EXIT_INTERRUPTED:
            click.echo(
                f"interrupted: about {render.plural(progress.done, 'dead letter')} moved back "
                f"to {queue}; the broker finishes the batch it was moving and stops, and the "
                "rest stay dead letters", err=True,
            )  # fmt: skip
        raise
    result = {"queue": queue, "dead_letter_topic": topic, "moved": moved}
    moved_line = f"moved {render.plural(moved, 'dead letter')} from {topic} back to {queue}"
    done(as_json, result, moved_line)


@dlq.command("tasks")
@click.argument("queue", required=False)
@json_option
@_subscription_option
def dlq_tasks(queue: str | None, subscription: str | None, as_json: bool) -> None:
    """Redrive tasks (of QUEUE's dead letters), newest first, with their progress."""

    async def listed(client: Client) -> list[RedriveTask]:
        if queue is None:
            return await client.redrive_tasks()
        _, topic = await _dead_letters(client, queue, subscription)
        return await client.redrive_tasks(topic)

    tasks = run(listed)
    if as_json:
        echo_json(tasks)
    elif tasks:
        show(render.redrive_tasks_table(tasks))
    else:
        click.echo("no redrive task" + (f" for {queue}" if queue else ""))


@dlq.command("cancel")
@click.argument("queue")
@click.argument("task_id")
@json_option
@_subscription_option
def dlq_cancel(queue: str, task_id: str, subscription: str | None, as_json: bool) -> None:
    """Stop redrive task TASK_ID of QUEUE's dead letters (what it moved stays moved)."""

    async def cancel(client: Client) -> RedriveTask:
        _, topic = await _dead_letters(client, queue, subscription)
        return await client.cancel_redrive(topic, task_id)

    task = run(cancel)
    done(as_json, task, f"redrive task {task.id}: {task.state}, "
                        f"{render.plural(task.moved, 'dead letter')} moved")  # fmt: skip
