"""An error raised in the broker is the same error in the client: class, message and data.

From protocol version 4 a ``FAILURE`` carries the error's details (``RoostError.details``), so
``e.topic`` works over the network as it does embedded; an older client gets the code and
the sentence only, in the three fields it knows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

import roost
from roost.errors import NotAuthorised, RecordTooLarge, UnknownSubscription, UnknownTopic
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, Frame, Kind, encode
from roost.server.access import Grant
from roost.server.native_server import failure_of
from tests.e2e.auth_support import PASSWORD, RawClient, serving


def test_the_client_raises_the_brokers_error_with_its_attributes(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, {"root": PASSWORD}) as served:
            served.host.identities.add_user("ada", PASSWORD)
            served.host.identities.grant("ada", Grant("consume", "topic", "t"))
            url = f"roost://127.0.0.1:{served.port}"
            async with roost.connect(url, username="root", password=PASSWORD) as root:
                await root.create_topic("t", max_record_bytes=1024)
                with pytest.raises(UnknownSubscription) as unknown:
                    await root.receive("t", "nobody")
                assert (unknown.value.topic, unknown.value.subscription) == ("t", "nobody")
                with pytest.raises(RecordTooLarge) as large:
                    await root.publish("t", b"x" * 2048)
                assert (large.value.limit_bytes, large.value.topic) == (1024, "t")
                assert large.value.size_bytes >= 2048
            async with roost.connect(url, username="ada", password=PASSWORD) as ada:
                with pytest.raises(NotAuthorised) as refused:
                    await ada.publish("t", b"hi")
                error = refused.value
                assert (error.user, error.operation, error.resource) == ("ada", "publish",
                                                                         "topic 't'")  # fmt: skip
                assert str(error) == "user 'ada' may not publish on topic 't'"

    asyncio.run(body())


def test_a_version_3_client_gets_the_code_and_sentence_in_the_fields_it_knows(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with serving(tmp_path) as served:  # no users: a v3 client is served
            raw = await RawClient.open(served.port)
            await raw.hello(versions=[3])
            raw.send(Frame(Kind.REQUEST, 7, m.DescribeTopic("missing")))
            answer = await raw.receive()
            assert answer is not None and answer.kind is Kind.FAILURE
            assert answer.message == m.Failure("unknown_topic", "unknown topic 'missing'")
            await raw.aclose()

    asyncio.run(body())


class FailureOfVersion3(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """What a version-3 client decodes a FAILURE as: refuses a fourth field."""

    code: str
    message: str
    retriable: bool = False


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_details_go_only_to_a_connection_that_has_them(version: int) -> None:
    failure = failure_of(UnknownTopic("orders"), version)
    assert failure.details == ({"topic": "orders"} if version >= 4 else {})
    payload = encode(Frame(Kind.FAILURE, 1, failure), version=version)[HEADER.size :]
    if version < 4:
        old = msgspec.msgpack.decode(payload, type=FailureOfVersion3)
        assert (old.code, old.message) == ("unknown_topic", "unknown topic 'orders'")
    else:
        assert msgspec.msgpack.decode(payload)[3] == {"topic": "orders"}
