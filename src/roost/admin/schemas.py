"""The admin API's request and response bodies, as msgspec Structs.

Core types that already read well as JSON (``TopicInfo``, ``SubscriptionSpec``, ``ExchangeSpec``,
``BindingSpec``, the stats, ``GroupDescription``) are answered as they are; this module holds
what the API adds around them: the bodies of requests, and views that join several core
answers. Bytes travel as base64 (``key``, ``value``); a message also carries them as text when
they are UTF-8, so an operator can read them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from roost.core.inspection import MAX_PEEK_MESSAGES, Peeked, PeekState
from roost.core.model import Message, Mode, StartPosition, SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.retry import DEFAULT_RETRY, RetryPolicy
from roost.core.routing import BindingSpec
from roost.core.stats import StreamStats, SubscriptionStats
from roost.storage import PartitionInfo, TopicConfig

# -- health ---------------------------------------------------------------------------------


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok", "ready"]


# -- topics ---------------------------------------------------------------------------------


class NewTopic(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    config: TopicConfig = TopicConfig()
    policy: TopicPolicy = TopicPolicy()


class TopicView(msgspec.Struct, frozen=True):
    name: str
    config: TopicConfig
    policy: TopicPolicy
    partitions: list[PartitionInfo]
    #: Names of its subscriptions.
    subscriptions: list[str]


Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PEEK_MESSAGES)]
Partition = Annotated[int, msgspec.Meta(ge=0)]


class ReadQuery(msgspec.Struct, frozen=True):
    partition: Partition = 0
    #: Where to start (default: the partition's first record).
    offset: Annotated[int, msgspec.Meta(ge=0)] | None = None
    limit: Limit = 10


class PeekQuery(msgspec.Struct, frozen=True):
    #: Only this partition (default: every partition, in order).
    partition: Partition | None = None
    limit: Limit = 10


class DeadLetterQuery(msgspec.Struct, frozen=True):
    #: Only this partition (default: every partition, in order).
    partition: Partition | None = None
    limit: Limit = 10
    #: ``PARTITION@OFFSET`` of the last letter of the page before: the next page starts past it.
    after: Annotated[str, msgspec.Meta(pattern=r"^\d{1,9}@\d{1,18}$")] | None = None


class Header(msgspec.Struct, frozen=True):
    name: str
    value: bytes
    #: ``value`` as text when it is UTF-8, else null.
    text: str | None


class MessageView(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    key_text: str | None
    value_text: str | None
    headers: list[Header]
    #: Deliveries so far (peek) or of this delivery; 0 for a record read from the log.
    delivery_count: int
    #: Peeked messages only: pending, leased (until ``until_ms``) or delayed (until ``until_ms``).
    state: PeekState | None = None
    until_ms: int | None = None


def message_view(message: Message, peeked: Peeked | None = None) -> MessageView:
    return MessageView(
        message.topic, message.partition, message.offset, message.timestamp_ms, message.key,
        message.value, _text(message.key), _text(message.value),
        [Header(name, value, _text(value)) for name, value in message.headers],
        message.delivery_count,
        peeked.state if peeked is not None else None,
        peeked.until_ms if peeked is not None else None,
    )  # fmt: skip


def peeked_views(peeked: list[Peeked]) -> list[MessageView]:
    return [message_view(p.message, p) for p in peeked]


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


# -- subscriptions and queues ---------------------------------------------------------------


class NewSubscription(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A subscription on the topic of the URL; fields as in ``SubscriptionSpec``."""

    name: str
    mode: Mode = "queue"
    start: StartPosition = "latest"
    visibility_timeout_ms: int = 30_000
    max_deliveries: int | None = 10
    #: Must exist; required for queue/keyed unless max_deliveries is null (retry forever).
    dead_letter: str | None = None
    delay_ms: int = 0
    retry: RetryPolicy = RetryPolicy()


class SubscriptionView(msgspec.Struct, frozen=True):
    spec: SubscriptionSpec
    #: For queue and keyed subscriptions.
    stats: SubscriptionStats | None
    #: For stream subscriptions (consumer groups).
    stream: StreamStats | None


class NewQueue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    #: In order per key, one in flight per key (`keyed` mode).
    fifo: bool = False
    partitions: int = 1
    visibility_timeout_ms: int = 30_000
    max_deliveries: int | None = 10
    #: Absent: ``<name>.dlq``, made if missing; null: none (needs max_deliveries null).
    dead_letter: str | None = ""
    delay_ms: int = 0
    durability: Literal["always", "interval", "never"] = "always"
    retention_ms: int | None = None
    policy: TopicPolicy | None = None
    #: When a failed delivery comes again (nack without a delay, a lease that ran out).
    retry: RetryPolicy = DEFAULT_RETRY
    #: Deliveries a second at most, over all consumers; null: no limit.
    rate_limit_per_s: float | None = None
    #: Deliveries at once at most; null: a second's worth.
    rate_burst: int | None = None


class Purged(msgspec.Struct, frozen=True):
    purged: int


# -- exchanges ------------------------------------------------------------------------------


class ExchangeView(msgspec.Struct, frozen=True):
    name: str
    kind: str
    alternate: str | None
    bindings: list[BindingSpec]


class BindingsQuery(msgspec.Struct, frozen=True):
    #: Only this exchange's bindings (default: every exchange's).
    exchange: str | None = None


# -- dead letters ---------------------------------------------------------------------------


class DeadLetters(msgspec.Struct, frozen=True):
    topic: str
    subscription: str
    dead_letter_topic: str
    #: Dead letters waiting (not redriven).
    dead_letters: int


class RedriveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which dead letters to move back, and how fast; every filter given must match."""

    #: Only those dead-lettered from this topic.
    source_topic: str | None = None
    #: Only those with this key (UTF-8).
    key: str | None = None
    #: Only those whose last error contains this.
    error_contains: str | None = None
    #: Only those carrying these headers with these (UTF-8) values.
    headers: dict[str, str] | None = None
    #: Messages a second at most.
    rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 100.0
    #: Publish them here instead of to their source topic.
    to: str | None = None


class Moved(msgspec.Struct, frozen=True):
    moved: int


# -- consumer groups ------------------------------------------------------------------------


class SeekRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where to move an idle group's committed offsets: ``to`` or ``timestamp_ms``, not both."""

    to: int | Literal["earliest", "latest"] | None = None
    #: The first record at or after this time (ms since the epoch); the end if none.
    timestamp_ms: int | None = None
    #: Only these partitions (default: all).
    partitions: list[int] | None = None


# -- users, tokens and grants ---------------------------------------------------------------


class NewUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    #: 8 to 1024 characters; only its SCRAM keys are kept.
    password: str
    #: Grant ``admin``: everything, users and grants included.
    admin: bool = False


class NewPassword(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    password: str


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A token for ``user``; its secret is in the answer, and nowhere ever again."""

    user: str
    #: Refused this long after it is made (by the broker's clock); null: never.
    expires_in_ms: Annotated[int, msgspec.Meta(ge=1)] | None = None
    description: str = ""


class TokensQuery(msgspec.Struct, frozen=True):
    #: Only this user's tokens (default: everyone's).
    user: str | None = None
