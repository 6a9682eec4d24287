"""``roost topic ...`` and ``roost queue ...``: define them, look at them, delete them.

Each command is one short coroutine over the client (see ``session.run``). A queue, to these
commands, is a subscription named like its topic (what ``create_queue`` makes). ``queue peek``
shows messages without taking them (no lease, no delivery counted); ``queue purge`` finishes
every message of the queue, leased and delayed ones too, as SQS's PurgeQueue. Deleting and
purging ask first; ``--yes`` answers for scripts, and without a terminal they refuse rather
than guess.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Literal, get_args

import click

from roost.cli import render
from roost.cli.params import (
    MAX_DELIVERIES,
    PARTITIONS,
    QUEUE_DELAY,
    RETENTION,
    VISIBILITY,
    rate_limit_options,
)
from roost.cli.session import done, echo_json, json_option, run, show
from roost.client.api import Client
from roost.core.model import DEFAULT_MAX_DELIVERIES, SubscriptionSpec
from roost.core.stats import SubscriptionStats
from roost.errors import UnknownTopic
from roost.storage import TopicInfo

Durability = Literal["always", "interval", "never"]
Cleanup = Literal["delete", "compact", "compact,delete"]


# -- topics ---------------------------------------------------------------------------------


@click.group()
def topic() -> None:
    """Topics: partitioned, replayable logs."""


@topic.command("create")
@click.argument("name")
@click.option("--partitions", type=PARTITIONS, default=1, show_default=True)
@click.option(
    "--durability",
    type=click.Choice(get_args(Durability)),
    default="always",
    show_default=True,
    help="When an append is fsynced.",
)
@click.option(
    "--retention",
    type=RETENTION,
    default=None,
    help="Seconds to keep records (default: forever).",
)
@click.option(
    "--cleanup",
    type=click.Choice(get_args(Cleanup)),
    default="delete",
    show_default=True,
    help="compact: keep the latest record per key (records need a key); compact,delete: "
    "and apply --retention too.",
)
@click.option(
    "--tombstone-retention",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a tombstone (an empty value) stays on a compacted topic (default: a day).",
)
@json_option
def topic_create(
    name: str,
    partitions: int,
    durability: Durability,
    retention: float | None,
    cleanup: Cleanup,
    tombstone_retention: float | None,
    as_json: bool,
) -> None:
    """Create topic NAME."""
    info = run(
        lambda c: c.create_topic(
            name, partitions=partitions, durability=durability, retention=retention,
            cleanup=cleanup, tombstone_retention=tombstone_retention,
        )
    )  # fmt: skip
    kind = "" if cleanup == "delete" else f", cleanup {cleanup}"
    done(as_json, info, f"created topic {name} ({partitions} partitions, {durability}{kind})")


@topic.command("list")
@json_option
def topic_list(as_json: bool) -> None:
    """Every topic, with its size."""
    if as_json:
        echo_json(run(lambda c: c.list_topics()))
        return

    async def described(client: Client) -> list[TopicInfo]:
        found = await asyncio.gather(
            *(_describe_if_there(client, name) for name in await client.list_topics())
        )
        return [info for info in found if info is not None]

    show(render.topics_table(run(described)))


async def _describe_if_there(client: Client, name: str) -> TopicInfo | None:
    try:
        return await client.describe_topic(name)
    except UnknownTopic:  # deleted since it was listed
        return None


@topic.command("describe")
@click.argument("name")
@json_option
def topic_describe(name: str, as_json: bool) -> None:
    """Topic NAME's configuration and partitions."""
    info = run(lambda c: c.describe_topic(name))
    if as_json:
        echo_json(info)
    else:
        show(*render.topic_tables(info))


def confirmed(yes: bool, question: str) -> None:
    """Go on only if ``--yes`` was given or the person at the terminal says so."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Pass --yes to confirm (no terminal to ask).")
    click.confirm(question, abort=True)


yes_option = click.option("--yes", "-y", is_flag=True, help="Do it without asking.")


@topic.command("delete")
@click.argument("name")
@yes_option
@json_option
def topic_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete topic NAME, its records and its subscriptions."""
    confirmed(yes, f"Delete topic {name}, every record and subscription of it?")
    run(lambda c: c.delete_topic(name))
    done(as_json, {"deleted": name}, f"deleted topic {name}")


# -- queues ---------------------------------------------------------------------------------


@click.group()
def queue() -> None:
    """Queues: a topic and one subscription of the same name."""


@queue.command("create")
@click.argument("name")
@click.option("--fifo", is_flag=True, help="In order per key, one in flight per key.")
@click.option("--partitions", type=PARTITIONS, default=1, show_default=True)
@click.option(
    "--visibility-timeout",
    type=VISIBILITY,
    default=30.0,
    show_default=True,
    help="Seconds a received message stays leased.",
)
@click.option(
    "--max-deliveries",
    type=MAX_DELIVERIES,
    default=DEFAULT_MAX_DELIVERIES,
    show_default=True,
    help="Deliveries before a message is dead-lettered.",
)
@click.option(
    "--dead-letter",
    default=None,
    metavar="TOPIC",
    help="Dead-letter topic (default: NAME.dlq, made if missing).",
)
@click.option(
    "--delay",
    type=QUEUE_DELAY,
    default=0.0,
    show_default=True,
    help="Seconds before a new message can be received.",
)
@click.option(
    "--message-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds after its publish a message not yet delivered expires (dead-lettered).",
)
@rate_limit_options
@json_option
def queue_create(
    name: str,
    fifo: bool,
    partitions: int,
    visibility_timeout: float,
    max_deliveries: int,
    dead_letter: str | None,
    delay: float,
    message_ttl: float | None,
    rate_limit: float | None,
    rate_burst: int | None,
    as_json: bool,
) -> None:
    """Create queue NAME (a declare: the same settings again are fine)."""
    spec = run(
        lambda c: c.create_queue(
            name,
            fifo=fifo,
            partitions=partitions,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
            dead_letter=dead_letter or "",
            delay=delay,
            message_ttl=message_ttl,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
        )
    )
    kind = "fifo queue" if fifo else "queue"
    done(as_json, spec, f"created {kind} {name} (dead letters to {spec.dead_letter})")


async def _queues(client: Client) -> list[SubscriptionSpec]:
    return [
        s for s in await client.list_subscriptions() if s.name == s.topic and s.mode != "stream"
    ]


@queue.command("list")
@json_option
def queue_list(as_json: bool) -> None:
    """Every queue, with its depth."""
    if as_json:
        echo_json(run(_queues))
        return

    async def with_stats(client: Client) -> tuple[list[SubscriptionSpec], list[SubscriptionStats]]:
        specs = await _queues(client)
        stats = await asyncio.gather(*(client.stats(s.topic, s.name) for s in specs))
        return specs, [s for s in stats if isinstance(s, SubscriptionStats)]

    show(render.queues_table(*run(with_stats)))


@queue.command("describe")
@click.argument("name")
@json_option
def queue_describe(name: str, as_json: bool) -> None:
    """Queue NAME's stats: depth, in flight, delayed, oldest age, dead letters."""
    stats = run(lambda c: c.stats(name, name))
    if as_json:
        echo_json(stats)
    else:
        show(render.stats_table(stats))


@queue.command("peek")
@click.argument("name")
@click.option("--max", "limit", type=click.IntRange(1, 100), default=10, show_default=True)
@json_option
def queue_peek(name: str, limit: int, as_json: bool) -> None:
    """Show queue NAME's messages as they stand, without taking them: no lease, no delivery
    counted (unlike `consume`)."""
    found = run(lambda c: c.peek(name, max_messages=limit))
    if as_json:
        echo_json([{**render.message_json(p.message), "state": p.state, "until_ms": p.until_ms}
                   for p in found])  # fmt: skip
    elif found:
        show(render.peeked_table(found))
    else:
        click.echo(f"{name} holds no message")


@queue.command("purge")
@click.argument("name")
@yes_option
@json_option
def queue_purge(name: str, yes: bool, as_json: bool) -> None:
    """Finish every message of queue NAME, leased and delayed ones too; report how many."""
    confirmed(yes, f"Purge every message of queue {name}?")
    purged = run(lambda c: c.purge(name))
    line = f"purged {render.plural(purged, 'message')} from {name}"
    done(as_json, {"queue": name, "purged": purged}, line)


@queue.command("delete")
@click.argument("name")
@yes_option
@json_option
def queue_delete(name: str, yes: bool, as_json: bool) -> None:
    """Delete queue NAME and its messages (its dead-letter topic stays)."""
    confirmed(yes, f"Delete queue {name} and its messages?")
    run(lambda c: c.delete_queue(name))
    done(as_json, {"deleted": name}, f"deleted queue {name}")
