"""A delivery's receipt: which message, and which delivery of it, an ack or nack settles.

Shared by every layer, as errors are: the core issues and checks receipts, the native protocol
carries them as ``[partition, offset, delivery]`` arrays decoded straight into this struct (no
per-receipt conversion on the ack path), and clients hand them back.
"""

from __future__ import annotations

import msgspec

from roost.errors import InvalidRequest


class Receipt(msgspec.Struct, frozen=True, array_like=True):
    partition: int
    offset: int
    delivery: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}:{self.delivery}"

    @classmethod
    def parse(cls, text: str) -> Receipt:
        try:
            partition, offset, delivery = (int(part) for part in text.split(":"))
        except ValueError:
            raise InvalidRequest(f"malformed receipt {text!r}") from None
        return cls(partition, offset, delivery)
