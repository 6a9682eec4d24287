"""Per-topic storage settings, validated once when a topic is created.

Durability policies, and what each gives up:

- ``always``: an append is confirmed only after the fsync that covers it; concurrent appends
  share one fsync (group commit). Gives up nothing that was confirmed; costs an fsync's latency.
- ``interval``: appends are confirmed once written to the OS; an fsync runs every
  ``flush_interval_ms`` or every ``flush_interval_records``, whichever comes first. A process
  crash loses nothing (the OS has the bytes); a power loss or kernel crash loses up to that
  interval of confirmed records.
- ``never``: written to the OS, fsynced only on clean close and segment roll is not synced.
  A power loss may lose any amount of confirmed records; a process crash loses none.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from roost.errors import InvalidConfig, InvalidName

Durability = Literal["always", "interval", "never"]
#: What happens to old records (Kafka's ``cleanup.policy``): ``delete`` whole segments by time
#: or size; ``compact`` keeps the latest record per key (storage/compaction.py); both.
Cleanup = Literal["delete", "compact", "compact,delete"]
CLEANUPS = ("delete", "compact", "compact,delete")
#: Kafka's ``delete.retention.ms`` default: a tombstone stays a day after it was appended.
DEFAULT_TOMBSTONE_RETENTION_MS = 24 * 3600 * 1000

MAX_PARTITIONS = 4096
#: Segment files are addressed with 32-bit positions in their index.
MAX_SEGMENT_BYTES = 2**31 - 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,248}")
NAME_RULE = "1 to 249 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def check_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid topic (or journal) name, else raise ``InvalidName``.

    Names become directory names, so the rule keeps them portable and free of path tricks.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidName(kind, str(name), NAME_RULE)
    return name


class TopicConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    partitions: int = 1
    durability: Durability = "always"
    flush_interval_ms: int = 1000
    flush_interval_records: int = 10_000
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_ms: int = 7 * 24 * 3600 * 1000
    #: Delete segments whose newest batch is older than this; None keeps them by time forever.
    retention_ms: int | None = None
    #: Delete the oldest segments while the partition is larger than this; None: no size limit.
    retention_bytes: int | None = None
    max_record_bytes: int = 1024 * 1024
    #: Bytes of log between two entries of the sparse offset and timestamp indexes.
    index_interval_bytes: int = 4096
    #: ``delete``: retention deletes whole segments; ``compact``: compaction keeps the latest
    #: record per key of the sealed segments (a record needs a key); ``compact,delete``: both.
    cleanup: Cleanup = "delete"
    #: How long a tombstone (a record with an empty value) outlives the records it deleted,
    #: counted from its append: a consumer that catches up within it sees the delete.
    tombstone_retention_ms: int = DEFAULT_TOMBSTONE_RETENTION_MS

    @property
    def compacted(self) -> bool:
        return self.cleanup != "delete"

    def __post_init__(self) -> None:
        _require(
            1 <= self.partitions <= MAX_PARTITIONS,
            "partitions",
            self.partitions,
            f"between 1 and {MAX_PARTITIONS}",
        )
        _require(
            self.durability in ("always", "interval", "never"),
            "durability",
            self.durability,
            "one of always, interval, never",
        )
        _require(self.flush_interval_ms >= 1, "flush_interval_ms", self.flush_interval_ms, ">= 1")
        _require(
            self.flush_interval_records >= 1,
            "flush_interval_records",
            self.flush_interval_records,
            ">= 1",
        )
        _require(
            4096 <= self.segment_max_bytes <= MAX_SEGMENT_BYTES,
            "segment_max_bytes",
            self.segment_max_bytes,
            f"between 4096 and {MAX_SEGMENT_BYTES}",
        )
        _require(
            self.segment_max_age_ms >= 1, "segment_max_age_ms", self.segment_max_age_ms, ">= 1"
        )
        _require(
            self.retention_ms is None or self.retention_ms >= 0,
            "retention_ms",
            self.retention_ms,
            ">= 0 or unset",
        )
        _require(
            self.retention_bytes is None or self.retention_bytes >= 0,
            "retention_bytes",
            self.retention_bytes,
            ">= 0 or unset",
        )
        _require(
            1 <= self.max_record_bytes <= self.segment_max_bytes,
            "max_record_bytes",
            self.max_record_bytes,
            "between 1 and segment_max_bytes",
        )
        _require(
            self.index_interval_bytes >= 1,
            "index_interval_bytes",
            self.index_interval_bytes,
            ">= 1",
        )
        _require(self.cleanup in CLEANUPS, "cleanup", self.cleanup, "one of " + ", ".join(CLEANUPS))
        _require(
            self.cleanup != "compact"
            or (self.retention_ms is None and self.retention_bytes is None),
            "cleanup",
            self.cleanup,
            "retention by time or size needs cleanup delete or compact,delete",
        )
        _require(
            self.tombstone_retention_ms >= 0,
            "tombstone_retention_ms",
            self.tombstone_retention_ms,
            ">= 0",
        )


def _require(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise InvalidConfig(field, value, rule)


def topic_config(**settings: object) -> TopicConfig:
    """Build a ``TopicConfig`` from loose settings, with ``InvalidConfig`` for any mistake."""
    try:
        return msgspec.convert(settings, TopicConfig)
    except msgspec.ValidationError as e:
        raise InvalidConfig("topic config", settings, str(e)) from e
