"""``roost subscription ...`` and ``roost group ...``: every way to read a topic, and the
consumer groups among them.

A subscription is any mode (`queue`, `keyed`, `stream`); a group is a `stream` subscription as
Kafka users know it: members, their partitions, committed offsets, lag. Subscriptions go over
the native protocol like the other client commands; groups go through the admin API
(``--admin-url``), which alone can move an idle group's offsets (``group seek``: refused while
the group has members, as Kafka's ``--reset-offsets`` is).
"""

from __future__ import annotations

import asyncio
import datetime
import urllib.parse
from collections.abc import Callable
from typing import Literal, TypeVar

import click

from roost.cli import render
from roost.cli.admin import confirmed, yes_option
from roost.cli.admin_api import AdminApi, admin_api
from roost.cli.params import MAX_DELIVERIES, QUEUE_DELAY, VISIBILITY, rate_limit_options
from roost.cli.session import CliError, done, echo_json, fail, json_option, run, show
from roost.client.api import Client
from roost.core.model import DEFAULT_MAX_DELIVERIES, SubscriptionSpec
from roost.core.stats import GroupDescription, StreamStats, SubscriptionStats

Mode = Literal["queue", "keyed", "stream"]
T = TypeVar("T")


@click.group()
def subscription() -> None:
    """Subscriptions: named readers of a topic (queue, keyed or stream)."""


@subscription.command("create")
@click.argument("topic")
@click.argument("name")
@click.option(
    "--mode",
    type=click.Choice(["queue", "keyed", "stream"]),
    default="queue",
    show_default=True,
    help="queue: leased, any order; keyed: in order per key; stream: a consumer group.",
)
@click.option(
    "--start",
    type=click.Choice(["earliest", "latest"]),
    default="latest",
    show_default=True,
    help="Where it starts reading: the topic's first record, or what comes next.",
)
@click.option("--visibility-timeout", type=VISIBILITY, default=30.0,
              show_default=True, help="Seconds a received message stays leased.")  # fmt: skip
@click.option("--max-deliveries", type=MAX_DELIVERIES, default=DEFAULT_MAX_DELIVERIES,
              show_default=True, help="Deliveries before a message is dead-lettered.")  # fmt: skip
@click.option("--retry-forever", is_flag=True,
              help="Never dead-letter (no --max-deliveries, no dead-letter topic).")  # fmt: skip
@click.option("--dead-letter", default=None, metavar="TOPIC",
              help="Dead-letter topic (default: TOPIC.NAME.dlq, made if missing).")  # fmt: skip
@click.option("--delay", type=QUEUE_DELAY, default=0.0, show_default=True,
              help="Seconds before a new message can be received.")  # fmt: skip
@rate_limit_options
@json_option
def subscription_create(
    topic: str,
    name: str,
    mode: Mode,
    start: Literal["earliest", "latest"],
    visibility_timeout: float,
    max_deliveries: int,
    retry_forever: bool,
    dead_letter: str | None,
    delay: float,
    rate_limit: float | None,
    rate_burst: int | None,
    as_json: bool,
) -> None:
    """Read TOPIC as NAME (a declare: the same settings again are fine)."""
    if retry_forever and dead_letter is not None:
        raise click.UsageError("--retry-forever has no dead-letter topic: leave out --dead-letter")
    spec = run(lambda c: c.create_subscription(
        topic, name, mode=mode, start=start, visibility_timeout=visibility_timeout,
        max_deliveries=None if retry_forever else max_deliveries,
        dead_letter=None if retry_forever else dead_letter or "", delay=delay,
        rate_limit=rate_limit, rate_burst=rate_burst,
    ))  # fmt: skip
    where = f", dead letters to {spec.dead_letter}" if spec.dead_letter else ""
    done(as_json, spec, f"subscription {topic}/{name} ({spec.mode}, from {start}{where})")


@subscription.command("list")
@click.argument("topic", required=False)
@json_option
def subscription_list(topic: str | None, as_json: bool) -> None:
    """Every subscription (of TOPIC), with what it has left to read."""
    if as_json:
        echo_json(run(lambda c: c.list_subscriptions(topic)))
        return

    async def with_stats(
        client: Client,
    ) -> tuple[list[SubscriptionSpec], list[SubscriptionStats | StreamStats]]:
        specs = await client.list_subscriptions(topic)
        return specs, list(await asyncio.gather(*(client.stats(s.topic, s.name) for s in specs)))

    specs, stats = run(with_stats)
    if specs:
        show(render.subscriptions_table(specs, stats))
    else:
        click.echo("no subscription" + (f" on {topic}" if topic else ""))


@subscription.command("describe")
@click.argument("topic")
@click.argument("name")
@json_option
def subscription_describe(topic: str, name: str, as_json: bool) -> None:
    """Subscription NAME of TOPIC: its settings, and per partition what it holds."""

    async def both(client: Client) -> tuple[SubscriptionSpec, SubscriptionStats | StreamStats]:
        stats = await client.stats(topic, name)  # UnknownSubscription first
        [spec] = [s for s in await client.list_subscriptions(topic) if s.name == name]
        return spec, stats

    spec, stats = run(both)
    if as_json:
        echo_json({"settings": spec, "stats": stats})
    else:
        show(render.subscription_settings(spec), render.stats_table(stats))


@subscription.command("delete")
@click.argument("topic")
@click.argument("name")
@yes_option
@json_option
def subscription_delete(topic: str, name: str, yes: bool, as_json: bool) -> None:
    """Delete subscription NAME of TOPIC and what it holds (the topic's records stay)."""
    confirmed(yes, f"Delete subscription {topic}/{name} and its leases and positions?")
    run(lambda c: c.delete_subscription(topic, name))
    done(as_json, {"deleted": f"{topic}/{name}"}, f"deleted subscription {topic}/{name}")


# -- consumer groups ----------------------------------------------------------------------------


@click.group()
def group() -> None:
    """Consumer groups (stream subscriptions): members, partitions, lag; seek. Through the
    admin API (--admin-url)."""


def _groups_path(topic: str, group_name: str | None = None) -> str:
    path = f"/api/v1/topics/{urllib.parse.quote(topic, safe='')}/groups"
    return path if group_name is None else f"{path}/{urllib.parse.quote(group_name, safe='')}"


@group.command("list")
@click.argument("topic")
@json_option
@click.pass_context
def group_list(ctx: click.Context, topic: str, as_json: bool) -> None:
    """The consumer groups of TOPIC, with their members and lag."""
    groups = _call(ctx, lambda api: api.call("GET", _groups_path(topic), list[GroupDescription]))
    if as_json:
        echo_json(groups)
    elif groups:
        show(render.groups_table(groups))
    else:
        click.echo(f"no consumer group on {topic}")


@group.command("describe")
@click.argument("topic")
@click.argument("name")
@json_option
@click.pass_context
def group_describe(ctx: click.Context, topic: str, name: str, as_json: bool) -> None:
    """Group NAME of TOPIC: per partition its owner, position, commit and lag; its members."""
    described = _call(ctx, lambda api: api.call("GET", _groups_path(topic, name), GroupDescription))
    if as_json:
        echo_json(described)
    else:
        show(*render.group_tables(described))


@group.command("seek")
@click.argument("topic")
@click.argument("name")
@click.option("--to", "to", default=None, metavar="earliest|latest|OFFSET",
              help="Where every partition (or --partition) reads next.")  # fmt: skip
@click.option("--time", "at_time", type=click.DateTime(), default=None,
              help="The first record at or after this time (local time, ISO 8601).")  # fmt: skip
@click.option("--partition", "partitions", type=click.IntRange(min=0), multiple=True,
              help="Only this partition (repeat for more; default: all).")  # fmt: skip
@yes_option
@json_option
@click.pass_context
def group_seek(
    ctx: click.Context,
    topic: str,
    name: str,
    to: str | None,
    at_time: datetime.datetime | None,
    partitions: tuple[int, ...],
    yes: bool,
    as_json: bool,
) -> None:
    """Move idle group NAME's committed offsets (refused while it has members: stop them
    first). Its consumers then read from there: a replay, or a skip."""
    if (to is None) == (at_time is None):
        raise click.UsageError("give exactly one of --to and --time")
    body: dict[str, object] = {"partitions": list(partitions) or None}
    if at_time is not None:
        body["timestamp_ms"] = int(at_time.timestamp() * 1000)
        where = f"the first record at or after {at_time.isoformat(sep=' ')}"
    elif to in ("earliest", "latest"):
        body["to"], where = to, f"the {to} offset"
    else:
        try:
            body["to"] = int(to or "")
        except ValueError:
            raise click.BadParameter("earliest, latest or an offset", param_hint="--to") from None
        where = f"offset {to}"
    which = ", ".join(map(str, partitions)) if partitions else "every partition"
    confirmed(yes, f"Move group {topic}/{name} to {where} on {which}?")
    path = _groups_path(topic, name) + "/seek"
    moved = _call(ctx, lambda api: api.call("POST", path, GroupDescription, body))
    if as_json:
        echo_json(moved)
    else:
        show(*render.group_tables(moved))


def _call(ctx: click.Context, request: Callable[[AdminApi], T]) -> T:
    try:
        return request(admin_api(ctx))
    except CliError as e:
        fail(ctx, str(e))
