"""How results look: rich tables for people, plain builtins for ``--json``.

Bytes (values, keys, header values) are shown as text when they are UTF-8. In JSON such a
field is a string when it decodes and ``{"base64": "..."}`` when it does not, so a reader
tells the two apart without guessing; for people it is the text, or ``base64:...``.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Sequence

from rich.table import Table

from roost.core.inspection import Peeked
from roost.core.model import Message, SubscriptionSpec
from roost.core.publishing import Published
from roost.core.redrive import RedriveTask
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.core.stats import GroupDescription, StreamStats, SubscriptionStats
from roost.server.identities import TokenInfo, UserInfo
from roost.storage import TopicInfo

#: Past this many messages, ``publish`` shows ranges per partition instead of one row each.
MAX_PUBLISHED_ROWS = 20
#: Values longer than this are cut in tables (``--json`` has them whole).
MAX_SHOWN_CHARS = 60

Text = str | dict[str, str]


def text(data: bytes) -> Text:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def shown(data: bytes | None, limit: int = MAX_SHOWN_CHARS) -> str:
    if data is None:
        return ""
    decoded = text(data)
    out = decoded if isinstance(decoded, str) else f"base64:{decoded['base64']}"
    return out if len(out) <= limit else out[: limit - 1] + "…"


def message_json(message: Message) -> dict[str, object]:
    """A message as JSON. A dead letter's ``delivery_count`` is how often it was tried where
    it died (its ``x-roost-delivery-count``), not its deliveries as a record of its topic."""
    tried = message.header("x-roost-delivery-count")
    return {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "timestamp_ms": message.timestamp_ms,
        "key": None if message.key is None else text(message.key),
        "value": text(message.value),
        "headers": [[name, text(value)] for name, value in message.headers],
        "delivery_count": message.delivery_count if tried is None else int(tried),
    }


def message_line(message: Message) -> str:
    """One received message for people: where, key, headers, value."""
    parts = [f"{message.topic}/{message.partition}@{message.offset}"]
    if message.key is not None:
        parts.append(f"key={shown(message.key)}")
    parts += [f"{name}={shown(value)}" for name, value in message.headers]
    parts.append(shown(message.value, limit=10_000))
    return " ".join(parts)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def when(ms: int) -> str:
    """A wall-clock time in ms since the epoch, in UTC to the minute: ``2026-12-07 03:20Z``."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%MZ")


def size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def topics_table(infos: Sequence[TopicInfo]) -> Table:
    table = Table("topic", "partitions", "records", "size", "durability", "retention")
    for info in infos:
        records = sum(p.end_offset - p.start_offset for p in info.partitions)
        retention = info.config.retention_ms
        table.add_row(
            info.name,
            str(len(info.partitions)),
            f"{records:,}",
            size(sum(p.size_bytes for p in info.partitions)),
            info.config.durability,
            "forever" if retention is None else age(retention),
        )
    return table


def topic_tables(info: TopicInfo) -> tuple[Table, Table]:
    """The topic's configuration, then one row per partition."""
    config = Table("setting", "value", title=f"topic {info.name}")
    for field in info.config.__struct_fields__:
        config.add_row(field, str(getattr(info.config, field)))
    partitions = Table("partition", "start", "end", "durable", "size", "segments")
    for p in info.partitions:
        partitions.add_row(
            str(p.partition),
            str(p.start_offset),
            str(p.end_offset),
            str(p.durable_offset),
            size(p.size_bytes),
            str(p.segments),
        )
    return config, partitions


def queues_table(specs: Sequence[SubscriptionSpec], stats: Sequence[SubscriptionStats]) -> Table:
    table = Table(
        "queue",
        "kind",
        "depth",
        "in flight",
        "delayed",
        "visibility",
        "max deliveries",
        "dead letter",
    )
    for spec, s in zip(specs, stats, strict=True):
        table.add_row(
            spec.name,
            "fifo" if spec.mode == "keyed" else spec.mode,
            str(s.depth),
            str(s.in_flight),
            str(s.delayed),
            age(spec.visibility_timeout_ms),
            str(spec.max_deliveries or "∞"),
            spec.dead_letter or "-",
        )
    return table


def subscriptions_table(
    specs: Sequence[SubscriptionSpec], stats: Sequence[SubscriptionStats | StreamStats]
) -> Table:
    """One row per subscription: what it is, and how much it has left (a queue's backlog,
    a stream's lag)."""
    table = Table("topic", "subscription", "mode", "left to read", "in flight", "dead letter")
    for spec, s in zip(specs, stats, strict=True):
        if isinstance(s, StreamStats):
            left, in_flight = f"{s.lag} (lag)", f"{len(s.members)} members"
        else:
            left, in_flight = str(s.backlog), str(s.in_flight)
        table.add_row(spec.topic, spec.name, spec.mode, left, in_flight, spec.dead_letter or "-")
    return table


def subscription_settings(spec: SubscriptionSpec) -> Table:
    table = Table("setting", "value", title=f"{spec.topic} / {spec.name}")
    table.add_row("mode", spec.mode)
    table.add_row("started from", spec.start)
    if spec.mode != "stream":
        table.add_row("visibility timeout", age(spec.visibility_timeout_ms))
        table.add_row("max deliveries", str(spec.max_deliveries or "∞ (retried forever)"))
        table.add_row("dead letter", spec.dead_letter or "-")
        table.add_row("delay", age(spec.delay_ms))
        retry = spec.retry
        table.add_row(
            "retry",
            f"{retry.kind} from {age(retry.base_ms)} to {age(retry.max_ms)}, jitter {retry.jitter}",
        )
    return table


def groups_table(groups: Sequence[GroupDescription]) -> Table:
    table = Table("group", "members", "generation", "lag")
    for g in groups:
        table.add_row(g.group, str(len(g.members)), str(g.generation), str(g.lag))
    return table


def group_tables(group: GroupDescription) -> tuple[Table, Table]:
    """Per partition (owner, where it reads, commit, lag), then the members."""
    partitions = Table(
        "partition", "start", "end", "committed", "position", "lag", "owner",
        title=f"{group.topic} / {group.group} (generation {group.generation}, lag {group.lag})",
    )  # fmt: skip
    for p in group.partitions:
        position = "-" if p.position is None else str(p.position)
        partitions.add_row(str(p.partition), str(p.start_offset), str(p.end_offset),
                           str(p.committed), position, str(p.lag), p.owner or "-")  # fmt: skip
    members = Table("member", "partitions", "session expires in")
    for m in group.members:
        owned = ", ".join(map(str, m.partitions)) or "-"
        members.add_row(m.member_id, owned, age(m.session_expires_in_ms))
    return partitions, members


def redrive_tasks_table(tasks: Sequence[RedriveTask]) -> Table:
    table = Table("task", "dead-letter topic", "state", "moved", "waiting at start", "rate/s",
                  "started", "finished")  # fmt: skip
    for t in tasks:
        state = t.state if t.error is None else f"{t.state}: {t.error}"
        table.add_row(t.id, t.dead_letter_topic, state, str(t.moved), str(t.to_move),
                      f"{t.rate_per_s:g}", when(t.started_ms),
                      "-" if t.finished_ms is None else when(t.finished_ms))  # fmt: skip
    return table


def stats_table(
    stats: SubscriptionStats | StreamStats, rates: dict[str, float] | None = None
) -> Table:
    """Per partition, then the total. A queue subscription's ``lag`` is its backlog (every
    message not yet acked or dead-lettered); its dead letters are counted on the total row.
    ``rates`` (``stats --watch``) go in the caption."""
    table = _stream_table(stats) if isinstance(stats, StreamStats) else _queue_table(stats)
    if isinstance(stats, SubscriptionStats) and stats.rate_limit_per_s is not None:
        table.title = (f"{table.title} · at most {stats.rate_limit_per_s:g}/s, "
                       f"held back {plural(stats.throttled, 'time')}")  # fmt: skip
    if rates is not None:
        finished = "committed" if isinstance(stats, StreamStats) else "finished"
        table.caption = (
            f"published {rates['published_per_s']:,.1f}/s · "
            f"{finished} {rates['finished_per_s']:,.1f}/s"
        )
    return table


def _queue_table(stats: SubscriptionStats) -> Table:
    title = f"{stats.topic} / {stats.subscription} ({stats.mode})"
    table = Table(
        "partition", "depth", "in flight", "delayed", "oldest age", "lag", "DLQ", title=title
    )
    for p in stats.partitions:
        table.add_row(
            str(p.partition),
            str(p.depth),
            str(p.in_flight),
            str(p.delayed),
            age(p.oldest_age_ms),
            str(p.backlog),
            "",
        )
    dlq = f"{stats.dead_letters} in {stats.dead_letter_topic}" if stats.dead_letter_topic else "-"
    table.add_row(
        "all",
        str(stats.depth),
        str(stats.in_flight),
        str(stats.delayed),
        age(stats.oldest_age_ms),
        str(stats.backlog),
        dlq,
        style="bold",
    )
    return table


def _stream_table(stats: StreamStats) -> Table:
    title = f"{stats.topic} / {stats.subscription} (stream, generation {stats.generation})"
    table = Table("partition", "end", "committed", "lag", "owner", title=title)
    for p in stats.partitions:
        table.add_row(
            str(p.partition), str(p.end_offset), str(p.committed), str(p.lag), p.owner or "-"
        )
    table.add_row("all", "", "", str(stats.lag), f"{len(stats.members)} members", style="bold")
    return table


def exchanges_table(exchanges: Sequence[ExchangeSpec], bindings: Sequence[BindingSpec]) -> Table:
    table = Table("exchange", "kind", "alternate", "bindings")
    for exchange in exchanges:
        bound = [binding_text(b) for b in bindings if b.exchange == exchange.name]
        table.add_row(exchange.name, exchange.kind, exchange.alternate or "-", "\n".join(bound))
    return table


def binding_text(binding: BindingSpec) -> str:
    """``-> topic`` with whichever of key, headers and weight the binding uses."""
    words = [f"-> {binding.topic}"]
    if binding.key:
        words.append(f"key={binding.key}")
    if binding.headers:
        pairs = [f"{n}={'*' if v is None else shown(v)}" for n, v in binding.headers.items()]
        words.append(f"{binding.match}({', '.join(pairs)})")
    if binding.weight != 1:
        words.append(f"weight={binding.weight}")
    return " ".join(words)


def published_table(placed: Sequence[Published]) -> Table:
    """Where each message landed; past ``MAX_PUBLISHED_ROWS``, the range per partition."""
    if len(placed) <= MAX_PUBLISHED_ROWS:
        table = Table("#", "topic", "partition", "offset")
        for i, p in enumerate(placed):
            table.add_row(str(i), p.topic, str(p.partition), str(p.offset))
        return table
    ranges: dict[tuple[str, int], list[int]] = {}
    for p in placed:
        ranges.setdefault((p.topic, p.partition), []).append(p.offset)
    table = Table("topic", "partition", "messages", "first offset", "last offset")
    for (topic, partition), offsets in sorted(ranges.items()):
        table.add_row(
            topic, str(partition), str(len(offsets)), str(min(offsets)), str(max(offsets))
        )
    return table


def peeked_table(peeked: Sequence[Peeked]) -> Table:
    table = Table("at", "state", "until", "deliveries", "key", "value")
    for seen in peeked:
        message = seen.message
        table.add_row(
            f"{message.partition}@{message.offset}", seen.state,
            "" if seen.until_ms is None else when(seen.until_ms), str(message.delivery_count),
            shown(message.key), shown(message.value),
        )  # fmt: skip
    return table


def dead_letters_table(messages: Sequence[Message]) -> Table:
    table = Table("at", "from", "deliveries", "last error", "key", "value")
    for message in messages:
        headers = dict(message.headers)
        source = "{}/{}@{}".format(
            *(
                shown(headers.get(f"x-roost-source-{field}"))
                for field in ("topic", "partition", "offset")
            )
        )
        table.add_row(
            f"{message.partition}@{message.offset}",
            source,
            shown(headers.get("x-roost-delivery-count")),
            shown(headers.get("x-roost-last-error")),
            shown(message.key),
            shown(message.value),
        )
    return table


def users_table(users: Sequence[UserInfo]) -> Table:
    table = Table("user", "admin", "grants", "created")
    for info in users:
        grants = "\n".join(str(g) for g in info.grants if g.operation != "admin")
        table.add_row(info.name, "yes" if info.admin else "", grants, when(info.created_ms))
    return table


def tokens_table(tokens: Sequence[TokenInfo]) -> Table:
    """Ids, never secrets (a listing has none to show)."""
    table = Table("token", "user", "created", "expires", "description")
    for t in tokens:
        expires = "never" if t.expires_ms is None else when(t.expires_ms)
        table.add_row(t.id, t.user, when(t.created_ms), expires, t.description)
    return table


def grants_table(users: Sequence[UserInfo]) -> Table:
    table = Table("user", "operation", "resource")
    for info in users:
        for g in info.grants:
            resource = "broker" if g.kind == "broker" else f"{g.kind}:{g.pattern}"
            table.add_row(info.name, g.operation, resource)
    return table
