"""Every error Roost raises on purpose, with a stable code each protocol maps once.

    RoostError                       code          retriable
    ├── InvalidRequest               (client errors: fix the request, do not retry)
    │   ├── InvalidName              invalid_name
    │   ├── InvalidConfig            invalid_config
    │   ├── RecordTooLarge           record_too_large
    │   └── OffsetOutOfRange         offset_out_of_range
    ├── NotFound
    │   ├── UnknownTopic             unknown_topic
    │   └── UnknownPartition         unknown_partition
    ├── AlreadyExists
    │   └── TopicExists              topic_exists
    └── StorageFailure               storage_failure  (the engine stopped accepting writes)
        └── StorageClosed            storage_closed

Rules: an error carries the data a caller needs to act (names, offsets, limits) as attributes,
and its message says the same in words. Codes never change once released; protocols translate
codes, never messages. Lower-level errors (OSError) are wrapped once, at the edge, with
``raise ... from``.
"""

from __future__ import annotations


class RoostError(Exception):
    """Base of every deliberate Roost error."""

    code = "internal"
    retriable = False


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


class TopicExists(AlreadyExists):
    code = "topic_exists"

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} already exists")
        self.topic = topic


class StorageFailure(RoostError):
    """The disk refused a write or an fsync: the log stops accepting writes until reopened.

    Nothing written after the last successful fsync is confirmed. Reopening runs recovery,
    which cuts whatever the failed write left behind.
    """

    code = "storage_failure"
    retriable = True

    def __init__(self, what: str, cause: BaseException | None = None) -> None:
        detail = f": {cause}" if cause is not None else ""
        super().__init__(f"storage failure in {what}{detail}; writes are refused until reopen")
        self.what = what


class StorageClosed(StorageFailure):
    code = "storage_closed"
    retriable = False

    def __init__(self, what: str) -> None:
        RoostError.__init__(self, f"{what} is closed")
        self.what = what


#: Every error class by its stable code, for protocols that map codes to their wire codes.
ERRORS_BY_CODE: dict[str, type[RoostError]] = {
    cls.code: cls
    for cls in (
        RoostError,
        InvalidRequest,
        InvalidName,
        InvalidConfig,
        RecordTooLarge,
        OffsetOutOfRange,
        NotFound,
        UnknownTopic,
        UnknownPartition,
        AlreadyExists,
        TopicExists,
        StorageFailure,
        StorageClosed,
    )
}
