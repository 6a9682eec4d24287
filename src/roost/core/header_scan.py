"""Find the records of a log that carry a time header, without decoding the others.

    found, whole = timed_records(log, start, DELIVER_AT_HEADER, budget_bytes=64 * 1024)

At open a subscription looks for what its journal does not name (a delayed record, a record
with its own TTL) among its first unread records. Stored batches are read raw, up to a byte
budget, and only a batch whose bytes hold the header's name is decoded; a header value that
is not digits came from elsewhere and counts as absent.
"""

from __future__ import annotations

from collections.abc import Sequence

from roost.errors import PartitionQuarantined
from roost.storage.log import PartitionLog


def header_time(headers: Sequence[tuple[str, bytes]], header: str) -> int | None:
    """The value of ``header`` as a time (ms), or None if absent or not digits."""
    for name, value in headers:
        if name == header and value.isdigit():
            return int(value)
    return None


def timed_records(
    log: PartitionLog, start: int, header: str, budget_bytes: int
) -> tuple[list[tuple[int, int]], bool]:
    """``(offset, time)`` of the records from ``start`` carrying ``header``, among at most
    ``budget_bytes`` of stored batches, in offset order; and whether the search reached the
    log's end. A quarantined log (or damage found by the reads) has none."""
    found: list[tuple[int, int]] = []
    if log.quarantined:
        return found, True
    marker = header.encode()
    offset, end = max(start, log.start_offset), log.end_offset
    try:
        while offset < end:
            if budget_bytes <= 0:
                return found, False
            raw = log.read_batches(offset, budget_bytes, end_offset=end)
            if raw.next_offset <= offset:
                break
            budget_bytes -= len(raw.data)
            if marker in raw.data:
                found += _decoded(log, raw.first_offset, raw.next_offset, header)
            offset = raw.next_offset
    except PartitionQuarantined:
        return [], True  # a read found damage: the partition is out of service anyway
    return found, True


def _decoded(log: PartitionLog, start: int, stop: int, header: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    offset = start
    while offset < stop:
        records = log.read(offset, max_records=stop - offset)
        if not records:
            break
        for record in records:
            at = header_time(record.headers, header) if record.offset < stop else None
            if at is not None:
                found.append((record.offset, at))
        offset = records[-1].offset + 1
    return found
