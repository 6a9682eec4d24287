"""Every error Roost raises on purpose, with a stable code each protocol maps once.

    RoostError                       code          retriable
    ├── InvalidRequest               (client errors: fix the request, do not retry)
    │   ├── InvalidName              invalid_name
    │   ├── InvalidConfig            invalid_config
    │   ├── InvalidPattern           invalid_pattern
    │   ├── RecordTooLarge           record_too_large
    │   ├── OutOfOrderSequence       out_of_order_sequence (idempotent producer)
    │   │   └── UnknownProducer      unknown_producer (start over with a new producer id)
    │   └── OffsetOutOfRange         offset_out_of_range
    ├── NotFound
    │   ├── UnknownTopic             unknown_topic
    │   ├── UnknownPartition         unknown_partition
    │   ├── UnknownExchange          unknown_exchange
    │   ├── UnknownSubscription      unknown_subscription
    │   ├── UnknownMember            unknown_member
    │   ├── UnknownUser              unknown_user
    │   ├── UnknownToken             unknown_token
    │   ├── UnknownRedriveTask       unknown_redrive_task
    │   └── UnknownGrant             unknown_grant    (revoking what the user does not hold)
    ├── AlreadyExists
    │   ├── ConfigConflict           config_conflict (declared again with other settings)
    │   │   ├── TopicExists          topic_exists
    │   │   ├── ExchangeExists       exchange_exists
    │   │   └── SubscriptionExists   subscription_exists
    │   └── UserExists               user_exists
    ├── Conflict                     (the request was valid, the state moved on)
    │   ├── StaleGeneration          stale_generation (rejoin the group)
    │   ├── NotOwner                 not_owner        (the partition is another member's)
    │   ├── GroupActive              group_active     (stop the group's members first)
    │   └── LeaseExpired             lease_expired    (the message was or will be redelivered)
    ├── Unroutable                   unroutable       (no binding matched, no alternate exchange)
    ├── BacklogFull                  backlog_full     yes
    ├── NotAuthenticated             not_authenticated (bad credentials, expired or revoked token)
    ├── NotAuthorised                not_authorised   (the user lacks the grant named)
    ├── Unavailable                  unavailable      yes (shutting down, too many connections)
    ├── ProtocolError                protocol_error   (the peer broke the wire protocol: close)
    ├── ConnectionLost               connection_lost  yes (the answer may or may not have happened)
    ├── ConnectionClosed             connection_closed (this client closed its connection)
    ├── Quarantined                  (damage found on disk: out of service until an operator acts)
    │   ├── PartitionQuarantined     partition_quarantined (one partition log; the rest serve)
    │   ├── SubscriptionQuarantined  subscription_quarantined (its state journal or snapshot)
    │   └── ProducerStateQuarantined producer_state_quarantined (a topic's dedup state)
    └── StorageFailure               storage_failure  yes (a log refuses writes until repaired)
        ├── DiskFull                 disk_full        yes (free space is below the watermark)
        ├── StorageClosed            storage_closed
        ├── DirectoryInUse           directory_in_use (another process holds the data directory)
        └── CorruptMetadata          corrupt_metadata (metadata unreadable: no start)

Rules: an error carries the data a caller needs to act (names, offsets, limits) as attributes,
and its message says the same in words. Codes never change once released; protocols translate
codes, never messages. Lower-level errors (OSError) are wrapped once, at the edge, with
``raise ... from``.
"""

from __future__ import annotations

from collections.abc import Sequence

#: What an error's details may hold: plain values a wire can carry and a caller can compare.
Detail = str | int | float | bool | None | list[str | int | float | bool | None]


class RoostError(Exception):
    """Base of every deliberate Roost error."""

    code = "internal"
    retriable = False

    def details(self) -> dict[str, Detail]:
        """The data this error carries for a caller to act on (its public attributes of plain
        types), sent beside its code so ``e.topic`` works over a network as it does embedded."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in vars(self).items()
            if not name.startswith("_") and name not in _NOT_DETAILS and _plain(value)
        }


def error_from(code: str, message: str, details: dict[str, object] | None = None) -> RoostError:
    """The error a peer reported, rebuilt: the class its ``code`` names (``RoostError`` with that
    code for one this side does not know), its message, and the ``details`` it sent as
    attributes. The constructor is not run: the peer's message is kept word for word."""
    cls = ERRORS_BY_CODE.get(code, RoostError)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    if code not in ERRORS_BY_CODE:
        error.code = code
    for name, value in (details or {}).items():
        wanted = isinstance(name, str) and not name.startswith("_") and name not in _NOT_DETAILS
        if wanted and _plain(value):
            setattr(error, name, value)
    return error


_NOT_DETAILS = frozenset({"code", "retriable", "args", "details"})


def _plain(value: object) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(item, str | int | float | bool | type(None)) for item in value)
    return isinstance(value, str | int | float | bool | type(None))


class InvalidRequest(RoostError):
    code = "invalid_request"


class InvalidName(InvalidRequest):
    code = "invalid_name"

    def __init__(self, kind: str, name: str, rule: str) -> None:
        super().__init__(f"invalid {kind} name {name!r}: {rule}")
        self.kind = kind
        self.name = name
        self.rule = rule


class InvalidConfig(InvalidRequest):
    code = "invalid_config"

    def __init__(self, field: str, value: object, rule: str) -> None:
        super().__init__(f"invalid {field}={value!r}: {rule}")
        self.field = field
        self.value = value
        self.rule = rule


class RecordTooLarge(InvalidRequest):
    code = "record_too_large"

    def __init__(self, topic: str, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"record of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes "
            f"(max_record_bytes) on topic {topic!r}"
        )
        self.topic = topic
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class OutOfOrderSequence(InvalidRequest):
    code = "out_of_order_sequence"

    def __init__(
        self, message: str, topic: str, partition: int, producer_id: str, expected: int, got: int
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.producer_id = producer_id
        self.expected = expected
        self.got = got


class UnknownProducer(OutOfOrderSequence):
    code = "unknown_producer"


class OffsetOutOfRange(InvalidRequest):
    code = "offset_out_of_range"

    def __init__(self, topic: str, partition: int, offset: int, start: int, end: int) -> None:
        super().__init__(
            f"offset {offset} is outside {topic!r} partition {partition}: "
            f"readable offsets are [{start}, {end}]"
        )
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.start_offset = start
        self.end_offset = end


class NotFound(RoostError):
    code = "not_found"


class UnknownTopic(NotFound):
    code = "unknown_topic"

    def __init__(self, topic: str) -> None:
        super().__init__(f"unknown topic {topic!r}")
        self.topic = topic


class UnknownPartition(NotFound):
    code = "unknown_partition"

    def __init__(self, topic: str, partition: int, partitions: int) -> None:
        super().__init__(
            f"topic {topic!r} has no partition {partition} (it has partitions 0..{partitions - 1})"
        )
        self.topic = topic
        self.partition = partition
        self.partitions = partitions


class AlreadyExists(RoostError):
    code = "already_exists"


#: One setting a declare asked for that differs from what exists: (setting, existing, requested).
Difference = tuple[str, object, object]


class ConfigConflict(AlreadyExists):
    """A declare named something that exists with other settings; nothing changed.

    Declaring again with the same settings is not an error (it returns what exists), as
    AMQP's declares and SQS's CreateQueue are idempotent; this is AMQP's
    ``PRECONDITION_FAILED`` and SQS's ``QueueNameExists``. ``settings`` names each differing
    setting (nested ones dotted: ``retry.base_ms``); ``existing`` and ``requested`` hold their
    values in the same order.
    """

    code = "config_conflict"

    def __init__(self, kind: str, name: str, differences: Sequence[Difference] = ()) -> None:
        if differences:
            said = "; ".join(
                f"{s} is {_value(s, e)}, not {_value(s, r)}" for s, e, r in differences
            )
            message = f"{kind} {name!r} already exists with other settings: {said}"
        else:
            message = f"{kind} {name!r} already exists"
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.settings = [setting for setting, _, _ in differences]
        self.existing = [_detail(existing) for _, existing, _ in differences]
        self.requested = [_detail(requested) for _, _, requested in differences]


def _value(setting: str, value: object) -> str:
    """A setting's value for people: a time in ms says its seconds too, as clients take it."""
    if setting.endswith("_ms") and type(value) is int:
        return f"{value!r} ({value / 1000:g} s)"
    return repr(value)


def _detail(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


class TopicExists(ConfigConflict):
    code = "topic_exists"

    def __init__(self, topic: str, differences: Sequence[Difference] = ()) -> None:
        super().__init__("topic", topic, differences)
        self.topic = topic


class InvalidPattern(InvalidRequest):
    code = "invalid_pattern"

    def __init__(self, pattern: str, rule: str) -> None:
        super().__init__(f"invalid pattern {pattern!r}: {rule}")
        self.pattern = pattern
        self.rule = rule


class UnknownExchange(NotFound):
    code = "unknown_exchange"

    def __init__(self, exchange: str) -> None:
        super().__init__(f"unknown exchange {exchange!r}")
        self.exchange = exchange


class UnknownSubscription(NotFound):
    code = "unknown_subscription"

    def __init__(self, topic: str, subscription: str) -> None:
        super().__init__(f"topic {topic!r} has no subscription {subscription!r}")
        self.topic = topic
        self.subscription = subscription


class UnknownMember(NotFound):
    code = "unknown_member"

    def __init__(self, group: str, member: str) -> None:
        super().__init__(f"group {group!r} has no member {member!r} (it may have timed out)")
        self.group = group
        self.member = member


class ExchangeExists(ConfigConflict):
    code = "exchange_exists"

    def __init__(self, exchange: str, differences: Sequence[Difference] = ()) -> None:
        super().__init__("exchange", exchange, differences)
        self.exchange = exchange


class SubscriptionExists(ConfigConflict):
    code = "subscription_exists"

    def __init__(
        self, topic: str, subscription: str, differences: Sequence[Difference] = ()
    ) -> None:
        super().__init__("subscription", f"{topic}/{subscription}", differences)
        self.topic = topic
        self.subscription = subscription


class UnknownUser(NotFound):
    code = "unknown_user"

    def __init__(self, user: str) -> None:
        super().__init__(f"unknown user {user!r}")
        self.user = user


class UserExists(AlreadyExists):
    code = "user_exists"

    def __init__(self, user: str) -> None:
        super().__init__(f"user {user!r} already exists")
        self.user = user


class UnknownRedriveTask(NotFound):
    code = "unknown_redrive_task"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"unknown redrive task {task_id!r}")
        self.task_id = task_id


class UnknownToken(NotFound):
    code = "unknown_token"

    def __init__(self, token_id: str) -> None:
        super().__init__(f"unknown token {token_id!r}")
        self.token_id = token_id


class UnknownGrant(NotFound):
    code = "unknown_grant"

    def __init__(self, user: str, grant: str) -> None:
        super().__init__(f"user {user!r} holds no grant {grant!r}")
        self.user = user
        self.grant = grant


class Conflict(RoostError):
    code = "conflict"


class StaleGeneration(Conflict):
    code = "stale_generation"

    def __init__(self, group: str, member: str, generation: int, current: int) -> None:
        super().__init__(
            f"member {member!r} of group {group!r} is at generation {generation}, the group is "
            f"at {current}: rejoin to get the current assignment"
        )
        self.group = group
        self.member = member
        self.generation = generation
        self.current_generation = current


class NotOwner(Conflict):
    code = "not_owner"

    def __init__(self, group: str, member: str, partition: int) -> None:
        super().__init__(f"member {member!r} of group {group!r} does not own partition {partition}")
        self.group = group
        self.member = member
        self.partition = partition


class GroupActive(Conflict):
    code = "group_active"

    def __init__(self, group: str, members: int) -> None:
        super().__init__(
            f"group {group!r} has {members} member(s): its committed offsets can be reset only "
            "while it has none (stop its consumers, or wait for their sessions to expire)"
        )
        self.group = group
        self.members = members


class LeaseExpired(Conflict):
    code = "lease_expired"

    def __init__(self, topic: str, subscription: str, offset: int) -> None:
        super().__init__(
            f"the lease on {topic!r}/{subscription!r} offset {offset} has expired or was "
            "released: the message was or will be delivered again"
        )
        self.topic = topic
        self.subscription = subscription
        self.offset = offset


class Unroutable(RoostError):
    code = "unroutable"

    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(
            f"exchange {exchange!r} has no binding for routing key {routing_key!r} and no "
            "alternate exchange that takes it"
        )
        self.exchange = exchange
        self.routing_key = routing_key


class BacklogFull(RoostError):
    code = "backlog_full"
    retriable = True

    def __init__(self, topic: str, limit: str) -> None:
        super().__init__(f"topic {topic!r} is full ({limit}); retry later")
        self.topic = topic
        self.limit = limit


class NotAuthenticated(RoostError):
    """Who is asking could not be established: a wrong password or an unknown user (never
    told apart, so names cannot be probed), an expired or revoked token, no credentials where
    the listener requires them. The connection is closed after it."""

    code = "not_authenticated"

    def __init__(self, reason: str) -> None:
        super().__init__(f"authentication failed: {reason}")
        self.reason = reason


class NotAuthorised(RoostError):
    """The user is known but holds no grant for ``operation`` on ``resource``
    (``"topic:orders"``, ``"exchange:events"``, ``"broker"`` for broker-wide operations)."""

    code = "not_authorised"

    def __init__(self, user: str, operation: str, resource: str) -> None:
        super().__init__(f"user {user!r} may not {operation} on {resource}")
        self.user = user
        self.operation = operation
        self.resource = resource


class Unavailable(RoostError):
    """The broker cannot take this now (it is shutting down, a connection limit is reached):
    another broker, or this one later, may."""

    code = "unavailable"
    retriable = True

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ProtocolError(RoostError):
    """The peer sent bytes that break the protocol; the connection is closed after this."""

    code = "protocol_error"

    def __init__(self, protocol: str, problem: str) -> None:
        super().__init__(f"{protocol} protocol error: {problem}")
        self.protocol = protocol
        self.problem = problem


class ConnectionLost(RoostError):
    """The connection broke before the answer came: the request may or may not have been done.

    Retrying is safe for reads, acks and idempotent publishes (the client does those by
    itself); a plain publish retried may be stored twice, which a dedup id prevents.
    """

    code = "connection_lost"
    retriable = True

    def __init__(self, what: str) -> None:
        super().__init__(f"connection lost during {what}: it may or may not have been done")
        self.what = what


class ConnectionClosed(RoostError):
    """This client's connection (or the subscription riding on it) was closed by its owner:
    nothing more can be sent over it. Open a new one to go on."""

    code = "connection_closed"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is closed")
        self.what = what


class Quarantined(RoostError):
    """Damage was found in a store on disk (a CRC mismatch, a missing segment, a corrupt
    snapshot): what it belongs to is out of service, with nothing cut, until an operator
    restores the files or accepts the loss (``roost check --repair``). Everything else serves.
    Not retriable: retrying cannot help before the operator acts.
    """

    code = "quarantined"


class PartitionQuarantined(Quarantined):
    """A partition log is damaged: its reads and writes are refused; other partitions serve."""

    code = "partition_quarantined"

    def __init__(self, topic: str, partition: int, damage: str) -> None:
        super().__init__(
            f"partition {topic}/{partition} is quarantined: {damage}; see `roost check`"
        )
        self.topic = topic
        self.partition = partition
        self.damage = damage


class SubscriptionQuarantined(Quarantined):
    """A subscription's state (journal or snapshot) is damaged: it is out of service; the
    topic and its other subscriptions serve."""

    code = "subscription_quarantined"

    def __init__(self, topic: str, subscription: str, damage: str) -> None:
        super().__init__(
            f"subscription {topic}/{subscription} is quarantined: {damage}; see `roost check`"
        )
        self.topic = topic
        self.subscription = subscription
        self.damage = damage


class ProducerStateQuarantined(Quarantined):
    """A topic's producer state (idempotent producers' sequences, dedup ids: its journal or
    snapshot) is damaged: idempotent and deduplicated publishes to the topic are refused, as
    their retries could no longer be recognised; plain publishes and every consumer serve."""

    code = "producer_state_quarantined"

    def __init__(self, topic: str, damage: str) -> None:
        super().__init__(
            f"the producer state of topic {topic} (idempotent producers, dedup ids) is "
            f"quarantined: {damage}; idempotent and deduplicated publishes to it are refused, "
            "plain ones go through; see `roost check`"
        )
        self.topic = topic
        self.damage = damage


class StorageFailure(RoostError):
    """The disk refused a write or an fsync: the log stops accepting writes until repaired.

    Nothing written after the last successful fsync is confirmed. Repair (automatic once a
    probe write succeeds, or ``roost repair``) reopens the log in place, verifying from disk
    what was not known durable and cutting what was never confirmed.
    """

    code = "storage_failure"
    retriable = True

    def __init__(self, what: str, cause: BaseException | None = None) -> None:
        detail = f": {cause}" if cause is not None else ""
        super().__init__(
            f"storage failure in {what}{detail}; the log refuses writes until it is repaired "
            "(automatically once the disk takes writes again, or `roost repair`)"
        )
        self.what = what


class DiskFull(StorageFailure):
    """No room to store a publish: the data directory's free space fell below the watermark
    (``free_bytes`` < ``min_free_bytes``), or the disk said ENOSPC (``free_bytes`` None).

    Nothing was stored; retry once space is freed. Acks, receives and commits go on: the
    watermark keeps their room.
    """

    code = "disk_full"
    retriable = True

    def __init__(
        self, what: str, free_bytes: int | None = None, min_free_bytes: int | None = None
    ) -> None:
        if free_bytes is None:
            why = "the disk is full (ENOSPC)"
        else:
            why = (
                f"{free_bytes} bytes free on the data directory's filesystem, below the "
                f"watermark of {min_free_bytes} bytes that publishes leave for acks and metadata"
            )
        RoostError.__init__(self, f"no space for {what}: {why}; nothing was stored, retry later")
        self.what = what
        self.free_bytes = free_bytes
        self.min_free_bytes = min_free_bytes


class TooManyOpenFiles(StorageFailure):
    """A file could not be opened for want of descriptors (EMFILE: the process's limit;
    ENFILE: the system's; ENOMEM: kernel memory for one), even after the broker closed idle
    files to make room. Only this operation failed: nothing was stored or changed, the log
    serves on, and a retry succeeds once descriptors are free (connections closed, or the
    limit raised; docs/operations.md, "File descriptors").
    """

    code = "too_many_open_files"
    retriable = True

    def __init__(self, what: str, reason: str, open_files: int | None = None) -> None:
        held = "" if open_files is None else f"; storage holds {open_files} files open"
        RoostError.__init__(
            self,
            f"cannot open a file for {what}: {reason}{held}; nothing was stored or changed, "
            "retry later",
        )
        self.what = what
        self.reason = reason
        self.open_files = open_files


class StorageClosed(StorageFailure):
    code = "storage_closed"
    retriable = False

    def __init__(self, what: str) -> None:
        RoostError.__init__(self, f"{what} is closed")
        self.what = what


class DirectoryInUse(StorageFailure):
    """The data directory's LOCK is held by another process: a broker serving it, most
    likely. Change its definitions through that broker instead."""

    code = "directory_in_use"
    retriable = False

    def __init__(self, path: str, holder: str | None = None) -> None:
        by = holder or "another process"
        RoostError.__init__(self, f"data directory {path}: in use by {by}")
        self.what = path
        self.path = path


class CorruptMetadata(StorageFailure):
    """The metadata snapshot or its journal cannot be read: the broker refuses to start
    rather than guess what topics exist. The message names the file and what to restore."""

    code = "corrupt_metadata"
    retriable = False

    def __init__(
        self, path: str, problem: str, previous: str | None, remedy: str | None = None
    ) -> None:
        if remedy is None:
            remedy = (
                f"restore the previous snapshot with `cp {previous} {path}` and move "
                f"{path}.journal aside (that loses the definition changes made since that "
                "copy was taken), or restore the file from a backup"
                if previous is not None
                else "restore the file from a backup"
            )
        RoostError.__init__(self, f"metadata file {path} is damaged ({problem}): {remedy}")
        self.what = path
        self.path = path
        self.problem = problem


def _by_code(root: type[RoostError]) -> dict[str, type[RoostError]]:
    """Every class under ``root`` (itself included) by its code; two classes sharing a code
    are a bug that would make one of them unreachable over the wire, so they raise here."""
    table: dict[str, type[RoostError]] = {}
    pending = [root]
    while pending:
        cls = pending.pop()
        if "code" in cls.__dict__:  # a subclass that keeps its parent's code is not listed
            if cls.code in table:
                raise TypeError(f"{cls.__name__} and {table[cls.code].__name__} share {cls.code!r}")
            table[cls.code] = cls
        pending += cls.__subclasses__()
    return table


#: Every error class by its stable code, for protocols that map codes to their wire codes:
#: built by walking the hierarchy, so a new class is in it without being listed again.
ERRORS_BY_CODE: dict[str, type[RoostError]] = _by_code(RoostError)
