"""Definition requests carry typed settings: named fields, checked as they are decoded.

The settings are MessagePack maps, as the dicts of protocol versions 1-3 were, so a peer of
either kind decodes the other; what was not sent takes the core's default; an unknown field
or a field of the wrong type fails the frame instead of reaching the core.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

import roost
from roost.clock import ManualClock
from roost.errors import InvalidConfig
from roost.protocols.native import messages as m

REQUESTS = msgspec.msgpack.Decoder(m.AnyRequest)


def test_a_version_3_dict_decodes_into_the_typed_settings() -> None:
    wire = msgspec.msgpack.encode([1, "t", {"partitions": 3, "retention_ms": None}, {}])
    request = REQUESTS.decode(wire)
    assert request == m.CreateTopic("t", m.TopicSettings(partitions=3, retention_ms=None))
    assert request.config.durability is msgspec.UNSET  # the core's default will apply


def test_what_was_not_set_is_not_sent() -> None:
    encoded = msgspec.msgpack.encode(m.CreateQueue("q", m.QueueSettings(fifo=True)))
    assert msgspec.msgpack.decode(encoded) == [5, "q", {"fifo": True}]


@pytest.mark.parametrize(
    "payload",
    [
        [1, "t", {"partitions": 3, "journal": "x"}, {}],  # a field nobody may set
        [1, "t", {"partitions": "three"}, {}],
        [7, {"name": "s", "topic": "t", "journal": "../../etc"}],  # assigned by the broker
        [13, {"exchange": "x", "topic": "t", "wieght": 2}],
        [51, "dlq", {"source": "t"}],
    ],
)
def test_an_unknown_or_mistyped_field_fails_the_frame(payload: list[object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        REQUESTS.decode(msgspec.msgpack.encode(payload))


def test_a_value_the_core_refuses_is_invalid_config_not_internal(tmp_path: object) -> None:
    async def main() -> None:
        async with roost.open(str(tmp_path), clock=ManualClock()) as broker:
            refused = [
                m.CreateTopic("t", m.TopicSettings(durability="sometimes")),
                m.CreateTopic("t", policy=m.BacklogPolicy(overflow="explode")),
                m.CreateQueue("q", m.QueueSettings(durability="sometimes")),
                m.CreateSubscription(m.SubscriptionSettings(name="s", topic="q", mode="odd")),
            ]
            await broker.create_queue("q")
            for request in refused:
                with pytest.raises(InvalidConfig):
                    await broker.call(request, m.Described)

    asyncio.run(main())
