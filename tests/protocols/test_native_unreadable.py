"""A server's REQUEST frame whose payload is MessagePack but no request decodes to
``Unreadable`` (answered ``invalid_request``) and leaves the connection open; everything else
that is malformed still fails the connection."""

from __future__ import annotations

import msgspec
import pytest

from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import NEED_DATA, Frame, Kind, State
from roost.protocols.native.unreadable import Unreadable, field_path
from tests.protocols.native_support import open_pair, raw_payload_frame


def request_frame(payload: object, correlation: int = 1) -> bytes:
    return raw_payload_frame(Kind.REQUEST, correlation, msgspec.msgpack.encode(payload))


def test_a_request_with_a_bad_field_is_unreadable_and_the_next_frame_still_decodes() -> None:
    _, server = open_pair()
    server.receive_data(request_frame([5, "q", {"policy": {"bogus": 1}}], 7))
    server.receive_data(request_frame([2], 8))
    first = server.next_event()
    assert first == Frame(
        Kind.REQUEST,
        7,
        Unreadable(
            "CreateQueue",
            "CreateQueue: Object contains unknown field `bogus` - at `options.policy`",
        ),
    )
    assert server.next_event() == Frame(Kind.REQUEST, 8, m.ListTopics())
    assert server.next_event() is NEED_DATA
    assert server.state is State.OPEN


@pytest.mark.parametrize(
    "payload",
    [
        [99, "no such operation"],
        {"not": "an array"},
        [],
        ["CreateTopic", "t"],
    ],
)
def test_a_payload_that_is_no_request_at_all_still_fails_the_connection(payload: object) -> None:
    _, server = open_pair()
    server.receive_data(request_frame(payload))
    with pytest.raises(ProtocolError):
        server.next_event()
    assert server.state is State.CLOSED


def test_a_client_still_refuses_a_response_it_cannot_read() -> None:
    client, _ = open_pair()
    client.receive_data(raw_payload_frame(Kind.RESPONSE, 1, msgspec.msgpack.encode([2, 5])))
    with pytest.raises(ProtocolError):
        client.next_event()


@pytest.mark.parametrize(
    ("cls", "path", "named"),
    [
        (m.CreateTopic, "$[0]", "operation"),
        (m.CreateTopic, "$[2].partitions", "config.partitions"),
        (m.Publish, "$[2][0][2][1][0]", "messages[0].headers[1][0]"),
        (m.Publish, "$[2][3][4]", "messages[3].deliver_at_ms"),
        (m.Ack, "$[3][0][1]", "receipts[0].offset"),
        (m.Commit, "$[5]", "offsets"),
        (m.Bind, "$[1].headers[...]", "binding.headers[...]"),
        (m.Redrive, "$[9]", "[9]"),  # past the last field: kept as it was
    ],
)
def test_field_paths_use_the_names_a_user_wrote(
    cls: type[msgspec.Struct], path: str, named: str
) -> None:
    assert field_path(cls, path) == named
