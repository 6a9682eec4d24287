"""The one seam every storage file operation goes through.

Storage code never calls ``open``/``os.write``/``os.fsync`` directly: it calls a ``FileSystem``.
``LocalFS`` is the real one; tests subclass it to fail at a chosen call (ENOSPC on a write, EIO
on an fsync) or to tear a write, which is how the crash and fault tests reach code paths a
healthy disk never takes.

Rules kept here so callers need not remember them:
- ``pwrite`` loops until every byte is written or raises: a short write is never reported as done.
- ``replace_atomically`` is temp file -> fsync -> rename -> fsync directory, so a reader sees the
  old content or the new, never a mix, and the new name survives power loss.
- ``makedirs`` fsyncs the parent of every directory it creates, so the new directory does too.
"""

from __future__ import annotations

import os
import shutil


class LocalFS:
    def open_rw(self, path: str) -> int:
        """Open (creating if needed) for positional reads and writes."""
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def open_dsync(self, path: str) -> int:
        """Open an existing file for writes that are durable when ``pwrite`` returns (O_DSYNC).

        One syscall instead of write + fdatasync: the flusher's thread then needs the GIL back
        once per file, not twice.
        """
        return os.open(path, os.O_WRONLY | os.O_DSYNC | os.O_CLOEXEC)

    def open_ro(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, position)
            view = view[written:]
            position += written

    def pread(self, fd: int, size: int, position: int) -> bytes:
        return os.pread(fd, size, position)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def file_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def makedirs(self, path: str) -> None:
        """Create ``path`` and its missing parents, each new one's entry fsynced in its parent.

        A directory's entry is like a file's: until its parent is fsynced, a power loss may
        take it, and with it everything inside however well synced (a topic's partition, a
        journal, the data directory itself).
        """
        missing = []
        path = os.path.abspath(path)
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for directory in reversed(missing):
            try:
                self.mkdir(directory)
            except FileExistsError:
                continue
            self.fsync_dir(os.path.dirname(directory))

    def remove(self, path: str) -> None:
        os.remove(path)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_file(self, path: str, data: bytes) -> None:
        """Write without fsync: for hints (indexes) that recovery can rebuild."""
        with open(path, "wb") as f:
            f.write(data)

    def replace_atomically(self, path: str, data: bytes) -> None:
        # Built from this class's own operations, so a test file system sees every step.
        temp = f"{path}.tmp"
        fd = self.open_rw(temp)
        try:
            self.truncate(fd, 0)
            self.pwrite(fd, data, 0)
            self.fsync(fd)
        finally:
            self.close(fd)
        self.rename(temp, path)
        self.fsync_dir(os.path.dirname(path) or ".")


#: The file system storage uses unless told otherwise.
LOCAL_FS = LocalFS()
