"""A file system that can lose power: what a real power cut could leave on disk.

``PowerLossFS`` does every operation on the real files (so the engine reads back what it
wrote, as from the page cache) and keeps, beside them, a model of what the disk holds for sure:

- per file, its content as of the last ``fdatasync``/``fsync`` and the writes and truncations
  made since, in order (a write through an O_DSYNC descriptor is durable on its own);
- per directory, its entries as of the last ``fsync_dir`` and the links, unlinks and renames
  made since, in order. A new directory is a link in its parent: it survives only once the
  parent is synced.

``power_cut(rng)`` rewrites the tree under ``root`` as one state a power loss could leave:
each directory keeps its synced entries plus a prefix of its later changes (a rename or create
may be undone, a delete may come back); each file that is still reachable keeps its synced
content plus a prefix of its later writes, the first write left out maybe torn (a prefix of
its bytes, or zeros where its bytes were: the size reached the disk, the data did not). Synced
writes are always there. Everything on disk after the cut counts as synced.

``cut_after(n)`` makes the n-th mutating call from now raise ``PowerCut`` instead of running,
and every mutating call after it too, until ``power_cut``: the machine is off. Nothing is ever
really fsynced, so a test's thousands of syncs cost nothing.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field

from roost.storage.fs import LocalFS


class PowerCut(BaseException):
    """The power went out instead of this call (not an OSError: nothing may handle it)."""


@dataclass
class _Write:
    position: int
    data: bytes
    synced: bool


@dataclass
class _Truncate:
    size: int


@dataclass
class _File:
    durable: bytes = b""
    changes: list[_Write | _Truncate] = field(default_factory=list)


@dataclass
class _Dir:
    entries: dict[str, _File | _Dir] = field(default_factory=dict)  # as on disk now
    durable: dict[str, _File | _Dir] = field(default_factory=dict)
    # ("link", name, node) | ("unlink", name, None) | ("rename", source, target)
    changes: list[tuple[str, str, object]] = field(default_factory=list)


def _apply_file(content: bytearray, change: _Write | _Truncate, torn: str = "") -> None:
    if isinstance(change, _Truncate):
        del content[change.size :]
        return
    data = change.data
    if torn.startswith("prefix:"):
        data = data[: int(torn[7:])]
    elif torn == "zeros":
        data = bytes(len(data))
    end = change.position + len(data)
    if len(content) < change.position:
        content.extend(bytes(change.position - len(content)))
    content[change.position : end] = data


def _apply_dir(entries: dict[str, _File | _Dir], change: tuple[str, str, object]) -> None:
    kind, name, other = change
    if kind == "link":
        assert isinstance(other, _File | _Dir)
        entries[name] = other
    elif kind == "unlink":
        entries.pop(name, None)
    elif name in entries:  # rename
        assert isinstance(other, str)
        entries[other] = entries.pop(name)


class PowerLossFS(LocalFS):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self._top = _scan(self.root)
        self._fds: dict[int, tuple[_File, bool]] = {}  # fd -> (file, opened O_DSYNC)
        self._countdown: int | None = None
        self.calls = 0  # mutating calls so far: where a cut can land

    # -- the model ------------------------------------------------------------------------

    def _node(self, path: str) -> _File | _Dir:
        node: _File | _Dir = self._top
        for part in self._parts(path):
            assert isinstance(node, _Dir), path
            node = node.entries[part]
        return node

    def _parts(self, path: str) -> list[str]:
        relative = os.path.relpath(os.path.abspath(path), self.root)
        assert not relative.startswith(".."), f"{path} is outside {self.root}"
        return [] if relative == "." else relative.split(os.sep)

    def _parent(self, path: str) -> tuple[_Dir, str]:
        *parents, name = self._parts(path)
        node: _File | _Dir = self._top
        for part in parents:
            assert isinstance(node, _Dir)
            node = node.entries[part]
        assert isinstance(node, _Dir)
        return node, name

    def _link(self, path: str, node: _File | _Dir) -> None:
        parent, name = self._parent(path)
        parent.entries[name] = node
        parent.changes.append(("link", name, node))

    def _unlink(self, path: str) -> None:
        parent, name = self._parent(path)
        parent.entries.pop(name)
        parent.changes.append(("unlink", name, None))

    def _mutating(self) -> None:
        self.calls += 1
        if self._countdown is not None:
            self._countdown -= 1
            if self._countdown <= 0:
                self._countdown = 0
                raise PowerCut

    def cut_after(self, calls: int) -> None:
        """The ``calls``-th mutating call from now (1 = the next) loses the power."""
        self._countdown = max(1, calls)

    @property
    def dead(self) -> bool:
        return self._countdown == 0

    # -- LocalFS --------------------------------------------------------------------------

    def open_rw(self, path: str) -> int:
        if not os.path.exists(path):
            self._mutating()
            fd = super().open_rw(path)
            self._link(path, _File())
        else:
            fd = super().open_rw(path)
        node = self._node(path)
        assert isinstance(node, _File)
        self._fds[fd] = (node, False)
        return fd

    def open_dsync(self, path: str) -> int:
        fd = super().open_dsync(path)
        node = self._node(path)
        assert isinstance(node, _File)
        self._fds[fd] = (node, True)
        return fd

    def open_ro(self, path: str) -> int:
        fd = super().open_ro(path)
        node = self._node(path)
        assert isinstance(node, _File)
        self._fds[fd] = (node, False)
        return fd

    def close(self, fd: int) -> None:
        del self._fds[fd]
        super().close(fd)

    def close_all(self) -> None:
        """What the machine going down does to descriptors a dead engine left open."""
        for fd in list(self._fds):
            self.close(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        self._mutating()
        super().pwrite(fd, data, position)
        node, dsync = self._fds[fd]
        node.changes.append(_Write(position, bytes(data), dsync))

    def fdatasync(self, fd: int) -> None:
        self._mutating()
        node, _ = self._fds[fd]
        content = bytearray(node.durable)
        for change in node.changes:
            _apply_file(content, change)
        node.durable = bytes(content)
        node.changes.clear()

    def fsync(self, fd: int) -> None:
        self.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._mutating()
        super().truncate(fd, size)
        self._fds[fd][0].changes.append(_Truncate(size))

    def fsync_dir(self, path: str) -> None:
        self._mutating()
        node = self._node(path)
        assert isinstance(node, _Dir)
        node.durable = dict(node.entries)
        node.changes.clear()

    def mkdir(self, path: str) -> None:
        self._mutating()
        super().mkdir(path)
        self._link(path, _Dir())

    def remove(self, path: str) -> None:
        self._mutating()
        super().remove(path)
        self._unlink(path)

    def remove_tree(self, path: str) -> None:
        self._mutating()
        super().remove_tree(path)
        self._unlink(path)

    def rename(self, source: str, target: str) -> None:
        self._mutating()
        parent, name = self._parent(source)
        target_parent, target_name = self._parent(target)
        assert parent is target_parent, "renames stay in one directory here"
        super().rename(source, target)
        parent.entries[target_name] = parent.entries.pop(name)
        parent.changes.append(("rename", name, target_name))

    def write_file(self, path: str, data: bytes) -> None:
        fd = self.open_rw(path)
        try:
            self.truncate(fd, 0)
            self.pwrite(fd, data, 0)
        finally:
            self.close(fd)

    # -- the cut --------------------------------------------------------------------------

    def power_cut(self, rng: random.Random) -> None:
        """Replace the tree under ``root`` by one state a power loss could leave."""
        assert not self._fds, "close every descriptor first (close_all)"
        tree = _survivor(self._top, rng)
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        _write_tree(self.root, tree)
        self._top = _scan(self.root)
        self._countdown = None


Tree = dict[str, "bytes | Tree"]


def _survivor(directory: _Dir, rng: random.Random) -> Tree:
    entries = dict(directory.durable)
    for change in directory.changes[: rng.randint(0, len(directory.changes))]:
        _apply_dir(entries, change)
    return {
        name: _survivor(node, rng) if isinstance(node, _Dir) else _file_survivor(node, rng)
        for name, node in entries.items()
    }


def _file_survivor(file: _File, rng: random.Random) -> bytes:
    content = bytearray(file.durable)
    unsynced = [i for i, change in enumerate(file.changes) if not _synced(change)]
    kept = rng.randint(0, len(unsynced))
    first_lost = unsynced[kept] if kept < len(unsynced) else None
    for i, change in enumerate(file.changes):
        if _synced(change) or i < (first_lost if first_lost is not None else len(file.changes)):
            _apply_file(content, change)
        elif i == first_lost and isinstance(change, _Write) and change.data:
            torn = rng.choice(["", f"prefix:{rng.randrange(len(change.data))}", "zeros"])
            if torn:
                _apply_file(content, change, torn)
    return bytes(content)


def _synced(change: _Write | _Truncate) -> bool:
    return isinstance(change, _Write) and change.synced


def _write_tree(path: str, tree: Tree) -> None:
    for name, node in tree.items():
        child = os.path.join(path, name)
        if isinstance(node, dict):
            os.mkdir(child)
            _write_tree(child, node)
        else:
            with open(child, "wb") as f:
                f.write(node)


def _scan(path: str) -> _Dir:
    """A model of the tree on disk, all of it synced."""
    directory = _Dir()
    for name in sorted(os.listdir(path)):
        child = os.path.join(path, name)
        node: _File | _Dir
        if os.path.isdir(child):
            node = _scan(child)
        else:
            with open(child, "rb") as f:
                node = _File(f.read())
        directory.entries[name] = directory.durable[name] = node
    return directory
