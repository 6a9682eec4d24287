"""Fuzz targets for what storage reads back: record batches, a client's fetched batches,
segment files with their indexes, the journal's snapshot file and metadata.json.

The CRC32C of a batch or an index stops random bytes at the first check, so most targets
take their input as pieces separated by ``SEAL`` and give each piece a correct length and CRC
("sealing" it) before reading: the fuzzer then reaches the decoding behind the checks, where
a bad value would otherwise go unseen.

Contracts: a batch is read or refused with ``CorruptBatch``, a client's fetch with
``ProtocolError``, an index file with ``InvalidIndex``; a segment scan and an index load
never raise (they report, or say no); a snapshot or metadata.json is read or refused with
``StorageFailure``. Whatever reads back encodes to the same bytes, or the same values.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct

from crc32c import crc32c

from roost.client.batches import decode_fetched
from roost.errors import ProtocolError, StorageFailure
from roost.protocols.native import messages as m
from roost.storage import batch as batch_format
from roost.storage.batch import HEADER_SIZE, CorruptBatch, Record, StoredRecord
from roost.storage.fs import LocalFS
from roost.storage.index import InvalidIndex, SegmentSummary, SparseIndex
from roost.storage.journal import SnapshotJob, parse_snapshot
from roost.storage.metadata import MetadataStore
from roost.storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, Segment, file_name
from tests.fuzz.target import Target, scratch_directory

SEAL = b"|seal|"
_U32 = struct.Struct("<I")


def seal_batch(piece: bytes) -> bytes:
    """``piece`` with the batch length and CRC32C its bytes need (if long enough)."""
    if len(piece) < HEADER_SIZE:
        return piece
    data = bytearray(piece)
    _U32.pack_into(data, 0, len(data) - 4)
    _U32.pack_into(data, 4, crc32c(memoryview(data)[8:]))
    return bytes(data)


def sealed_batches(data: bytes) -> bytes:
    """Pieces after a leading 0 byte are sealed; after any other, left as they are."""
    if data[:1] == b"\x00":
        return b"".join(seal_batch(p) for p in data[1:].split(SEAL))
    return data[1:]


def batch_bytes(base: int, records: list[StoredRecord], append_time_ms: int) -> bytes:
    rows = [Record(value=r.value, key=r.key, headers=r.headers, timestamp_ms=r.timestamp_ms)
            for r in records]  # fmt: skip
    return batch_format.encode(base, rows, append_time_ms)[0]


def check_batch(data: bytes) -> None:
    buffer = sealed_batches(data)
    try:
        found = batch_format.iter_batches(buffer)
    except CorruptBatch:
        found = []
    for position, header in found:
        try:
            records = batch_format.decode_records(buffer, position, header)
        except CorruptBatch:
            continue
        if header.is_gap:  # no records: the offsets it covers are all it says
            assert records == []
            gap, gap_header = batch_format.encode_gap(
                header.base_offset, header.record_count, header.append_time_ms
            )
            assert batch_format.iter_batches(gap) == [(0, gap_header)]
            continue
        # Encoded again from what was read, the batch reads back the same.
        again = batch_bytes(header.base_offset, records, header.append_time_ms)
        [(_, header_again)] = batch_format.iter_batches(again)
        assert batch_format.decode_records(again, 0, header_again) == _renumbered(
            records, header.base_offset
        )


def _renumbered(records: list[StoredRecord], base: int) -> list[StoredRecord]:
    """What encoding ``records`` at ``base`` stores: offsets dense from ``base`` (the encoder
    numbers records; a batch whose records say otherwise is read as it says)."""
    return [
        StoredRecord(base + i, r.timestamp_ms, r.key, r.value, r.headers)
        for i, r in enumerate(records)
    ]


def check_fetched(data: bytes) -> None:
    """A ``Batches`` answer's partition as a client reads it: first the window (two u16 from
    the input, relative to the first batch's base offset), then the batches."""
    if len(data) < 5:
        return
    low, high = struct.unpack_from("<HH", data, 1)
    batches = sealed_batches(data[:1] + data[5:])
    base = struct.unpack_from("<q", batches, 16)[0] if len(batches) >= 24 else 0
    first, end = base + low % 64, base + low % 64 + high % 64
    try:
        messages = decode_fetched("t", m.Fetched(0, first, end, batches))
    except ProtocolError:
        return
    assert [message.offset for message in messages] == list(range(first, end))


# -- indexes and segments -----------------------------------------------------------------


def seal_index(data: bytes) -> bytes:
    """An index file with the entry count and CRC its bytes need."""
    if len(data) < 52:
        return data
    fixed = bytearray(data)
    _U32.pack_into(fixed, 4, (len(fixed) - 52) // (8 if fixed[:4] == b"RIX1" else 12))
    _U32.pack_into(fixed, 8, crc32c(memoryview(fixed)[12:]))
    return bytes(fixed)


def index_files(data: bytes) -> tuple[bytes, bytes]:
    offsets, _, times = data[1:].partition(SEAL)
    if data[:1] == b"\x00":
        return seal_index(offsets), seal_index(times)
    return offsets, times


def check_index(data: bytes) -> None:
    offsets, times = index_files(data)
    base = struct.unpack_from("<q", offsets, 12)[0] if len(offsets) >= 20 else 0
    try:
        index, summary = SparseIndex.decode(base, offsets, times)
    except InvalidIndex:
        return
    assert index.encode(summary) == (offsets, times)


_DIRECTORY = scratch_directory()
atexit.register(shutil.rmtree, _DIRECTORY, True)
FS = LocalFS()


def check_segment(data: bytes) -> None:
    """A segment's log file and its two index files (the input's three SEAL-separated
    pieces, the log's batches sealed), opened as recovery does: adopt the index if it
    matches, else scan. Neither raises; what they accept reads back batch by batch."""
    log, _, rest = data.partition(SEAL + SEAL)
    offsets, times = index_files(b"\x00" + rest)
    base = struct.unpack_from("<q", log, 17)[0] if len(log) >= 25 else 0
    base = max(0, base)
    paths = {suffix: os.path.join(_DIRECTORY, file_name(base, suffix))
             for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)}  # fmt: skip
    for suffix, content in ((LOG_SUFFIX, sealed_batches(log)), (INDEX_SUFFIX, offsets),
                            (TIME_INDEX_SUFFIX, times)):  # fmt: skip
        with open(paths[suffix], "wb") as f:
            f.write(content)
    segment = Segment.open(FS, _DIRECTORY, base)
    try:
        if not segment.load_index():
            segment.scan(index_interval_bytes=64)
        offset, position = base, 0
        while offset < segment.next_offset:
            position, header = segment.find_batch(offset)
            assert header is not None and header.base_offset <= offset < header.next_offset
            raw = segment.read(position, header.size)
            batch_format.verify(raw, 0, header)
            records = batch_format.decode_records(raw, 0, header)
            offset = header.next_offset
            assert records or header.is_gap
    except CorruptBatch:
        pass  # a read of a batch the adopted index vouched for: refused, never garbage
    finally:
        segment.close()
        for path in paths.values():
            os.remove(path)


# -- snapshot file and metadata.json, through an in-memory fs ----------------------------


class MemoryFS(LocalFS):
    """Whole-file reads, atomic replacements and positional writes (the metadata journal) in
    a dict: the fs seam, without a disk."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._fds: dict[int, str] = {}

    def exists(self, path: str) -> bool:
        return path in self.files

    def read_file(self, path: str) -> bytes:
        return self.files[path]

    def replace_atomically(self, path: str, data: bytes) -> None:
        self.files[path] = bytes(data)

    def open_rw(self, path: str) -> int:
        self.files.setdefault(path, b"")
        fd = max(self._fds, default=999) + 1
        self._fds[fd] = path
        return fd

    def close(self, fd: int) -> None:
        del self._fds[fd]

    def file_size(self, fd: int) -> int:
        return len(self.files[self._fds[fd]])

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        content = bytearray(self.files[self._fds[fd]])
        content.extend(bytes(max(0, position - len(content))))
        content[position : position + len(data)] = data
        self.files[self._fds[fd]] = bytes(content)

    def truncate(self, fd: int, size: int) -> None:
        content = self.files[self._fds[fd]]
        self.files[self._fds[fd]] = content[:size] + bytes(max(0, size - len(content)))

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


def seal_snapshot(data: bytes) -> bytes:
    """A snapshot file with the length and CRC32C its state needs (magic and sequence as
    they come)."""
    if len(data) < 20:
        return data
    fixed = bytearray(data)
    state = memoryview(data)[20:]
    struct.pack_into("<II", fixed, 12, len(state), crc32c(state))
    return bytes(fixed)


def check_snapshot(data: bytes) -> None:
    """A first byte 0: the rest sealed; else the rest as it is."""
    data = seal_snapshot(data[1:]) if data[:1] == b"\x00" else data[1:]
    parsed = parse_snapshot(data)  # the state and sequence, or None: never raises
    if parsed is None:
        return
    state, next_seq = parsed
    job = SnapshotJob(MemoryFS(), "again", next_seq, state)
    assert job.data == data


def check_metadata(data: bytes) -> None:
    """The snapshot, then (after a SEAL, if there is one) the journal."""
    snapshot, _, journal = data.partition(SEAL)
    fs = MemoryFS()
    fs.files["metadata.json"] = snapshot
    if journal:
        fs.files["metadata.json.journal"] = journal
    try:
        store = MetadataStore.open(fs, "metadata.json")
    except StorageFailure:
        return
    namespaces = {n: {k: store.get(n, k) for k in store.names(n)} for n in _namespaces(store)}
    with store.transaction() as txn:
        txn.put("fuzz", "x", 1)
    again = MetadataStore.open(fs, "metadata.json")
    assert again.version == store.version
    assert {n: {k: again.get(n, k) for k in again.names(n)} for n in namespaces} == namespaces


def _namespaces(store: MetadataStore) -> list[str]:
    return [n for n in store._namespaces if n != "fuzz"]


# -- seeds --------------------------------------------------------------------------------

RECORDS = [
    Record(value=b"v", key=b"k", headers=[("h", b"1")], timestamp_ms=5),
    Record(value=b"w" * 40),
    Record(value=b"", key=None, headers=[("a", b""), ("b", b"\xff")]),
]


def batches(base: int = 7) -> list[bytes]:
    return [batch_format.encode(base, RECORDS[:1], 1000)[0],
            batch_format.encode(base + 1, RECORDS[1:], 1001)[0]]  # fmt: skip


def batch_seeds() -> list[bytes]:
    one, two = batches()
    gap = batch_format.encode_gap(9, 3, 1002)[0]
    return [b"\x00" + one, b"\x00" + one + SEAL + two, b"\x01" + one + two, b"\x01" + one[:30],
            b"\x01" + one + gap, b"\x00" + gap]  # fmt: skip


def fetched_seeds() -> list[bytes]:
    one, two = batches()
    return [b"\x00" + struct.pack("<HH", 0, 3) + one + SEAL + two,
            b"\x01" + struct.pack("<HH", 1, 1) + one + two]  # fmt: skip


def index_seeds() -> list[bytes]:
    index = SparseIndex(7)
    index.add(7, 0, -(2**63))
    index.add(8, 60, 5)
    offsets, times = index.encode(SegmentSummary(200, 10, 1001, 1001))
    empty = SparseIndex(0).encode(SegmentSummary(0, 0, -(2**63), -(2**63)))
    return [b"\x01" + offsets + SEAL + times, b"\x00" + offsets + SEAL + times,
            b"\x01" + empty[0] + SEAL + empty[1]]  # fmt: skip


def segment_seeds() -> list[bytes]:
    one, two = batches(0)
    gap = batch_format.encode_gap(3, 2, 1002)[0]
    index = SparseIndex(0)
    index.add(0, 0, -(2**63))
    offsets, times = index.encode(SegmentSummary(len(one) + len(two), 3, 5, 1001))
    return [b"\x00" + one + SEAL + two + SEAL + SEAL + offsets + SEAL + times,
            b"\x00" + one + SEAL + two, b"\x00" + one + SEAL + two + SEAL + gap]  # fmt: skip


def snapshot_seeds() -> list[bytes]:
    good = SnapshotJob(MemoryFS(), "s", 12, b"\x92\x01\x90").data
    return [b"\x00" + good, b"\x01" + good, b"\x00" + SnapshotJob(MemoryFS(), "s", 0, b"").data]


def metadata_seeds() -> list[bytes]:
    fs = MemoryFS()
    store = MetadataStore.open(fs, "m")
    with store.transaction() as txn:
        txn.put("topics", "orders", {"partitions": 3, "durability": "always"})
        txn.put("subscriptions", "orders/s", {"name": "s", "topic": "orders", "mode": "queue"})
        txn.put("bindings", "x", [{"exchange": "x", "topic": "orders", "key": "a.#"}])
    store.snapshot()
    snapshot = fs.files["m"]
    with store.transaction() as txn:
        txn.delete("bindings", "x")
        txn.put("users", "ann", {"grants": []})
    return [snapshot, b'{"format":1,"version":0,"namespaces":{}}',
            snapshot + SEAL + fs.files["m.journal"]]  # fmt: skip


TARGETS = {
    "storage_batch": Target(
        "storage_batch",
        "record batches (sealed with a right length and CRC, or raw) through iter_batches, "
        "verify and decode_records: CorruptBatch only; what decodes re-encodes to the same "
        "records", check_batch, batch_seeds),
    "storage_fetched": Target(
        "storage_fetched",
        "a client's reading of a Batches answer (decode_fetched) over a window of offsets: "
        "ProtocolError only, and what it returns is exactly the window", check_fetched,
        fetched_seeds),
    "storage_index": Target(
        "storage_index",
        "a segment's offset and time index files (sealed or raw) through SparseIndex.decode: "
        "InvalidIndex only; an index that loads encodes to the same two files",
        check_index, index_seeds),
    "storage_segment": Target(
        "storage_segment",
        "a segment file and its index files opened as recovery does (load_index, else scan): "
        "neither raises; every batch then found reads back whole", check_segment,
        segment_seeds, short_runs=1500),
    "journal_snapshot": Target(
        "journal_snapshot",
        "a state journal's snapshot file (sealed with a right length and CRC, or raw) "
        "through parse_snapshot: read or None, never raises; one that reads encodes to the "
        "same bytes", check_snapshot,
        snapshot_seeds),
    "metadata": Target(
        "metadata",
        "metadata.json and its journal through MetadataStore.open: StorageFailure only; "
        "what loads survives a transaction and a reopen unchanged", check_metadata,
        metadata_seeds),
}  # fmt: skip
