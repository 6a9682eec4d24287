"""Errors carry their data across a wire: code, message and details rebuild the same error."""

from __future__ import annotations

import msgspec

from roost.errors import (
    NotAuthorised,
    OffsetOutOfRange,
    RecordTooLarge,
    RoostError,
    StaleGeneration,
    UnknownSubscription,
    error_from,
)

SAMPLES: list[RoostError] = [
    UnknownSubscription("orders", "billing"),
    OffsetOutOfRange("orders", 2, 99, 10, 50),
    RecordTooLarge("orders", 2_000_000, 1_048_576),
    StaleGeneration("g", "m-1", 3, 5),
    NotAuthorised("ada", "publish", "topic 'orders'"),
]


def test_an_error_rebuilt_from_its_wire_form_is_the_same_error() -> None:
    for error in SAMPLES:
        wire = msgspec.msgpack.encode([error.code, str(error), error.details()])
        code, message, details = msgspec.msgpack.decode(wire)
        rebuilt = error_from(code, message, details)
        assert type(rebuilt) is type(error)
        assert str(rebuilt) == str(error)
        assert rebuilt.details() == error.details()
    assert error_from(*_wire(SAMPLES[0])).topic == "orders"  # type: ignore[attr-defined]


def test_an_unknown_code_keeps_its_code_and_details_are_only_plain_values() -> None:
    rebuilt = error_from("from_the_future", "a newer broker's error", {"limit": 5, "_x": 1})
    assert (type(rebuilt), rebuilt.code, str(rebuilt)) == (RoostError, "from_the_future",
                                                            "a newer broker's error")  # fmt: skip
    assert rebuilt.limit == 5  # type: ignore[attr-defined]
    assert not hasattr(rebuilt, "_x")
    hostile = error_from("unknown_topic", "m", {"code": "x", "retriable": True, "t": {"a": 1}})
    assert (hostile.code, hostile.retriable, hasattr(hostile, "t")) == ("unknown_topic", False,
                                                                       False)  # fmt: skip


def _wire(error: RoostError) -> tuple[str, str, dict[str, object]]:
    return error.code, str(error), dict(error.details())
