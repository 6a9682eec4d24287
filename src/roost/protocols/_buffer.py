"""A receive buffer for framed protocols: append what arrives, take whole frames off the front.

Rules (STYLE.md, parsers assume a hostile peer): the buffer never holds more than its limit
(``ProtocolError`` instead); consumed bytes are dropped by moving an offset, and the storage is
compacted only once the consumed part is large, so taking frames is not quadratic.

A frame can be decoded where it lies (``decode``): a megabyte answer is then copied once, by
the decoder into the values it makes, instead of once more into a ``bytes`` of its own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from roost.errors import ProtocolError

T = TypeVar("T")

#: Compact once this much has been consumed (and it is at least half the buffer).
COMPACT_AFTER_BYTES = 64 * 1024


class ReceiveBuffer:
    def __init__(self, protocol: str, max_bytes: int) -> None:
        self._protocol = protocol
        self._max_bytes = max_bytes
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``. Refused when what is already buffered, not yet taken as frames,
        is over the limit: at most ``max_bytes`` plus one chunk is ever held, and a chunk of
        several whole frames is never refused for its size."""
        if len(self) > self._max_bytes:
            raise ProtocolError(
                self._protocol,
                f"more than {self._max_bytes} bytes buffered without a whole frame",
            )
        self._data += data

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes not yet consumed (fewer if fewer are there)."""
        return bytes(self._data[self._start : self._start + size])

    def clear(self) -> None:
        """Drop everything buffered and the storage with it."""
        self._data = bytearray()
        self._start = 0

    def unpack(self, layout: struct.Struct) -> tuple[int, ...] | None:
        """The next bytes read as ``layout``, not consumed; None if fewer are buffered."""
        if len(self) < layout.size:
            return None
        return layout.unpack_from(self._data, self._start)

    def decode(self, size: int, skip: int, decoder: Callable[[memoryview], T]) -> T:
        """Consume the next ``size`` bytes (there must be that many), returning what
        ``decoder`` makes of them past the first ``skip``. The decoder must keep no view of
        its input: the bytes are reused once this returns."""
        try:
            with memoryview(self._data) as view:
                part = view[self._start + skip : self._start + size]
                try:
                    return decoder(part)
                finally:
                    part.release()
        finally:
            self._consume(size)

    def _consume(self, size: int) -> None:
        self._start += size
        if self._start >= COMPACT_AFTER_BYTES and self._start * 2 >= len(self._data):
            del self._data[: self._start]
            self._start = 0
