"""A file system that fails the operation a test names, on the paths it names.

    fs = FaultFS()
    fs.arm("pwrite", errno.EIO, match="/topics/t/", tear=True)   # the next write there
    ...                                                            # tears and fails
    fs.disarm()

Descriptors are traced back to the path they were opened on, so a fault on ``pwrite`` or
``fdatasync`` can name a file. A torn write lands half its bytes before it fails, as a disk
that fills (or dies) mid-write does; a ``written`` one lands whole and still fails, as a write
the device took but could not confirm.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass

from roost.clock import Clock
from roost.core.broker import Broker
from roost.server.flusher import Flusher
from roost.server.host import Host
from roost.storage import LocalEngine
from roost.storage.fs import LocalFS
from roost.storage.log import PartitionLog


@dataclass
class Fault:
    operation: str
    error: int
    match: str
    tear: bool  # half the bytes land first
    times: int  # how many more calls fail; -1: every one until disarmed
    hits: int = 0
    written: bool = False  # every byte lands, then the error: the device failed to confirm


class FaultFS(LocalFS):
    def __init__(self) -> None:
        self._paths: dict[int, str] = {}
        self.faults: list[Fault] = []

    def arm(
        self,
        operation: str,
        error: int,
        match: str = "",
        tear: bool = False,
        times: int = 1,
        written: bool = False,
    ) -> Fault:
        fault = Fault(operation, error, match, tear, times, written=written)
        self.faults.append(fault)
        return fault

    def disarm(self) -> None:
        self.faults.clear()

    def _hit(self, operation: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.operation == operation and fault.match in path and fault.times != 0:
                fault.times -= fault.times > 0
                fault.hits += 1
                return fault
        return None

    def _check(self, operation: str, path: str) -> None:
        fault = self._hit(operation, path)
        if fault is not None:
            raise OSError(fault.error, f"injected {errno.errorcode[fault.error]} on {operation}")

    # -- opening and closing: remember which path a descriptor is ---------------------------

    def open_rw(self, path: str) -> int:
        self._check("open_rw", path)
        fd = super().open_rw(path)
        self._paths[fd] = path
        return fd

    def open_dsync(self, path: str) -> int:
        self._check("open_dsync", path)
        fd = super().open_dsync(path)
        self._paths[fd] = path
        return fd

    def open_ro(self, path: str) -> int:
        self._check("open_ro", path)
        fd = super().open_ro(path)
        self._paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        super().close(fd)

    # -- descriptor operations ----------------------------------------------------------------

    def pwrite(self, fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
        fault = self._hit("pwrite", self._paths.get(fd, ""))
        if fault is not None:
            if fault.tear or fault.written:
                landed = len(data) if fault.written else len(data) // 2
                super().pwrite(fd, memoryview(data)[:landed], position)
            raise OSError(fault.error, f"injected {errno.errorcode[fault.error]} on pwrite")
        super().pwrite(fd, data, position)

    def fdatasync(self, fd: int) -> None:
        self._check("fdatasync", self._paths.get(fd, ""))
        super().fdatasync(fd)

    def fsync(self, fd: int) -> None:
        self._check("fsync", self._paths.get(fd, ""))
        super().fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._check("truncate", self._paths.get(fd, ""))
        super().truncate(fd, size)

    # -- path operations ----------------------------------------------------------------------

    def fsync_dir(self, path: str) -> None:
        self._check("fsync_dir", path)
        super().fsync_dir(path)

    def mkdir(self, path: str) -> None:
        self._check("mkdir", path)
        super().mkdir(path)

    def remove(self, path: str) -> None:
        self._check("remove", path)
        super().remove(path)

    def rename(self, source: str, target: str) -> None:
        self._check("rename", target)
        super().rename(source, target)

    def write_file(self, path: str, data: bytes) -> None:
        self._check("write_file", path)
        super().write_file(path, data)


async def start_host(
    data_dir: str, clock: Clock, fs: LocalFS, max_open_files: int | None = None
) -> Host:
    """A host on ``fs`` without its background tasks: the test calls ``storage.check`` when
    it wants free space read and failed logs repaired. The watermark is off."""
    engine = await asyncio.to_thread(LocalEngine.open, data_dir, clock, fs, max_open_files)
    flusher = Flusher(clock)
    engine.on_dirty = flusher.notify
    return Host(engine, Broker.open(engine, clock), flusher, clock, min_free_bytes=0)


def log_values(log: PartitionLog) -> list[bytes]:
    """Every value a log holds now, in order: what a test checks after faults and repairs."""
    found: list[bytes] = []
    offset = log.start_offset
    while offset < log.end_offset:
        records = log.read(offset)
        found += [r.value for r in records]
        offset = records[-1].offset + 1
    return found
