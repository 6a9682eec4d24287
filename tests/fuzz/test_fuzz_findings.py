"""What the fuzz targets found, each pinned by the smallest input that shows it (every one
failed with an exception outside its reader's contract before its fix)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli.main import main
from roost.client.api import _answered
from roost.client.batches import decode_fetched
from roost.core import state_codec
from roost.core.routing import ExchangeSpec
from roost.core.stats import SubscriptionStats
from roost.errors import InvalidConfig, ProtocolError, StorageFailure
from roost.protocols.native import messages as m
from roost.server.serve import settings
from roost.storage import batch as batch_format
from roost.storage.batch import CorruptBatch, Record
from roost.storage.metadata import MetadataStore
from tests.fuzz.storage_targets import MemoryFS, seal_batch

# -- a batch whose CRC holds but whose header name is not UTF-8 ----------------------------


def batch_with_header_name(name: bytes) -> bytes:
    """A batch whose one header name is the two bytes ``name``, its CRC made to match (as
    a disk or a peer could hand over, the CRC being no proof of sense)."""
    good, _ = batch_format.encode(0, [Record(value=b"v", headers=[("hX", b"1")])], 1000)
    return seal_batch(good.replace(b"\xa2hX", b"\xa2" + name))


def test_a_sealed_batch_with_a_non_utf8_header_name_is_corrupt() -> None:
    data = batch_with_header_name(b"\xff\xfe")
    [(position, header)] = batch_format.iter_batches(data)  # the CRC holds
    with pytest.raises(CorruptBatch, match="undecodable"):
        batch_format.decode_records(data, position, header)


def test_a_client_refuses_such_a_fetched_batch_with_protocol_error() -> None:
    data = batch_with_header_name(b"\xff\xfe")
    with pytest.raises(ProtocolError, match="undecodable"):
        decode_fetched("t", m.Fetched(0, 0, 1, data))


def test_a_client_refuses_records_whose_offsets_are_not_their_batchs() -> None:
    """A sealed batch at base 7 whose second record says offset 6: before, the client handed
    out offsets 7, 6 (a duplicate below the window's end, then a gap)."""
    records = [Record(value=b"a"), Record(value=b"b")]
    good, _ = batch_format.encode(7, records, 1000)
    assert good.count(b"\x95\x08") == 1  # the second record's array, [8, ...]
    data = seal_batch(good.replace(b"\x95\x08", b"\x95\x06"))
    with pytest.raises(ProtocolError, match="not its offsets"):
        decode_fetched("t", m.Fetched(0, 7, 9, data))


def test_a_client_refuses_a_gap_batch_without_counting_its_offsets() -> None:
    """A gap batch covering 2**32 - 1 offsets: the first check of density built a list of
    all of them (MemoryError). A broker never sends a gap (its readers skip them)."""
    gap, _ = batch_format.encode_gap(0, 2**32 - 1, 1000)
    with pytest.raises(ProtocolError, match="a gap batch"):
        decode_fetched("t", m.Fetched(0, 0, 1, gap))


# -- metadata.json that is not UTF-8 --------------------------------------------------------


def test_metadata_that_is_not_utf8_is_a_storage_failure() -> None:
    fs = MemoryFS()
    fs.files["metadata.json"] = b'{"format":1,"version":1,"namespaces":{"t\xa4":{}}}'
    with pytest.raises(StorageFailure, match="not a metadata document"):
        MetadataStore.open(fs, "metadata.json")


# -- state journal entries and snapshots that are not what the codec writes ----------------


@pytest.mark.parametrize(
    "entry",
    [
        state_codec.committed(5, 1),  # a partition the topic does not have
        state_codec.done(-1, [(0, 1)]),
        b"\x93\x00\x00\x00",  # DELIVERED without its offsets
        b"\x94\x02\x00\x01\xa1x",  # RETRY with a string where its offsets go
        b"\x92\x09\x00",  # an unknown kind of entry
        b"\xc1",  # not MessagePack
    ],
)
def test_a_bad_journal_entry_is_corrupt_state_naming_it(entry: bytes) -> None:
    good = state_codec.delivered(0, 5, [1])
    with pytest.raises(state_codec.CorruptState, match="entry 1"):
        state_codec.replay(None, [good, entry], partitions=2)


def test_a_snapshot_naming_a_partition_the_topic_lacks_is_corrupt_state() -> None:
    snapshot = state_codec.snapshot([], {7: 3})
    with pytest.raises(state_codec.CorruptState, match="snapshot names partition 7"):
        state_codec.replay(snapshot, [], partitions=2)


# -- a client reading a broker's answer that is not its struct -----------------------------


def test_an_answer_that_is_not_its_struct_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="ListExchanges"):
        _answered(m.ListExchanges(), True, list[ExchangeSpec])
    with pytest.raises(ProtocolError, match="Stats"):
        _answered(m.Stats("t", "s"), ["not", "a", "map"], SubscriptionStats)


# -- roost serve's config file -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"server = 3\n", "[server]"),
        (b"[server]\nport = 7420\n[tls]\n", None),  # fine: an empty [tls]
        (b"tls = []\n", "[tls]"),
        (b"[server\n", "not TOML"),
        (b'[server]\ndata = "\xff"\n', "not TOML"),
        (b'[server]\nport = "seven"\n', "port"),
        (b"[server]\nprot = 7420\n", "prot=7420: is not a setting"),
    ],
)
def test_a_bad_config_file_is_invalid_config_naming_what(
    tmp_path: Path, content: bytes, named: str | None
) -> None:
    path = tmp_path / "roost.toml"
    path.write_bytes(content)
    if named is None:
        assert settings(str(path), {}, {}).port == 7420
        return
    with pytest.raises(InvalidConfig) as refused:
        settings(str(path), {}, {})
    assert named in str(refused.value)


def test_roost_serve_says_what_is_wrong_with_its_config_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "roost.toml"
    path.write_bytes(b"server = 3\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: invalid [server]=3: must be a table in {path}"
    ]
