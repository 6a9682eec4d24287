"""Storage: partition logs, state journals and metadata behind one engine interface.

The local engine keeps everything as files in one data directory (docs/storage-format.md).
Nothing here knows about subscriptions, protocols or asyncio.
"""

from roost.storage.batch import Record, StoredRecord
from roost.storage.config import TopicConfig, topic_config
from roost.storage.engine import LocalEngine, RecoveryReport
from roost.storage.flush import FlushJob
from roost.storage.journal import Journal
from roost.storage.log import AppendResult, PartitionLog, RawBatches
from roost.storage.topic import PartitionInfo, Topic, TopicInfo

__all__ = [
    "AppendResult",
    "FlushJob",
    "Journal",
    "LocalEngine",
    "PartitionInfo",
    "PartitionLog",
    "RawBatches",
    "Record",
    "RecoveryReport",
    "StoredRecord",
    "Topic",
    "TopicConfig",
    "TopicInfo",
    "topic_config",
]
