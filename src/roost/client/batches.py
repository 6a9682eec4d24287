"""A ``Batches`` answer's records: stored batches on the wire, checked and cut on arrival.

A ``FetchBatches`` is answered with the record batches exactly as the broker stores them
(``roost.storage.batch``'s layout, docs/storage-format.md), so the broker decodes and encodes no
record: per partition it sends a window of offsets ``[first_offset, next_offset)`` and the
whole batches that hold it. The reader does the rest, here, per batch:

1. parse the header, refuse an unknown format version;
2. verify the batch's CRC32C (the broker verified it when it read it; this covers the trip);
3. check the batches are contiguous and cover the window;
4. decode the records (msgspec, in C), check that they hold the batch's offsets, dense from
   its base offset (a record's own offset field could say otherwise: the CRC proves the bytes
   came as sent, not that they make sense), and keep those inside the window: the first
   batch may start below ``first_offset`` (a batch is never split), the last may end past
   ``next_offset`` (the broker cut its answer at ``max_records``).

Anything wrong raises ``ProtocolError`` naming the topic, partition and byte: the answer is
refused whole, and nothing of it is handed out.

    messages = decode_fetched("clicks", fetched)   # -> list[Message], in offset order
"""

from __future__ import annotations

from operator import attrgetter

from roost.core.model import Message
from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.storage import batch as batch_format
from roost.storage.batch import CorruptBatch

PROTOCOL = "roost"
_OFFSET = attrgetter("offset")


def decode_fetched(topic: str, fetched: m.Fetched) -> list[Message]:
    """The records of ``fetched``'s window, as messages (delivery count 1, as for a fetch)."""
    first, end, partition = fetched.first_offset, fetched.next_offset, fetched.partition
    data = fetched.batches
    found: list[Message] = []
    position = 0
    expected = -1  # the next batch's base offset; unknown before the first
    try:
        while position < len(data):
            header = batch_format.parse_header(data, position)
            batch_format.verify(data, position, header)
            if expected == -1 and header.base_offset > first:
                raise CorruptBatch(f"the first batch starts at {header.base_offset}")
            if expected not in (-1, header.base_offset):
                raise CorruptBatch(f"batch at {header.base_offset}, expected {expected}")
            if header.next_offset > first and header.base_offset < end:
                records = batch_format.decode_records(data, position, header)
                # Offsets gathered and compared in C (map, attrgetter, list ==): no Python
                # step per record. (Compaction, if it comes, leaves gaps: this then becomes
                # "increasing, within the batch's range".)
                if header.is_gap:  # never sent: a broker's readers skip gaps (storage/log.py)
                    raise CorruptBatch(f"a gap batch at {header.base_offset}")
                # decode_records checked the count, so the range is as short as the records.
                dense = range(header.base_offset, header.next_offset)
                if list(map(_OFFSET, records)) != list(dense):
                    raise CorruptBatch(f"records of batch {header.base_offset} are not its offsets")
                if header.base_offset < first or header.next_offset > end:
                    records = [r for r in records if first <= r.offset < end]
                found += [
                    Message(topic, partition, r.offset, r.timestamp_ms, r.key, r.value,
                            r.headers, 1)
                    for r in records
                ]  # fmt: skip
            expected = header.next_offset
            position += header.size
    except CorruptBatch as e:
        raise _refused(topic, partition, f"batch at byte {position}: {e}") from e
    if len(found) != end - first:
        raise _refused(
            topic, partition, f"{len(found)} records where the window [{first}, {end}) promises "
            f"{end - first}",
        )  # fmt: skip
    return found


def _refused(topic: str, partition: int, problem: str) -> ProtocolError:
    return ProtocolError(PROTOCOL, f"bad Batches answer for {topic}/{partition}: {problem}")
