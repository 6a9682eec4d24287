"""Values beyond bytes (issue 16, item 5): str as UTF-8, JSON with a serializer (a dict, a
msgspec Struct, a dataclass), the content type recorded, and reading back with ``text``,
``json``, ``decode`` and headers by name — embedded and over the network alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import pytest

import roost
from roost.client.codecs import Headers
from roost.clock import ManualClock
from tests.embedded_support import run, run_over_the_network


class Order(msgspec.Struct):
    id: int
    items: list[str]


@dataclasses.dataclass
class Refund:
    order: int
    reason: str


async def values_round_trip(broker: roost.Client) -> None:
    await broker.create_queue("q")
    await broker.publish("q", "welcome, ada ✓")
    await broker.publish("q", Order(7, ["tea"]), serializer="json")
    broker.serializer = "json"  # the client's default from here on
    await broker.publish("q", {"order": 7, "reason": "late"}, headers={"trace": b"t1"})
    await broker.publish("q", b"\x00raw", headers=[("content-type", b"application/x-raw")])

    text, order, refund, raw = await broker.receive("q", max_messages=4)
    assert text.text() == "welcome, ada ✓"
    assert text.headers["content-type"] == b"text/plain; charset=utf-8"
    assert order.decode(Order) == Order(7, ["tea"])
    assert order.json() == {"id": 7, "items": ["tea"]}
    assert order.headers.get("content-type") == b"application/json"
    assert refund.decode(Refund) == Refund(7, "late")
    assert (refund.headers["trace"], refund.headers.get("missing")) == (b"t1", None)
    assert raw.value == b"\x00raw"
    assert raw.headers == (("content-type", b"application/x-raw"),), "the caller's, kept"
    with pytest.raises(ValueError, match="not a Order"):
        refund.decode(Order)
    with pytest.raises(ValueError, match="not JSON"):
        raw.json()


@pytest.mark.parametrize("where", ["embedded", "network"])
def test_values_round_trip(where: str, tmp_path: Path, clock: ManualClock) -> None:
    if where == "embedded":
        run(str(tmp_path / "data"), clock, values_round_trip)
    else:
        run_over_the_network(tmp_path, values_round_trip)


def test_headers_read_by_name_take_the_last_value_and_stay_a_tuple() -> None:
    headers = Headers((("a", b"1"), ("b", b"2"), ("a", b"3")))
    assert headers["a"] == b"3" and headers.get("a") == b"3"
    assert headers[0] == ("a", b"1") and headers[1:] == (("b", b"2"), ("a", b"3"))
    assert headers == (("a", b"1"), ("b", b"2"), ("a", b"3"))
    assert dict(headers) == {"a": b"3", "b": b"2"}
    with pytest.raises(KeyError):
        headers["c"]
