"""``roost publish`` and ``roost consume``: messages in from arguments, files or stdin; out to
stdout, as text or JSON.

``publish`` sends a topic's messages in batches (``PUBLISH_BATCH`` messages or
``PUBLISH_BATCH_BYTES``, whichever fills first), one line of input per message, the line end
removed; through an exchange it sends them one at a time. ``consume`` prints each message
before it acks it (a stream group: before it commits), so a message printed may be printed
again after a crash, and one acked has always been printed. ``--no-ack`` gives every message
back at the end (a nack without delay): it is visible again at once, and its delivery count
has grown by one, as every receive makes it grow.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Literal

import click

from roost.cli import render
from roost.cli.params import DELAY, Seconds
from roost.cli.progress import Counting
from roost.cli.session import EXIT_INTERRUPTED, CliError, echo_json, json_option, run, show
from roost.client.api import Client, seconds_to_ms
from roost.core.model import Message
from roost.core.publishing import Outgoing, Published
from roost.errors import InvalidConfig
from roost.receipt import Receipt

PUBLISH_BATCH = 500
PUBLISH_BATCH_BYTES = 1024 * 1024
#: Messages asked for per receive or fetch while consuming.
CONSUME_BATCH = 100

Start = Literal["earliest", "latest"]


# -- publish --------------------------------------------------------------------------------


@click.command()
@click.argument("args", nargs=-1, metavar="TOPIC [VALUE ...]")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    help="Publish each line of this file.",
)
@click.option("--key", default=None, help="The messages' key (orders them on fifo queues).")
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
@click.option(
    "--delay",
    type=DELAY,
    default=None,
    help="Seconds before the messages can be received.",
)
@click.option("--dedup-id", default=None, help="Publish once per id (one message only).")
@click.option("--exchange", default=None, help="Publish through this exchange (no TOPIC).")
@click.option("--routing-key", default=None, help="With --exchange: the routing key.")
@json_option
def publish(
    args: tuple[str, ...],
    path: str | None,
    key: str | None,
    headers: tuple[str, ...],
    delay: float | None,
    dedup_id: str | None,
    exchange: str | None,
    routing_key: str | None,
    as_json: bool,
) -> None:
    """Publish to TOPIC each VALUE, or each line of --file or of stdin (no VALUE, or -).

    With --exchange X --routing-key K every argument is a value and X routes each message.
    Prints where each message landed.
    """
    topic, values = _target(args, path, delay, dedup_id, exchange, routing_key)
    bodies = _bodies(values, path)
    if dedup_id is not None:
        every = list(bodies)
        if len(every) != 1:
            raise click.UsageError(f"--dedup-id names one message, not {len(every)}")
        bodies = iter(every)
    pairs = tuple(_header(text) for text in headers)
    key_bytes = None if key is None else key.encode()
    try:
        delay_ms = None if delay is None else seconds_to_ms("delay", delay)
    except InvalidConfig as e:
        raise click.BadParameter(f"{delay}: {e.rule}", param_hint="--delay") from None

    placed: list[Published] = []
    progress = Counting("published")

    async def send(client: Client) -> None:
        if topic is None:
            assert exchange is not None
            await _through(client, exchange, routing_key or "", bodies, key_bytes, pairs,
                           placed, progress)  # fmt: skip
            return
        outgoing = (
            Outgoing(value=v, key=key_bytes, headers=pairs, delay_ms=delay_ms, dedup_id=dedup_id)
            for v in bodies
        )
        for batch in _batches(outgoing):
            placed.extend(await client.publish_batch(topic, batch))
            progress.advance(len(batch))

    try:
        with progress:
            run(send)
    except click.exceptions.Exit as e:
        if e.exit_code == EXIT_INTERRUPTED:
            click.echo(
                f"interrupted: {render.plural(len(placed), 'message')} published and "
                "confirmed; nothing after them was sent", err=True,
            )  # fmt: skip
        raise
    if as_json:
        echo_json([p._asdict() for p in placed])
    else:
        show(render.published_table(placed))


def _target(
    args: tuple[str, ...],
    path: str | None,
    delay: float | None,
    dedup_id: str | None,
    exchange: str | None,
    routing_key: str | None,
) -> tuple[str | None, tuple[str, ...]]:
    """The topic (None: publish through ``exchange``) and the values given as arguments."""
    topic, values = (None, args) if exchange else (args[0] if args else None, args[1:])
    if topic is None and exchange is None:
        raise click.UsageError("name a TOPIC, or an --exchange to publish through")
    if exchange is None and routing_key is not None:
        raise click.UsageError("--routing-key goes with --exchange")
    if exchange is not None and (delay is not None or dedup_id is not None):
        raise click.UsageError("--delay and --dedup-id are for a topic, not an --exchange")
    if path is not None and values:
        raise click.UsageError("give values as arguments or with --file, not both")
    return topic, values


async def _through(
    client: Client,
    exchange: str,
    routing_key: str,
    bodies: Iterable[bytes],
    key: bytes | None,
    headers: tuple[tuple[str, bytes], ...],
    placed: list[Published],
    progress: Counting,
) -> None:
    """One message at a time through ``exchange``: where each copy landed, in order."""
    for value in bodies:
        placed += await client.publish_to_exchange(
            exchange, routing_key, value, key=key, headers=headers
        )
        progress.advance(1)


def _bodies(values: tuple[str, ...], path: str | None) -> Iterator[bytes]:
    if path is not None:
        with open(path, "rb") as file:
            yield from _lines(file)
    elif values and values != ("-",):
        yield from (value.encode() for value in values)
    else:
        yield from _lines(sys.stdin.buffer)


def _lines(file: IO[bytes]) -> Iterator[bytes]:
    for line in file:
        yield line.removesuffix(b"\n").removesuffix(b"\r")


def _batches(messages: Iterable[Outgoing]) -> Iterator[list[Outgoing]]:
    batch: list[Outgoing] = []
    batch_bytes = 0
    for message in messages:
        batch.append(message)
        batch_bytes += len(message.value)
        if len(batch) >= PUBLISH_BATCH or batch_bytes >= PUBLISH_BATCH_BYTES:
            yield batch
            batch, batch_bytes = [], 0
    if batch:
        yield batch


def _header(text: str) -> tuple[str, bytes]:
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--header")
    return name, value.encode()


# -- consume --------------------------------------------------------------------------------


class _Printer:
    """Messages to stdout as they arrive: a line each, or one JSON array written in pieces."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.count = 0

    def emit(self, message: Message) -> None:
        if self.as_json:
            opening = "[" if self.count == 0 else ","
            click.echo(f"{opening}\n{json.dumps(render.message_json(message))}", nl=False)
        else:
            click.echo(render.message_line(message))
        self.count += 1

    def close(self, failed: bool = False) -> None:
        """End the JSON array; ``[]`` if nothing came, unless the command failed."""
        if self.as_json and self.count:
            click.echo("\n]")
        elif self.as_json and not failed:
            click.echo("[]")


@click.command()
@click.argument("topic")
@click.option("--subscription", default=None, help="A queue subscription (default: TOPIC).")
@click.option("--group", default=None, help="A stream subscription: join, fetch, commit.")
@click.option(
    "--max",
    "limit",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many (default: when none arrive within --wait).",
)
@click.option(
    "--wait",
    type=Seconds(0, 20),
    default=1.0,
    show_default=True,
    help="Seconds to wait for more before stopping.",
)
@click.option(
    "--no-ack",
    is_flag=True,
    help="Print, then give back (streams: do not commit); a look is a delivery.",
)
@click.option(
    "--from",
    "start",
    type=click.Choice(["earliest", "latest"]),
    default=None,
    help="Create the subscription or group if missing, reading from here.",
)
@json_option
def consume(
    topic: str,
    subscription: str | None,
    group: str | None,
    limit: int | None,
    wait: float,
    no_ack: bool,
    start: Start | None,
    as_json: bool,
) -> None:
    """Receive messages of TOPIC, print them and ack them."""
    if subscription is not None and group is not None:
        raise click.UsageError("--subscription or --group, not both")
    name = group or subscription or topic
    printer = _Printer(as_json)

    async def receive(client: Client) -> str:
        mode = await _mode(client, topic, name, group is not None, start)
        if mode == "stream":
            await _from_stream(client, topic, name, limit, wait, not no_ack, printer)
        elif group is not None:
            raise CliError(f"{name!r} on {topic!r} is a {mode} subscription: use --subscription")
        else:
            await _from_queue(client, topic, name, limit, wait, not no_ack, printer)
        return mode

    try:
        mode = run(receive)
    except BaseException:
        printer.close(failed=True)  # what was printed stays a whole JSON array
        raise
    printer.close()
    if not as_json:
        if mode == "stream":
            settled = "not committed" if no_ack else "committed"
        else:
            settled = "given back" if no_ack else "acked"
        click.echo(f"{render.plural(printer.count, 'message')} {settled}", err=True)


async def _mode(client: Client, topic: str, name: str, stream: bool, start: Start | None) -> str:
    """The subscription's mode, after making it if ``--from`` asks for that."""
    for spec in await client.list_subscriptions(topic):
        if spec.name == name:
            return spec.mode
    mode: Literal["stream", "queue"] = "stream" if stream else "queue"
    if start is not None:
        await client.create_subscription(topic, name, mode=mode, start=start)
    return mode  # if missing, receiving says so


async def _from_queue(
    client: Client,
    topic: str,
    name: str,
    limit: int | None,
    wait: float,
    ack: bool,
    printer: _Printer,
) -> None:
    held: list[Receipt] = []
    try:
        while limit is None or printer.count < limit:
            want = CONSUME_BATCH if limit is None else min(CONSUME_BATCH, limit - printer.count)
            batch = await client.receive(topic, name, max_messages=want, wait=wait)
            if not batch:
                return
            for delivery in batch:
                printer.emit(delivery.message)
            receipts = [delivery.receipt for delivery in batch]
            if ack:
                await client.ack(topic, name, receipts)
            else:
                held += receipts
    finally:
        if held:
            await client.nack(topic, name, held, delay=0)


async def _from_stream(
    client: Client,
    topic: str,
    group: str,
    limit: int | None,
    wait: float,
    commit: bool,
    printer: _Printer,
) -> None:
    member = await client.join(topic, group, client="roost consume")
    try:
        while limit is None or printer.count < limit:
            want = CONSUME_BATCH if limit is None else min(CONSUME_BATCH, limit - printer.count)
            records = await member.fetch(max_records=want, wait=wait)
            if not records:
                return
            for record in records:
                printer.emit(record)
            if commit:
                await member.commit()
    finally:
        await member.leave()
