"""The power-loss file system keeps what was synced and may lose or tear the rest."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.property.power_loss_fs import PowerCut, PowerLossFS


def outcomes(tmp_path: Path, script: str, seeds: int = 60) -> set[tuple[str, ...]]:
    """Every on-disk state (file names and contents under d/) ``script`` left, over seeds."""
    seen = set()
    for seed in range(seeds):
        root = tmp_path / str(seed)
        root.mkdir()
        fs = PowerLossFS(str(root))
        d = str(root / "d")
        fs.makedirs(d)
        exec(script, {"fs": fs, "d": d, "os": os})
        fs.close_all()
        fs.power_cut(random.Random(seed))
        state = tuple(
            f"{name}={(root / 'd' / name).read_bytes().decode()}"
            for name in sorted(os.listdir(root / "d"))
        )
        seen.add(state)
    return seen


def test_a_new_directory_survives_once_its_parent_is_synced(tmp_path: Path) -> None:
    fs = PowerLossFS(str(tmp_path))
    fs.makedirs(str(tmp_path / "a" / "b"))
    fs.power_cut(random.Random(0))
    assert (tmp_path / "a" / "b").is_dir(), "makedirs syncs each new directory's parent"


def test_synced_bytes_stay_and_unsynced_ones_may_go_or_tear(tmp_path: Path) -> None:
    script = """
fd = fs.open_rw(d + "/f"); fs.fsync_dir(d)
fs.pwrite(fd, b"aaaa", 0); fs.fdatasync(fd)
fs.pwrite(fd, b"bbbb", 4)
"""
    seen = outcomes(tmp_path, script)
    assert ("f=aaaabbbb",) in seen
    assert ("f=aaaa",) in seen
    assert any(s[0].startswith("f=aaaab") and len(s[0]) < 10 for s in seen), "torn"
    assert ("f=aaaa\0\0\0\0",) in seen, "the size reached the disk, the data did not"
    assert all(s[0].startswith("f=aaaa") for s in seen)


def test_unsynced_directory_changes_may_be_undone_in_order(tmp_path: Path) -> None:
    script = """
fs.replace_atomically(d + "/m", b"old")
fd = fs.open_rw(d + "/m.tmp"); fs.pwrite(fd, b"new", 0); fs.fsync(fd); fs.close(fd)
fs.rename(d + "/m.tmp", d + "/m")
"""
    seen = outcomes(tmp_path, script)
    assert seen <= {("m=old",), ("m=old", "m.tmp=new"), ("m=new",)}
    assert len(seen) == 3, "the temp file's creation and the rename may each be undone"


def test_after_the_cut_the_machine_does_nothing_more(tmp_path: Path) -> None:
    fs = PowerLossFS(str(tmp_path))
    fd = fs.open_rw(str(tmp_path / "f"))
    fs.cut_after(2)
    fs.pwrite(fd, b"x", 0)
    with pytest.raises(PowerCut):
        fs.fdatasync(fd)
    with pytest.raises(PowerCut):
        fs.pwrite(fd, b"y", 1)
    fs.close_all()
    fs.power_cut(random.Random(0))
    assert not fs.dead
