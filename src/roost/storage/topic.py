"""A topic: N partition logs under one name and one configuration."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from roost.errors import UnknownPartition
from roost.storage.batch import Record, StoredRecord
from roost.storage.config import TopicConfig
from roost.storage.log import DEFAULT_MAX_READ_BYTES, AppendResult, PartitionLog, RawBatches


class PartitionInfo(msgspec.Struct, frozen=True):
    partition: int
    start_offset: int
    end_offset: int
    durable_offset: int
    size_bytes: int
    segments: int


class TopicInfo(msgspec.Struct, frozen=True):
    name: str
    config: TopicConfig
    partitions: list[PartitionInfo]


class Topic:
    def __init__(self, name: str, config: TopicConfig, partitions: list[PartitionLog]) -> None:
        self.name = name
        self.config = config
        self.partitions = partitions

    def log(self, partition: int) -> PartitionLog:
        if type(partition) is not int or not 0 <= partition < len(self.partitions):
            raise UnknownPartition(self.name, partition, len(self.partitions))
        return self.partitions[partition]

    def append(self, partition: int, records: Sequence[Record]) -> AppendResult:
        return self.log(partition).append(records)

    def read(
        self,
        partition: int,
        offset: int,
        max_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_records: int | None = None,
    ) -> list[StoredRecord]:
        return self.log(partition).read(offset, max_bytes, max_records)

    def read_batches(
        self,
        partition: int,
        offset: int,
        max_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_records: int | None = None,
        end_offset: int | None = None,
    ) -> RawBatches:
        return self.log(partition).read_batches(offset, max_bytes, max_records, end_offset)

    def start_offset(self, partition: int) -> int:
        return self.log(partition).start_offset

    def end_offset(self, partition: int) -> int:
        return self.log(partition).end_offset

    def offset_for_timestamp(self, partition: int, timestamp_ms: int) -> int | None:
        return self.log(partition).offset_for_timestamp(timestamp_ms)

    def delete_below(self, partition: int, offset: int) -> int:
        return self.log(partition).delete_below(offset)

    def enforce_retention(self) -> int:
        return sum(log.enforce_retention() for log in self.partitions)

    def describe(self) -> TopicInfo:
        return TopicInfo(
            self.name,
            self.config,
            [
                PartitionInfo(
                    p,
                    log.start_offset,
                    log.end_offset,
                    log.durable_offset,
                    log.size_bytes,
                    log.segment_count,
                )
                for p, log in enumerate(self.partitions)
            ],
        )

    def close(self, clean: bool = True) -> None:
        for log in self.partitions:
            log.close(clean)
