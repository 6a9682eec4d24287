"""The native protocol's messages: what a frame's MessagePack payload holds, per frame kind.

Requests and responses are tagged unions: each is a MessagePack array whose first element is
the operation's number (the same for a request and its response), so one decoder per direction
turns any payload into the right struct and refuses anything else. The numbers are the wire
contract: never renumber, only add. Times are milliseconds and sizes bytes, as in the core.

    Publish(topic="emails", messages=[Out(value=b"hi")])   ->  [20, "emails", [[b"hi", ...]], ...]
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from roost.receipt import Receipt

Headers = list[tuple[str, bytes]]


class _Msg(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    pass


# -- connection --------------------------------------------------------------------------


class Hello(_Msg):
    """Client -> server, first frame: the protocol versions it speaks, newest first."""

    versions: list[int]
    client: str = ""


class Welcome(_Msg):
    """Server -> client: the version chosen and the limits the server enforces; from version
    4, whether the client must authenticate before its first request, and how it may."""

    version: int
    server: str
    max_frame_bytes: int
    heartbeat_ms: int
    auth_required: bool = False
    mechanisms: list[str] = msgspec.field(default_factory=list)


class Auth(_Msg):
    """Client -> server (version 4): one step of authenticating with ``mechanism`` (one the
    ``WELCOME`` offered, the same in every step of one exchange). ``data`` is the mechanism's
    own message, opaque to the codec: a SCRAM client-first or client-final message (RFC
    5802), an API token, or nothing for ``EXTERNAL``."""

    mechanism: str
    data: bytes = b""


class AuthChallenge(_Msg):
    """Server -> client (version 4): the mechanism's next message (a SCRAM server-first);
    the client answers it with another ``AUTH``."""

    data: bytes


class AuthOk(_Msg):
    """Server -> client (version 4): authenticated as ``principal``; requests may follow.
    ``data`` is the mechanism's last word (a SCRAM server-final message, which proves the
    server knows the user's keys: the client checks it before trusting the connection)."""

    principal: str
    data: bytes = b""


class Failure(_Msg):
    """Any error: a stable code from roost.errors, a sentence, whether a retry may work, and
    (version 4) the data the error carries (``RoostError.details``: the topic, the limit...),
    so the client raises the same error with the same attributes. Empty details are not sent
    at all (the codec drops trailing added fields at their defaults), so a version-1 to 3
    peer decodes every failure."""

    code: str
    message: str
    retriable: bool = False
    details: dict[str, Any] = msgspec.field(default_factory=dict)


# -- records -----------------------------------------------------------------------------


class Out(_Msg):
    """A message to publish (``Outgoing`` on the wire)."""

    value: bytes
    key: bytes | None = None
    headers: Headers = msgspec.field(default_factory=list)
    partition: int | None = None
    deliver_at_ms: int | None = None
    delay_ms: int | None = None
    dedup_id: str | None = None
    #: Version 8: expired (never delivered) this long after the publish.
    ttl_ms: int | None = None


class Delivered(_Msg):
    """A delivered message (``Message`` on the wire); its receipt is (partition, offset,
    delivery_count)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers
    delivery_count: int


class Placed(_Msg):
    partition: int
    offset: int


# -- settings: the typed fields of definition requests -----------------------------------


class _Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Named fields (a MessagePack map, as the dicts of versions 1-3 were, so old peers and new
    decode each other). A field left ``UNSET`` is not sent and takes the broker's default: the
    defaults live in one place, the core. A field the broker does not know, or of the wrong
    type, fails the frame: ``ProtocolError`` naming it."""


class TopicSettings(_Settings):
    """A topic's storage settings (``TopicConfig`` in the core)."""

    partitions: int | UnsetType = UNSET
    durability: str | UnsetType = UNSET  # always | interval | never
    flush_interval_ms: int | UnsetType = UNSET
    flush_interval_records: int | UnsetType = UNSET
    segment_max_bytes: int | UnsetType = UNSET
    segment_max_age_ms: int | UnsetType = UNSET
    retention_ms: int | UnsetType | None = UNSET
    retention_bytes: int | UnsetType | None = UNSET
    max_record_bytes: int | UnsetType = UNSET
    index_interval_bytes: int | UnsetType = UNSET
    # Version 8 (compaction): the client sends them only on a version-8 connection.
    cleanup: str | UnsetType = UNSET  # delete | compact | compact,delete
    tombstone_retention_ms: int | UnsetType = UNSET


class BacklogPolicy(_Settings):
    """A topic's bounds on unconsumed messages (``TopicPolicy``)."""

    max_backlog_messages: int | UnsetType | None = UNSET
    max_backlog_bytes: int | UnsetType | None = UNSET
    overflow: str | UnsetType = UNSET  # reject | block | drop_oldest
    block_timeout_ms: int | UnsetType = UNSET
    retain_until_consumed: bool | UnsetType = UNSET
    dedup_window_ms: int | UnsetType = UNSET
    content_dedup: bool | UnsetType = UNSET
    #: Version 8 (sent only on a connection whose ``WELCOME`` said 8).
    dead_letter_dropped: bool | UnsetType = UNSET


class RetrySettings(_Settings):
    """A subscription's redelivery backoff (``RetryPolicy``)."""

    kind: str | UnsetType = UNSET  # fixed | exponential
    base_ms: int | UnsetType = UNSET
    max_ms: int | UnsetType = UNSET
    jitter: float | UnsetType = UNSET


class SubscriptionSettings(_Settings):
    """A subscription to make (``SubscriptionSpec``, less what the broker assigns)."""

    name: str
    topic: str
    mode: str | UnsetType = UNSET  # stream | queue | keyed
    start: str | UnsetType = UNSET  # earliest | latest
    visibility_timeout_ms: int | UnsetType = UNSET
    max_deliveries: int | UnsetType | None = UNSET
    dead_letter: str | UnsetType | None = UNSET
    delay_ms: int | UnsetType = UNSET
    retry: RetrySettings | UnsetType = UNSET
    #: Version 8: sent only on a connection whose ``WELCOME`` said 8.
    rate_limit_per_s: float | UnsetType | None = UNSET
    rate_burst: int | UnsetType | None = UNSET
    #: Version 8 (sent only on a connection whose ``WELCOME`` said 8, as ``retry`` below).
    message_ttl_ms: int | UnsetType | None = UNSET


class QueueSettings(_Settings):
    """``create_queue``'s options."""

    fifo: bool | UnsetType = UNSET
    partitions: int | UnsetType = UNSET
    visibility_timeout_ms: int | UnsetType = UNSET
    max_deliveries: int | UnsetType | None = UNSET
    dead_letter: str | UnsetType | None = UNSET  # "" (the default): <name>.dlq
    delay_ms: int | UnsetType = UNSET
    durability: str | UnsetType = UNSET
    retention_ms: int | UnsetType | None = UNSET
    policy: BacklogPolicy | UnsetType = UNSET
    #: Version 7: a client sends it only on a connection whose ``WELCOME`` said 7 (an older
    #: broker refuses a settings field it does not know).
    retry: RetrySettings | UnsetType = UNSET
    #: Version 8, as ``retry``: the queue's delivery rate limit.
    rate_limit_per_s: float | UnsetType | None = UNSET
    rate_burst: int | UnsetType | None = UNSET
    #: Version 8: the queue's default message TTL (RabbitMQ's ``x-message-ttl``).
    message_ttl_ms: int | UnsetType | None = UNSET


class Binding(_Settings):
    """An exchange's binding to a topic (``BindingSpec``)."""

    exchange: str
    topic: str
    key: str | UnsetType = UNSET
    headers: dict[str, bytes | None] | UnsetType | None = UNSET
    match: str | UnsetType = UNSET  # all | any
    weight: int | UnsetType = UNSET


class RedriveWhere(_Settings):
    """Which dead letters a redrive moves: those matching every field given (``RedriveFilter``)."""

    source_topic: str | UnsetType | None = UNSET
    key: bytes | UnsetType | None = UNSET
    error_contains: str | UnsetType | None = UNSET
    headers: dict[str, bytes] | UnsetType | None = UNSET


# -- requests ----------------------------------------------------------------------------


class Request(_Msg):
    pass


class CreateTopic(Request, tag=1):
    name: str
    config: TopicSettings = msgspec.field(default_factory=TopicSettings)
    policy: BacklogPolicy = msgspec.field(default_factory=BacklogPolicy)


class ListTopics(Request, tag=2):
    pass


class DescribeTopic(Request, tag=3):
    name: str


class DeleteTopic(Request, tag=4):
    name: str


class CreateQueue(Request, tag=5):
    name: str
    options: QueueSettings = msgspec.field(default_factory=QueueSettings)


class DeleteQueue(Request, tag=6):
    name: str


class CreateSubscription(Request, tag=7):
    spec: SubscriptionSettings


class ListSubscriptions(Request, tag=8):
    topic: str | None = None


class DeleteSubscription(Request, tag=9):
    topic: str
    name: str


class DeclareExchange(Request, tag=10):
    name: str
    kind: str
    alternate: str | None = None


class DeleteExchange(Request, tag=11):
    name: str


class ListExchanges(Request, tag=12):
    pass


class Bind(Request, tag=13):
    binding: Binding


class Unbind(Request, tag=14):
    binding: Binding


class ListBindings(Request, tag=15):
    exchange: str | None = None


class Publish(Request, tag=20):
    topic: str
    messages: list[Out]
    producer_id: str | None = None
    sequence: int | None = None


class PublishToExchange(Request, tag=21):
    exchange: str
    routing_key: str
    messages: list[Out]


class Receive(Request, tag=30):
    topic: str
    subscription: str
    max_messages: int = 1
    wait_ms: int = 0
    visibility_ms: int | None = None


class Ack(Request, tag=31):
    """Receipts (on the wire ``[partition, offset, delivery]`` arrays, decoded straight into
    the core's ``Receipt``): one frame acks a whole batch. With ``answer`` false (version 3)
    the server sends nothing back, as AMQP's ``basic.ack``: a refused receipt then shows
    only as the message delivered again."""

    topic: str
    subscription: str
    receipts: list[Receipt]
    answer: bool = True


class Nack(Request, tag=32):
    """Give leased messages back. With ``undelivered`` (version 6) they never reached a
    handler (a closing subscriber had them prefetched): ready again at once, their delivery
    not counted; ``delay_ms`` and ``error`` are then None. With ``reject`` (version 7) they go
    straight to the dead-letter topic (``x-roost-death-reason: rejected``); ``delay_ms`` is
    then None."""

    topic: str
    subscription: str
    receipts: list[Receipt]
    delay_ms: int | None = None
    error: str | None = None
    undelivered: bool = False
    reject: bool = False


class Extend(Request, tag=33):
    topic: str
    subscription: str
    receipts: list[Receipt]
    visibility_ms: int


class Subscribe(Request, tag=34):
    """Start pushing deliveries of a subscription on this connection (``Delivery`` frames whose
    correlation id is this request's), as ``Credit`` frames allow."""

    topic: str
    subscription: str
    credit: int


class Unsubscribe(Request, tag=35):
    """Stop the pushes a ``Subscribe`` started; answered once the last ``Deliveries`` frame of
    it has been sent, so every delivery it pushed arrives before this answer."""

    subscribe: int  # the correlation id of the Subscribe


class Join(Request, tag=40):
    topic: str
    group: str
    member_id: str | None = None
    client: str = ""


class Heartbeat(Request, tag=41):
    topic: str
    group: str
    member_id: str
    generation: int


class Leave(Request, tag=42):
    topic: str
    group: str
    member_id: str


class Fetch(Request, tag=43):
    topic: str
    group: str
    member_id: str
    generation: int
    max_records: int = 500
    wait_ms: int = 0


class Commit(Request, tag=44):
    topic: str
    group: str
    member_id: str
    generation: int
    offsets: dict[int, int]


class Seek(Request, tag=45):
    topic: str
    group: str
    member_id: str
    generation: int
    partition: int
    to: int | str  # an offset, "earliest" or "latest"


class SeekToTime(Request, tag=46):
    topic: str
    group: str
    member_id: str
    generation: int
    partition: int
    timestamp_ms: int


class FetchBatches(Request, tag=47):
    """``Fetch``, answered with ``Batches``: the records as the broker stores them. Protocol
    version 2; a client sends it only on a connection whose ``WELCOME`` said 2."""

    topic: str
    group: str
    member_id: str
    generation: int
    max_records: int = 500
    wait_ms: int = 0


class Stats(Request, tag=50):
    topic: str
    subscription: str


class Peek(Request, tag=36):
    """Version 7: a subscription's messages as they stand (pending, leased or delayed), lowest
    offsets first, without leasing them or counting a delivery."""

    topic: str
    subscription: str
    max_messages: int = 10
    partition: int | None = None


class Purge(Request, tag=37):
    """Version 7: delete every message of a subscription that is ready or leased (what is not
    yet confirmed stays), as the admin API's purge."""

    topic: str
    subscription: str


class Redrive(Request, tag=51):
    dead_letter_topic: str
    where: RedriveWhere = msgspec.field(default_factory=RedriveWhere)
    rate_per_s: float = 100.0
    to: str | None = None


class StartRedrive(Request, tag=52):
    """Version 8: ``Redrive`` as a task in the background, kept across restarts; answered at
    once with the task (``Described(RedriveTaskAnswer)``)."""

    dead_letter_topic: str
    where: RedriveWhere = msgspec.field(default_factory=RedriveWhere)
    rate_per_s: float = 100.0
    to: str | None = None


class ListRedrives(Request, tag=53):
    """Version 8: redrive tasks, newest first (of one dead-letter topic, if named)."""

    dead_letter_topic: str | None = None


class CancelRedrive(Request, tag=54):
    """Version 8: stop a running redrive task; what it moved stays moved."""

    dead_letter_topic: str
    task_id: str


AnyRequest = (
    CreateTopic | ListTopics | DescribeTopic | DeleteTopic | CreateQueue | DeleteQueue
    | CreateSubscription | ListSubscriptions | DeleteSubscription | DeclareExchange
    | DeleteExchange | ListExchanges | Bind | Unbind | ListBindings | Publish
    | PublishToExchange | Receive | Ack | Nack | Extend | Subscribe | Unsubscribe | Join
    | Heartbeat | Leave | Fetch | Commit | Seek | SeekToTime | FetchBatches | Stats | Redrive
    | Peek | Purge | StartRedrive | ListRedrives | CancelRedrive
)  # fmt: skip


# -- responses ---------------------------------------------------------------------------


class Response(_Msg):
    pass


class Done(Response, tag=0):
    """A request with nothing to return succeeded."""


class Described(Response, tag=1):
    """A definition or a reading: ``value`` is the answer struct ``ANSWERS`` names for the
    request (a MessagePack map, or a list of them, a list of names, a boolean)."""

    value: object


class Names(Response, tag=2):
    names: list[str]


class PublishedAt(Response, tag=20):
    """Where each message landed, in the order sent: runs of consecutive offsets, one entry
    per run (topic, partition, first offset, count)."""

    runs: list[tuple[str, int, int, int]]


class Messages(Response, tag=30):
    messages: list[Delivered]


class Refused(Response, tag=31):
    """Receipts whose lease had expired (the rest were settled)."""

    receipts: list[Receipt]


class PeekedMessage(_Msg):
    """One message of a ``Peeked`` answer: ``state`` is pending, leased or delayed;
    ``until_ms`` the lease's deadline or when a delayed message becomes visible."""

    message: Delivered
    state: str
    until_ms: int | None = None


class Peeked(Response, tag=36):
    messages: list[PeekedMessage]


class Purged(Response, tag=37):
    count: int


class Membership(Response, tag=40):
    member_id: str
    generation: int
    partitions: list[int]
    session_timeout_ms: int


class Records(Response, tag=43):
    records: list[Delivered]
    # The member's assignment as of this fetch, so a fetch is also its heartbeat: one round trip.
    membership: Membership


class Fetched(_Msg):
    """One partition's records in a ``Batches`` answer: ``[first_offset, next_offset)``, held by
    ``batches``, whole record batches in the storage format (docs/storage-format.md), each with
    its CRC. They may begin below ``first_offset`` and end past ``next_offset``: a batch is never
    split, and the reader skips the records outside the window."""

    partition: int
    first_offset: int
    next_offset: int
    batches: bytes


class Batches(Response, tag=47):
    partitions: list[Fetched]
    # As in ``Records``: the member's assignment as of this fetch.
    membership: Membership


class Position(Response, tag=45):
    offset: int


class Moved(Response, tag=51):
    count: int


AnyResponse = (
    Done | Described | Names | PublishedAt | Messages | Refused | Membership | Records
    | Position | Batches | Moved | Peeked | Purged
)  # fmt: skip


# -- answers: what a Described holds, per request -------------------------------------------


class _Answer(msgspec.Struct, kw_only=True):
    """Named fields, as the settings are; the broker fills every one. A field this side does
    not know (a newer broker's) is ignored: answers may grow, never change."""


class TopicConfigAnswer(_Answer):
    partitions: int
    durability: str
    flush_interval_ms: int
    flush_interval_records: int
    segment_max_bytes: int
    segment_max_age_ms: int
    retention_ms: int | None
    retention_bytes: int | None
    max_record_bytes: int
    index_interval_bytes: int
    # Version 8 (compaction); an older broker's answer lacks them: its topics delete.
    cleanup: str = "delete"
    tombstone_retention_ms: int = 24 * 3600 * 1000


class PartitionAnswer(_Answer):
    partition: int
    start_offset: int
    end_offset: int
    durable_offset: int
    size_bytes: int
    segments: int


class TopicAnswer(_Answer):
    name: str
    config: TopicConfigAnswer
    partitions: list[PartitionAnswer]


class RetryAnswer(_Answer):
    kind: str
    base_ms: int
    max_ms: int
    jitter: float


class SubscriptionAnswer(_Answer):
    """A subscription's definition (what the broker keeps for itself, its journal, is not
    sent)."""

    name: str
    topic: str
    mode: str
    start: str
    visibility_timeout_ms: int
    max_deliveries: int | None
    dead_letter: str | None
    delay_ms: int
    retry: RetryAnswer
    #: Version 8 brokers send them; an older one's answer lacks them.
    rate_limit_per_s: float | None = None
    rate_burst: int | None = None
    #: Version 8 (an older broker does not send it: None).
    message_ttl_ms: int | None = None


class RedriveTaskAnswer(_Answer):
    """A redrive task (``RedriveTask``): ``state`` running, completed, cancelled or failed."""

    id: str
    dead_letter_topic: str
    where: RedriveWhere
    rate_per_s: float
    to: str | None
    state: str
    moved: int
    to_move: int
    started_ms: int
    finished_ms: int | None
    error: str | None


class ExchangeAnswer(_Answer):
    name: str
    kind: str
    alternate: str | None


class BindingAnswer(_Answer):
    exchange: str
    topic: str
    key: str
    headers: dict[str, bytes | None] | None
    match: str
    weight: int


class PartitionStatsAnswer(_Answer):
    partition: int
    end_offset: int
    ack_floor: int
    backlog: int
    in_flight: int
    delayed: int
    depth: int
    oldest_age_ms: int | None


class QueueStatsAnswer(_Answer):
    """A `queue` or `keyed` subscription's numbers (``mode`` says which)."""

    topic: str
    subscription: str
    mode: str
    backlog: int
    in_flight: int
    delayed: int
    depth: int
    oldest_age_ms: int | None
    dead_letter_topic: str | None
    dead_letters: int
    partitions: list[PartitionStatsAnswer]
    #: Version 8 brokers send them; an older one's answer lacks them.
    rate_limit_per_s: float | None = None
    throttled: int = 0


class StreamPartitionStatsAnswer(_Answer):
    partition: int
    end_offset: int
    committed: int
    lag: int
    owner: str | None


class StreamStatsAnswer(_Answer):
    """A `stream` subscription's numbers (``mode`` is ``stream``)."""

    topic: str
    subscription: str
    mode: str
    members: list[str]
    generation: int
    lag: int
    partitions: list[StreamPartitionStatsAnswer]


#: The answer each definition request's ``Described`` holds: the wire contract of these
#: answers, kept here rather than taken from whatever the core's structs hold. ``Stats`` is
#: a ``QueueStatsAnswer`` or a ``StreamStatsAnswer``, by its ``mode``.
ANSWERS: dict[type[Request], Any] = {
    CreateTopic: TopicAnswer,
    ListTopics: list[str],
    DescribeTopic: TopicAnswer,
    CreateQueue: SubscriptionAnswer,
    CreateSubscription: SubscriptionAnswer,
    ListSubscriptions: list[SubscriptionAnswer],
    DeclareExchange: ExchangeAnswer,
    ListExchanges: list[ExchangeAnswer],
    Bind: bool,
    Unbind: bool,
    ListBindings: list[BindingAnswer],
    Stats: QueueStatsAnswer | StreamStatsAnswer,
    StartRedrive: RedriveTaskAnswer,
    ListRedrives: list[RedriveTaskAnswer],
    CancelRedrive: RedriveTaskAnswer,
}


def answer_type(request: Request, value: Any) -> Any:
    """The answer struct of ``request`` for ``value`` (its builtins): ``Stats`` by mode."""
    if type(request) is Stats:
        stream = isinstance(value, dict) and value.get("mode") == "stream"
        return StreamStatsAnswer if stream else QueueStatsAnswer
    return ANSWERS[type(request)]


# -- pushed ------------------------------------------------------------------------------


class Deliveries(_Msg):
    """Server -> client, pushed for a ``Subscribe``: a batch of messages, one frame."""

    messages: list[Delivered]


class Credit(_Msg):
    """Client -> server: this many more deliveries may be pushed for a ``Subscribe``."""

    messages: int


class Empty(_Msg):
    """The payload of frames that carry nothing (heartbeats, goodbye, unblocked)."""


class Blocked(_Msg):
    """Server -> client (version 5), RabbitMQ's ``connection.blocked``: the broker has stopped
    reading the sockets of connections that publish, and says why (``reason``: over its
    memory budget, with the figures). An ``UNBLOCKED`` frame says it reads them again."""

    reason: str


# -- versions ----------------------------------------------------------------------------

#: Fields added to a struct after version 1, and the version that added each: the wire spec
#: of every version, as data. Added fields are always trailing and have defaults, so a newer
#: peer decodes an older one's shorter array; the codec sends a struct with only the fields
#: of the connection's version (an older peer refuses an array longer than it knows: the
#: structs forbid unknown fields), and refuses to send or take a value the version lacks.
ADDED_IN: dict[type[_Msg], dict[str, int]] = {
    Ack: {"answer": 3},
    Nack: {"undelivered": 6, "reject": 7},
    Out: {"ttl_ms": 8},
    Welcome: {"auth_required": 4, "mechanisms": 4},
    Failure: {"details": 4},
}
#: Requests and responses added after version 1 that a connection of an older version may
#: neither send nor take (a client checks before sending: an older broker cannot decode the
#: tag at all). ``FetchBatches`` (version 2) predates this table: only its clients check.
MESSAGE_ADDED_IN: dict[type[msgspec.Struct], int] = {
    Peek: 7, Purge: 7, Peeked: 7, Purged: 7,
    StartRedrive: 8, ListRedrives: 8, CancelRedrive: 8,
}  # fmt: skip
#: Messages with a list of structs that gained fields (``Out.ttl_ms``, version 8): on an older
#: connection each item is trimmed and checked as a message itself is.
ITEMS_WITH_ADDED_FIELDS: dict[type[msgspec.Struct], str] = {
    Publish: "messages",
    PublishToExchange: "messages",
}
