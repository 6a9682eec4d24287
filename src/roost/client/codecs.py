"""What a message's value may be, and reading it back: bytes as they are, ``str`` as UTF-8,
and with a serializer any JSON-able value, msgspec Struct or pydantic model.

    await broker.publish("emails", "welcome, ada")                       # text/plain
    await broker.publish("orders", {"id": 7}, serializer="json")         # application/json
    broker = await roost.connect(url, serializer="json")                 # the client's default

    delivery.text()              # the value as UTF-8
    delivery.json()              # the value decoded from JSON
    delivery.decode(Order)       # into a msgspec Struct, a dataclass or a pydantic model
    delivery.headers["content-type"]

What a value became is recorded in its ``content-type`` header (only for ``str`` and
serialized values: bytes are sent as they are, with no header), so a consumer in any language
knows how to read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar, overload

import msgspec

from roost.errors import InvalidRequest

Serializer = Literal["json"]
CONTENT_TYPE = "content-type"
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
T = TypeVar("T")

_JSON_ENCODER = msgspec.json.Encoder()


def encode(value: object, serializer: Serializer | None) -> tuple[bytes, bytes | None]:
    """``value`` as bytes, and the content type to record (None: none)."""
    if type(value) is bytes:
        return value, None
    if isinstance(value, bytearray | memoryview):
        return bytes(value), None
    if serializer is None:
        if isinstance(value, str):
            return value.encode(), TEXT
        raise InvalidRequest(
            f"a message's value must be bytes or str, not a {type(value).__name__}; "
            "pass serializer='json' (to publish, or to the client) to send it as JSON"
        )
    if serializer != "json":
        raise InvalidRequest(f"unknown serializer {serializer!r}: 'json' is the one there is")
    dump = getattr(value, "model_dump", None)  # a pydantic model, without importing pydantic
    try:
        return _JSON_ENCODER.encode(dump(mode="json") if callable(dump) else value), JSON
    except (TypeError, msgspec.EncodeError) as e:
        raise InvalidRequest(f"the value cannot be sent as JSON: {e}") from None


def with_content_type(
    headers: tuple[tuple[str, bytes], ...], content_type: bytes | None
) -> tuple[tuple[str, bytes], ...]:
    """``headers`` with ``content-type`` recorded, unless the caller set one already."""
    if content_type is None or any(name == CONTENT_TYPE for name, _ in headers):
        return headers
    return (*headers, (CONTENT_TYPE, content_type))


def decode_json(value: bytes) -> Any:
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError as e:
        raise ValueError(f"the value is not JSON: {e}") from None


def decode_into(value: bytes, kind: type[T]) -> T:
    """``value`` (JSON) as ``kind``: a msgspec Struct, a dataclass, a TypedDict, or a pydantic
    model (through its own ``model_validate_json``)."""
    validate = getattr(kind, "model_validate_json", None)
    if callable(validate):
        result: T = validate(value)
        return result
    try:
        return msgspec.json.decode(value, type=kind)
    except msgspec.ValidationError as e:
        raise ValueError(f"the value is not a {getattr(kind, '__name__', kind)}: {e}") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"the value is not JSON: {e}") from None


class Headers(tuple[tuple[str, bytes], ...]):
    """A message's headers: (name, value) pairs in order (a name may repeat), that can also
    be read by name: ``headers["trace-id"]`` and ``headers.get("trace-id")`` give the last
    value of that name."""

    __slots__ = ()

    @overload  # type: ignore[override]
    def __getitem__(self, key: str) -> bytes: ...
    @overload
    def __getitem__(self, key: int) -> tuple[str, bytes]: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[tuple[str, bytes], ...]: ...
    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            value = self.get(key)
            if value is None:
                raise KeyError(key)
            return value
        return super().__getitem__(key)

    def get(self, name: str, default: bytes | None = None) -> bytes | None:
        for header_name, value in reversed(self):
            if header_name == name:
                return value
        return default

    def names(self) -> Sequence[str]:
        return [name for name, _ in self]
