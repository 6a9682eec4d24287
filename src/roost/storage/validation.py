"""Checking records before they are encoded: types, timestamps, sizes.

A bad record must be refused with a clear error before anything is written, or it would become
a batch that no reader can decode. The common case (bytes values, bytes-or-None keys, no
headers, no timestamps, all well under the size limit) costs a few attribute reads per record;
headers, timestamps or a record near the limit take the slower path for that record only.
"""

from __future__ import annotations

from collections.abc import Sequence

from roost.errors import InvalidRequest, RecordTooLarge
from roost.storage.batch import Record

_HEADERS_TYPES = (tuple, list)
MAX_TIMESTAMP_MS = 2**62


def check_records(
    records: Sequence[Record], max_record_bytes: int, topic: str, compacted: bool = False
) -> None:
    """Raise ``InvalidRequest`` (or ``RecordTooLarge``) for the first bad record.
    ``compacted``: the topic is compacted, where every record needs a key (as in Kafka)."""
    if not records:
        raise InvalidRequest("an append needs at least one record")
    if compacted and any(record.key is None for record in records):
        raise InvalidRequest(
            f"topic {topic} is compacted (it keeps the latest record per key): "
            "every record needs a key"
        )
    for record in records:
        value = record.value
        key = record.key
        if type(value) is not bytes or (key is not None and type(key) is not bytes):
            raise _wrong_types(value, key)
        if (
            record.headers
            or record.timestamp_ms is not None
            or (len(value) if key is None else len(value) + len(key)) > max_record_bytes
            or type(record.headers) not in _HEADERS_TYPES
        ):
            _check_slowly(record, max_record_bytes, topic)


def check_types(value: object, key: object, headers: object) -> None:
    """Raise ``InvalidRequest`` for a value, key or headers of the wrong type: what
    ``check_records`` refuses, checked where a message is made (the client, before sending:
    the server could not even decode it)."""
    if type(value) is not bytes or (key is not None and type(key) is not bytes):
        raise _wrong_types(value, key)
    if headers:
        if type(headers) not in _HEADERS_TYPES:
            raise InvalidRequest("a record's headers must be a list or tuple of (str, bytes) pairs")
        _headers_size(headers)  # type: ignore[arg-type]  # checks each pair


def _wrong_types(value: object, key: object) -> InvalidRequest:
    got = f"the value is a {type(value).__name__}"
    if key is not None and type(key) is not bytes:
        got = f"the key is a {type(key).__name__}"
    return InvalidRequest(f"a record's value must be bytes and its key bytes or None ({got})")


def _check_slowly(record: Record, max_record_bytes: int, topic: str) -> None:
    if type(record.headers) not in _HEADERS_TYPES:
        raise InvalidRequest("a record's headers must be a list or tuple of (str, bytes) pairs")
    ts = record.timestamp_ms
    if ts is not None and (type(ts) is not int or not 0 <= ts < MAX_TIMESTAMP_MS):
        raise InvalidRequest(f"timestamp_ms must be a non-negative int, not {ts!r}")
    size = len(record.value) + len(record.key or b"") + _headers_size(record.headers)
    if size > max_record_bytes:
        raise RecordTooLarge(topic, size, max_record_bytes)


def _headers_size(headers: Sequence[tuple[str, bytes]]) -> int:
    size = 0
    for header in headers:
        if not (
            isinstance(header, tuple | list)
            and len(header) == 2
            and type(header[0]) is str
            and type(header[1]) is bytes
        ):
            raise InvalidRequest(f"a header must be a (str, bytes) pair, not {header!r}")
        try:
            size += len(header[0].encode()) + len(header[1])
        except UnicodeEncodeError as e:
            raise InvalidRequest(f"header name {header[0]!r} is not valid unicode") from e
    return size
