"""``FetchBatches`` / ``Batches`` (protocol version 2): stored batches on the wire.

What is pinned here:

- The bytes of a ``FetchBatches`` request and a ``Batches`` answer (the batch inside is the
  storage format, pinned in tests/property/test_batch_format.py).
- ``decode_fetched`` hands out exactly the window ``[first_offset, next_offset)``, in order,
  every field intact, wherever the window starts in the first batch and ends in the last.
- Anything wrong with the batches — a flipped bit anywhere, a cut anywhere, a batch missing, a
  batch from the future format — refuses the whole answer with ``ProtocolError``.
"""

from __future__ import annotations

import struct

import msgspec
import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st

from roost.client.batches import decode_fetched
from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import Frame, Kind, encode
from roost.storage import batch as batch_format
from roost.storage.batch import Record

records = st.builds(
    Record,
    value=st.binary(max_size=40),
    key=st.one_of(st.none(), st.binary(max_size=8)),
    headers=st.lists(st.tuples(st.text(max_size=6), st.binary(max_size=6)), max_size=2),
    timestamp_ms=st.one_of(st.none(), st.integers(0, 2**40)),
)


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[list[Record]], int, m.Fetched]:
    """Batches as the broker would send them: the window starts in the first batch and ends
    in the last (a cut at max_records or the confirmed offset)."""
    batches = draw(st.lists(st.lists(records, min_size=1, max_size=5), min_size=1, max_size=4))
    base = draw(st.integers(0, 2**40))
    data, offset = b"", base
    for batch in batches:
        data += batch_format.encode(offset, batch, append_time_ms=7)[0]
        offset += len(batch)
    first = base + draw(st.integers(0, len(batches[0]) - 1))
    last_base = offset - len(batches[-1])
    end = draw(st.integers(max(first + 1, last_base + 1), offset))
    return batches, base, m.Fetched(3, first, end, data)


@given(answers())
def test_the_window_and_nothing_else_is_handed_out(
    answer: tuple[list[list[Record]], int, m.Fetched],
) -> None:
    batches, base, fetched = answer
    sent = [record for batch in batches for record in batch]
    got = decode_fetched("clicks", fetched)
    assert [g.offset for g in got] == list(range(fetched.first_offset, fetched.next_offset))
    for message in got:
        record = sent[message.offset - base]
        assert (message.topic, message.partition, message.delivery_count) == ("clicks", 3, 1)
        assert (message.key, message.value) == (record.key, record.value)
        assert message.headers == tuple(record.headers)
        assert message.timestamp_ms == (7 if record.timestamp_ms is None else record.timestamp_ms)


def test_skip_within_the_first_batch_and_cut_within_the_last() -> None:
    one = batch_format.encode(10, [Record(value=b"%d" % i) for i in range(10, 14)], 1)[0]
    two = batch_format.encode(14, [Record(value=b"%d" % i) for i in range(14, 18)], 1)[0]
    got = decode_fetched("t", m.Fetched(0, 12, 16, one + two))
    assert [(g.offset, g.value) for g in got] == [
        (12, b"12"),
        (13, b"13"),
        (14, b"14"),
        (15, b"15"),
    ]


@given(answers(), st.data())
def test_a_flipped_bit_anywhere_refuses_the_answer(
    answer: tuple[list[list[Record]], int, m.Fetched], data: st.DataObject
) -> None:
    _, _, fetched = answer
    position = data.draw(st.integers(0, len(fetched.batches) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(fetched.batches)
    damaged[position] ^= 1 << bit
    with pytest.raises(ProtocolError, match="bad Batches answer for clicks/3"):
        decode_fetched("clicks", msgspec.structs.replace(fetched, batches=bytes(damaged)))


@given(answers(), st.data())
def test_a_cut_anywhere_refuses_the_answer(
    answer: tuple[list[list[Record]], int, m.Fetched], data: st.DataObject
) -> None:
    _, _, fetched = answer
    cut = data.draw(st.integers(0, len(fetched.batches) - 1))
    with pytest.raises(ProtocolError):
        decode_fetched("clicks", msgspec.structs.replace(fetched, batches=fetched.batches[:cut]))


def test_a_missing_batch_or_a_window_the_batches_do_not_hold_is_refused() -> None:
    batches = [
        batch_format.encode(base, [Record(value=b"v"), Record(value=b"w")], 1)[0]
        for base in (0, 2, 4)
    ]
    with pytest.raises(ProtocolError, match="batch at 4, expected 2"):
        decode_fetched("t", m.Fetched(0, 0, 6, batches[0] + batches[2]))
    with pytest.raises(ProtocolError, match="the first batch starts at 2"):
        decode_fetched("t", m.Fetched(0, 1, 4, batches[1]))
    with pytest.raises(ProtocolError, match=r"2 records where the window \[0, 3\) promises 3"):
        decode_fetched("t", m.Fetched(0, 0, 3, batches[0]))


def test_a_batch_of_an_unknown_format_version_is_refused_by_name() -> None:
    data = bytearray(batch_format.encode(0, [Record(value=b"v")], 1)[0])
    data[8] = 2  # format_version, then a CRC that matches: a well-formed batch from the future
    struct.pack_into("<I", data, 4, crc32c(bytes(data[8:])))
    with pytest.raises(ProtocolError, match="unknown batch format version 2"):
        decode_fetched("t", m.Fetched(0, 0, 1, bytes(data)))


# -- golden bytes -------------------------------------------------------------------------


def test_golden_fetch_batches_request() -> None:
    frame = Frame(Kind.REQUEST, 5, m.FetchBatches("t", "g", "m1", 2, 1000, 250))
    # [47 (FetchBatches), "t", "g", "m1", generation 2, max_records 1000, wait_ms 250]
    assert encode(frame) == bytes.fromhex(
        "14000000 03 05000000 97 2f a174 a167 a26d31 02 cd03e8 ccfa"
    )


def test_golden_batches_answer() -> None:
    data = batch_format.encode(4, [Record(value=b"x", timestamp_ms=9)], 9)[0]
    answer = m.Batches([m.Fetched(1, 4, 5, data)], m.Membership("m1", 2, [1], 10_000))
    payload = encode(Frame(Kind.RESPONSE, 5, answer))[9:]
    # [47 (Batches), [[partition 1, first 4, next 5, bin8 of the batch]], [40 (Membership), ...]]
    assert payload[:7].hex(" ") == "93 2f 91 94 01 04 05"
    assert payload[7:9] == bytes([0xC4, len(data)]) and payload[9 : 9 + len(data)] == data
    assert payload[9 + len(data) :].hex(" ") == "95 28 a2 6d 31 02 91 01 cd 27 10"
    assert msgspec.msgpack.decode(payload) == [
        47, [[1, 4, 5, data]], [40, "m1", 2, [1], 10_000],
    ]  # fmt: skip
