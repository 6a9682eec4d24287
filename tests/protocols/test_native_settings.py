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


# -- answers ----------------------------------------------------------------------------


def test_every_definition_answer_is_a_wire_struct_and_keeps_the_journal_home(
    tmp_path: object,
) -> None:
    """Each request answered with ``Described`` has its answer struct in ``ANSWERS``, and what
    the server puts there fits it (what the broker keeps for itself, a journal, stays home)."""
    from roost.client.embedded import LocalBackend

    async def main() -> None:
        async with roost.open(str(tmp_path), clock=ManualClock()) as broker:
            backend: LocalBackend = broker._backend  # type: ignore[assignment]
            await broker.create_queue("q")
            await broker.declare_exchange("h", "headers")
            requests = [
                m.CreateTopic("t"), m.ListTopics(), m.DescribeTopic("t"),
                m.CreateQueue("q2"), m.ListSubscriptions(),
                m.CreateSubscription(m.SubscriptionSettings(name="s", topic="t", mode="stream")),
                m.DeclareExchange("x", "direct"), m.ListExchanges(),
                m.Bind(m.Binding(exchange="h", topic="t", headers={"k": b"\\xff", "any": None})),
                m.ListBindings(), m.Unbind(m.Binding(exchange="x", topic="t")),
                m.Stats("q", "q"),
                m.StartRedrive("q.dlq"), m.ListRedrives(), m.CancelRedrive("q.dlq", "none"),
            ]  # fmt: skip
            assert {type(r) for r in requests} == set(m.ANSWERS)
            for asked in requests:
                request = asked
                if isinstance(asked, m.CancelRedrive):  # by the id the start gave
                    [task] = await broker.redrive_tasks("q.dlq")
                    request = m.CancelRedrive("q.dlq", task.id)
                answer = await backend.call(request)
                assert isinstance(answer, m.Described)
                wire = msgspec.msgpack.decode(msgspec.msgpack.encode(answer))[1]
                msgspec.convert(wire, m.answer_type(request, wire))  # fits its struct
                assert "journal" not in repr(wire), request
            [binding] = await broker.list_bindings("h")
            assert binding.headers == {"k": b"\\xff", "any": None}

    asyncio.run(main())


def test_a_newer_brokers_extra_answer_fields_are_ignored() -> None:
    from roost.client.api import _answered
    from roost.core.routing import ExchangeSpec

    wire = [{"name": "x", "kind": "direct", "alternate": None, "added_later": 1}]
    assert _answered(m.ListExchanges(), wire, list[ExchangeSpec]) == [ExchangeSpec("x", "direct")]
