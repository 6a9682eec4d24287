"""The metadata journal: one small, CRC-checked record per committed metadata transaction.

``metadata.json`` is a snapshot; ``metadata.journal`` holds the transactions committed since,
each as the entries it put or deleted (never the whole document). A commit is one ``pwrite``
of one record then one ``fdatasync``: the record is the commit point. Open = snapshot, then
every record whose version is above the snapshot's, in order.

File layout (little-endian)::

    header  4s   magic b"RMJ1"
    record  u32  length of the body in bytes (1 .. MAX_RECORD_BYTES)
            u32  crc32c of the body
            body JSON: [version, [op, ...]] or [version, [op, ...], synced],
                 op = ["put", namespace, name, value] | ["delete", namespace, name]

Versions are dense: each record's is one more than the one before it, and the first one after
a snapshot is the snapshot's version + 1 (records at or below it were written before that
snapshot and are skipped; a reset after a snapshot leaves none).

``synced`` is there only in a record written while records before it were not yet known to be
durable (group commit, metadata.py: several commits share one ``fdatasync``): the highest version
known durable when it was written. Without it, every record before this one was durable then
(``synced`` = version - 1), which is what a store that syncs each record before the next writes.

Records are only ever appended, so a power loss can damage only records not yet synced: the
last one, or any of the last group written before one shared sync (their pages may reach the
disk in any order). So damage is a tear (cut on open: transactions that were never confirmed)
when no intact record follows it, or when every intact record that follows was written while
the damaged one was still unsynced (their ``synced`` is below its version). A bad record
followed by one written after it was durable is damage, not a crash: ``scan`` says so and
nothing is cut.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
from crc32c import crc32c

MAGIC = b"RMJ1"
_RECORD_HEADER = struct.Struct("<II")
RECORD_HEADER_BYTES = _RECORD_HEADER.size
#: A transaction bigger than this is a bug or a damaged length field, not a definition change.
MAX_RECORD_BYTES = 16 * 1024 * 1024

PUT = "put"
DELETE = "delete"

#: ("put", namespace, name, value) or ("delete", namespace, name, None)
Op = tuple[str, str, str, Any]
#: (version, ops, synced): a decoded record; ``synced`` the highest version known durable when
#: it was written.
Record = tuple[int, list[Op], int]


class JournalScan(msgspec.Struct, kw_only=True):
    """What reading a journal file found."""

    #: (version, ops) of every intact record, in file order.
    records: list[tuple[int, list[Op]]]
    #: Where each record starts in the file, in the same order.
    starts: list[int] = msgspec.field(default_factory=list)
    #: Bytes from the start of the file to the end of the last intact record.
    valid_bytes: int
    #: What is wrong past ``valid_bytes``, in words; "" if nothing.
    problem: str = ""
    #: The damage is a torn tail (a crash while the last record was written): cutting it
    #: loses only a transaction nobody was told had committed.
    torn: bool = False


def encode_record(version: int, ops: list[Op], synced: int | None = None) -> bytes:
    """The record of transaction ``version``; ``synced``: the highest version known durable
    as it is written, when that is not ``version - 1`` (a group commit)."""
    wire = [[kind, namespace, name, value] if kind == PUT else [kind, namespace, name]
            for kind, namespace, name, value in ops]  # fmt: skip
    fields = [version, wire] if synced is None or synced == version - 1 else [version, wire, synced]
    body = msgspec.json.encode(fields)
    return _RECORD_HEADER.pack(len(body), crc32c(body)) + body


def decode_body(body: bytes) -> tuple[int, list[Op]]:
    """A record body's version and ops; ``ValueError`` if it is no record."""
    version, ops, _ = decode_record(body)
    return version, ops


def decode_record(body: bytes) -> Record:
    """A record body's version, ops and ``synced``; ``ValueError`` if it is no record."""
    try:
        fields = msgspec.json.decode(body)
        if type(fields) is not list or len(fields) not in (2, 3):
            raise ValueError("not [version, ops] or [version, ops, synced]")
        version, wire = fields[0], fields[1]
        synced = fields[2] if len(fields) == 3 else version - 1
        ops: list[Op] = []
        for op in wire:
            if op[0] == PUT and len(op) == 4:
                ops.append((PUT, str(op[1]), str(op[2]), op[3]))
            elif op[0] == DELETE and len(op) == 3:
                ops.append((DELETE, str(op[1]), str(op[2]), None))
            else:
                raise ValueError(f"unknown operation {op[0]!r}")
        if type(version) is not int:
            raise ValueError("version is not an integer")
        if type(synced) is not int or not synced < version:
            raise ValueError("synced is not an integer below the version")
        return version, ops, synced
    except (ValueError, TypeError, IndexError, KeyError, RecursionError) as e:
        raise ValueError(f"not a metadata record: {e}") from None


def scan(data: bytes) -> JournalScan:
    """Every intact record of a journal file's bytes, and what is wrong after them."""
    if len(data) < len(MAGIC):
        # A crash while the file was being made: nothing was ever committed to it.
        return JournalScan(records=[], valid_bytes=0, torn=bool(data), problem=_torn(data))
    if data[: len(MAGIC)] != MAGIC:
        if data[: len(MAGIC)] == bytes(len(MAGIC)):
            # The header is synced with the first record: zeros (its size reached the disk,
            # its bytes did not) mean no record was ever synced after it either.
            return JournalScan(records=[], valid_bytes=0, torn=True, problem="header is zeros")
        return JournalScan(records=[], valid_bytes=0, problem="not a metadata journal")
    records: list[Record] = []
    starts: list[int] = []
    position = len(MAGIC)
    while position < len(data):
        starts.append(position)
        problem, end = _record_at(data, position, records)
        if problem:
            durable_after = _durable_after(data, end)
            return JournalScan(
                records=[(version, ops) for version, ops, _ in records],
                starts=starts[:-1],
                valid_bytes=position,
                problem=f"record at byte {position}: {problem}"
                + (" (intact records follow it)" if durable_after else ""),
                torn=not durable_after,
            )
        position = end
    return JournalScan(
        records=[(version, ops) for version, ops, _ in records], starts=starts, valid_bytes=position
    )


def _durable_after(data: bytes, end: int) -> bool:
    """Whether the damaged record ending at ``end`` (0: its length cannot be believed) is
    followed by an intact record written once it was durable: then a power loss cannot explain
    it. The intact records right after it are read until one is not; the damaged one's version
    is the first of them's less one (versions are dense)."""
    followers: list[Record] = []
    position = end
    while 0 < position < len(data):
        problem, position = _record_at(data, position, followers)
        if problem:
            break
    if not followers:
        return False
    damaged_version = followers[0][0] - 1
    return any(synced >= damaged_version for _, _, synced in followers)


def _record_at(data: bytes, position: int, into: list[Record]) -> tuple[str, int]:
    """Decode the record at ``position`` into ``into``: (problem or "", where it ends; 0 if
    its length cannot be believed)."""
    if len(data) - position < _RECORD_HEADER.size:
        return "cut short in its header", 0
    length, crc = _RECORD_HEADER.unpack_from(data, position)
    if not 0 < length <= MAX_RECORD_BYTES:
        return f"impossible length {length}", 0
    start = position + _RECORD_HEADER.size
    end = start + length
    if end > len(data):
        return f"cut short ({len(data) - start} of {length} bytes)", 0
    body = data[start:end]
    if crc32c(body) != crc:
        return "checksum mismatch", end
    try:
        into.append(decode_record(body))
    except ValueError as e:
        return str(e), end
    return "", end


def _torn(data: bytes) -> str:
    return f"header cut short ({len(data)} bytes)" if data else ""
