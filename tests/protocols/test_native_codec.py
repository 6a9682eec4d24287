"""The native codec as a peer sees it: bytes in, frames out; frames in, bytes out.

What is pinned here:

- The handshake both ways (WELCOME opens, FAILURE closes) and ``negotiate``.
- Pipelining: many requests before any answer, answers in any order, correlation ids kept.
- PING/PONG from either side; GOODBYE closes, and nothing is sent or taken after it.
- The bytes of one frame of each kind, so any change to the layout, the kind numbers or the
  operation tags shows up here (a second table pins every tag).
- Limits: a frame over ``max_frame_bytes`` is refused on send and on receive (as soon as its
  header arrives); the receive buffer never grows past ``max_frame_bytes + HEADER_SIZE``.
- An empty chunk marks the connection closed; after a receive error the codec keeps raising
  the same ``ProtocolError``.
- Version 4's authentication exchange, and fields sent only in the versions that have them.
- Known bugs, each an ``xfail(strict=True)`` naming the line to fix.
"""

from __future__ import annotations

import msgspec
import pytest

from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    HEADER_SIZE,
    KIND_ADDED_IN,
    MAX_HANDSHAKE_FRAME_BYTES,
    NEED_DATA,
    VERSIONS,
    Frame,
    Kind,
    NativeCodec,
    State,
    encode,
    encode_parts,
    negotiate,
)
from tests.protocols.native_support import (
    REQUESTS,
    RESPONSES,
    authenticating_pair,
    challenged_pair,
    drain,
    hello,
    open_pair,
    raw_frame,
    raw_payload_frame,
    sample,
)

# -- handshake ----------------------------------------------------------------------------


def test_hello_then_welcome_opens_both_sides() -> None:
    client, server = NativeCodec("client"), NativeCodec("server")
    assert client.state is server.state is State.HANDSHAKE

    server.receive_data(client.send(Frame(Kind.HELLO, 0, m.Hello(versions=[1], client="py"))))
    (got_hello,) = drain(server)
    assert got_hello == Frame(Kind.HELLO, 0, m.Hello(versions=[1], client="py"))
    assert client.state is server.state is State.HANDSHAKE

    version = negotiate(got_hello.message)  # type: ignore[arg-type]
    assert version == 1
    welcome = m.Welcome(version=version, server="roost", max_frame_bytes=1024, heartbeat_ms=5000)
    client.receive_data(server.send(Frame(Kind.WELCOME, 0, welcome)))
    assert server.state is State.OPEN
    assert drain(client) == [Frame(Kind.WELCOME, 0, welcome)]
    assert client.state is State.OPEN


def test_hello_then_failure_closes_both_sides() -> None:
    client, server = NativeCodec("client"), NativeCodec("server")
    server.receive_data(client.send(Frame(Kind.HELLO, 0, m.Hello(versions=[99]))))
    (got_hello,) = drain(server)
    assert negotiate(got_hello.message) is None  # type: ignore[arg-type]

    failure = m.Failure(code="protocol_error", message="no common version")
    client.receive_data(server.send(Frame(Kind.FAILURE, 0, failure)))
    assert server.state is State.CLOSED
    assert drain(client) == [Frame(Kind.FAILURE, 0, failure)]
    assert client.state is State.CLOSED

    with pytest.raises(ProtocolError):
        client.send(sample(Kind.REQUEST, 1))
    with pytest.raises(ProtocolError):
        server.send(sample(Kind.RESPONSE, 1))


@pytest.mark.parametrize(
    ("versions", "chosen"),
    [
        ([1], 1),
        ([2, 1], 2),
        ([1, 2, 3], 3),
        ([1, 2, 4], 4),
        ([1, 2, 8], 8),
        ([1, 2, 9], 2),
        ([1, 2, 5], 5),
        ([1, 2, 6], 6),
        ([1, 2, 7], 7),
        ([9, 8, 1, 0], 8),
        ([10, 9, 1, 0], 1),
        ([2], 2),
        ([3], 3),
        ([4, 3], 4),
        ([], None),
        ([9, 10], None),
        ([0], None),
        ([-1], None),
    ],
)
def test_negotiate_picks_the_newest_common_version(versions: list[int], chosen: int | None) -> None:
    assert VERSIONS == (1, 2, 3, 4, 5, 6, 7, 8)
    assert negotiate(m.Hello(versions=versions)) == chosen


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("client", m.Peek("jobs", "jobs")),
        ("client", m.Purge("jobs", "jobs")),
        ("server", m.Peeked([])),
        ("server", m.Purged(3)),
    ],
)
def test_peek_and_purge_need_version_7_both_ways(role: str, message: msgspec.Struct) -> None:
    """Their request tags are unknown to an older peer: neither side sends or takes them on a
    connection of version 6, and the sender's mistake does not fail its own connection."""
    kind = Kind.REQUEST if role == "client" else Kind.RESPONSE
    client, server = open_pair(version=6)
    sender, receiver = (client, server) if role == "client" else (server, client)
    name = type(message).__name__
    with pytest.raises(ProtocolError, match=f"{name} needs protocol version 7"):
        sender.send(Frame(kind, 5, message))
    assert sender.state is State.OPEN
    receiver.receive_data(raw_frame(kind, 5, message))
    with pytest.raises(ProtocolError, match="needs protocol version 7; the connection speaks 6"):
        receiver.next_event()
    assert receiver.state is State.CLOSED

    client, server = open_pair(version=7)
    sender, receiver = (client, server) if role == "client" else (server, client)
    receiver.receive_data(sender.send(Frame(kind, 5, message)))
    assert receiver.next_event() == Frame(kind, 5, message)


@pytest.mark.parametrize("kind", [Kind.BLOCKED, Kind.UNBLOCKED])
def test_blocked_and_unblocked_need_version_5_both_ways(kind: Kind) -> None:
    client, server = open_pair(version=4)
    with pytest.raises(ProtocolError, match=f"{kind.name} needs protocol version 5"):
        server.send(sample(kind))
    assert server.state is State.OPEN  # our own mistake: the connection goes on
    client.receive_data(raw_frame(kind, 0, sample(kind).message))
    with pytest.raises(ProtocolError, match="needs protocol version 5; the connection speaks 4"):
        client.next_event()
    assert client.state is State.CLOSED

    client, server = open_pair(version=5)
    client.receive_data(server.send(sample(kind)))
    assert drain(client) == [sample(kind)]
    with pytest.raises(ProtocolError, match="client may not send"):
        client.send(sample(kind))


def test_requests_before_the_welcome_are_refused() -> None:
    client, server = NativeCodec("client"), NativeCodec("server")
    hello(client, server)
    with pytest.raises(ProtocolError, match="handshake"):
        client.send(sample(Kind.REQUEST, 1))
    server.receive_data(raw_frame(Kind.REQUEST, 1, m.ListTopics()))
    with pytest.raises(ProtocolError, match="handshake"):
        server.next_event()


# -- version 4: authentication -------------------------------------------------------------


def test_a_welcome_that_requires_auth_starts_a_strict_exchange_then_opens() -> None:
    """AUTH, AUTH_CHALLENGE, AUTH, AUTH_OK (a SCRAM exchange): each side's turn in order, then
    requests flow."""
    client, server = authenticating_pair()
    assert client.state is server.state is State.AUTHENTICATING
    assert client.version == server.version == 4
    steps = [
        ("client", Frame(Kind.AUTH, 0, m.Auth("SCRAM-SHA-256", b"n,,n=ada,r=abc"))),
        ("server", Frame(Kind.AUTH_CHALLENGE, 0, m.AuthChallenge(b"r=abcdef,s=c2FsdA==,i=4096"))),
        ("client", Frame(Kind.AUTH, 0, m.Auth("SCRAM-SHA-256", b"c=biws,r=abcdef,p=cHJvb2Y="))),
        ("server", Frame(Kind.AUTH_OK, 0, m.AuthOk("ada", b"v=c2lnbmF0dXJl"))),
    ]
    for sender, frame in steps:
        sending, receiving = (client, server) if sender == "client" else (server, client)
        receiving.receive_data(sending.send(frame))
        assert drain(receiving) == [frame]
    assert client.state is server.state is State.OPEN
    server.receive_data(client.send(Frame(Kind.REQUEST, 1, m.ListTopics())))
    assert drain(server) == [Frame(Kind.REQUEST, 1, m.ListTopics())]


@pytest.mark.parametrize("kind", [Kind.REQUEST, Kind.CREDIT, Kind.PING])
def test_requests_before_authentication_completes_are_refused(kind: Kind) -> None:
    client, server = authenticating_pair()
    with pytest.raises(ProtocolError, match="authenticat"):
        client.send(sample(kind, 1))
    assert client.state is State.AUTHENTICATING  # our own refused send changes nothing
    server.receive_data(raw_frame(kind, 1, sample(kind).message))
    with pytest.raises(ProtocolError, match=kind.name):
        server.next_event()
    assert server.state is State.CLOSED


def test_a_second_auth_before_the_answer_is_refused() -> None:
    client, server = challenged_pair()
    with pytest.raises(ProtocolError):
        client.send(sample(Kind.AUTH))
    server.receive_data(raw_frame(Kind.AUTH, 0, sample(Kind.AUTH).message))
    with pytest.raises(ProtocolError):
        server.next_event()


def test_a_failure_during_authentication_closes_both_sides() -> None:
    client, server = challenged_pair()
    failure = m.Failure("not_authenticated", "authentication failed: wrong user name or password")
    client.receive_data(server.send(Frame(Kind.FAILURE, 0, failure)))
    assert drain(client) == [Frame(Kind.FAILURE, 0, failure)]
    assert client.state is server.state is State.CLOSED


# -- fields per version -------------------------------------------------------------------


def test_a_welcome_is_sent_with_the_fields_of_its_own_version() -> None:
    """A version-3 client's struct has four fields and forbids more: a WELCOME choosing 3 must
    be four fields long, or that client could not read it."""

    class WelcomeV3(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
        version: int
        server: str
        max_frame_bytes: int
        heartbeat_ms: int

    v3 = encode(Frame(Kind.WELCOME, 0, m.Welcome(3, "roost", 1024, 5000)))
    assert msgspec.msgpack.decode(v3[HEADER_SIZE:], type=WelcomeV3) == WelcomeV3(
        3, "roost", 1024, 5000
    )
    with pytest.raises(msgspec.ValidationError, match="at most length 4"):  # why it matters
        msgspec.msgpack.decode(
            msgspec.msgpack.encode(m.Welcome(3, "roost", 1024, 5000)), type=WelcomeV3
        )
    client, server = NativeCodec("client"), NativeCodec("server")
    hello(client, server)
    assert server.send(Frame(Kind.WELCOME, 0, m.Welcome(3, "roost", 1024, 5000))) == v3
    client.receive_data(v3)  # and a version-4 client reads the short one, with defaults
    assert drain(client) == [Frame(Kind.WELCOME, 0, m.Welcome(3, "roost", 1024, 5000))]
    assert client.state is State.OPEN


def test_a_welcome_cannot_require_auth_in_a_version_without_it() -> None:
    client, server = NativeCodec("client"), NativeCodec("server")
    hello(client, server)
    bad = m.Welcome(3, "roost", 1024, 5000, auth_required=True, mechanisms=["TOKEN"])
    with pytest.raises(ProtocolError, match="auth_required needs protocol version 4"):
        server.send(Frame(Kind.WELCOME, 0, bad))
    assert server.state is State.HANDSHAKE
    client.receive_data(raw_frame(Kind.WELCOME, 0, bad))  # from a broken server
    with pytest.raises(ProtocolError, match="version 4"):
        client.next_event()
    assert client.state is State.CLOSED


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_an_ack_carries_a_false_answer_only_from_version_3(version: int) -> None:
    client, server = NativeCodec("client"), NativeCodec("server")
    hello(client, server)
    client.receive_data(server.send(Frame(Kind.WELCOME, 0, m.Welcome(version, "r", 1 << 20, 0))))
    drain(client)
    ack = m.Ack("t", "s", [], answer=True)
    wire = client.send(Frame(Kind.REQUEST, 1, ack))
    # ``answer`` at its default is as good as absent: never sent, so any version decodes it.
    assert len(msgspec.msgpack.decode(wire[HEADER_SIZE:])) == 4
    server.receive_data(wire)
    assert drain(server) == [Frame(Kind.REQUEST, 1, ack)]
    unanswered = Frame(Kind.REQUEST, 2, m.Ack("t", "s", [], answer=False))
    if version >= 3:
        wire = client.send(unanswered)
        assert len(msgspec.msgpack.decode(wire[HEADER_SIZE:])) == 5
        server.receive_data(wire)
        assert drain(server) == [unanswered]
    else:
        with pytest.raises(ProtocolError, match="answer needs protocol version 3"):
            client.send(unanswered)


# -- pipelining ---------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_any_order_by_correlation() -> None:
    client, server = open_pair()
    requests = {
        11: m.ListTopics(),
        12: m.DescribeTopic(name="a"),
        13: m.Publish(topic="a", messages=[m.Out(value=b"x")]),
        2**32 - 1: m.DeleteTopic(name="b"),
    }
    wire = b"".join(client.send(Frame(Kind.REQUEST, c, r)) for c, r in requests.items())
    server.receive_data(wire)  # all of them before any answer
    got = drain(server)
    assert [(f.kind, f.correlation, f.message) for f in got] == [
        (Kind.REQUEST, c, r) for c, r in requests.items()
    ]

    answers = [
        Frame(Kind.RESPONSE, 13, m.PublishedAt(runs=[("a", 0, 0, 1)])),
        Frame(Kind.FAILURE, 2**32 - 1, m.Failure(code="unknown_topic", message="b")),
        Frame(Kind.RESPONSE, 11, m.Names(names=["a"])),
        Frame(Kind.RESPONSE, 12, m.Described(value={"name": "a", "partitions": 1})),
    ]
    for answer in answers:  # one at a time, out of order
        client.receive_data(server.send(answer))
    assert drain(client) == answers
    assert {a.correlation for a in answers} == set(requests)


def test_many_frames_in_one_chunk_and_split_across_chunks() -> None:
    client, server = open_pair()
    frames = [Frame(Kind.REQUEST, i, m.DescribeTopic(name=f"t{i}")) for i in range(50)]
    wire = b"".join(client.send(f) for f in frames)
    got = []
    for start in range(0, len(wire), 7):  # chunks that never line up with frames
        server.receive_data(wire[start : start + 7])
        got += drain(server)
    assert got == frames


# -- heartbeats and goodbye ---------------------------------------------------------------


@pytest.mark.parametrize("pinger", ["client", "server"])
def test_ping_is_answered_with_pong_either_way(pinger: str) -> None:
    client, server = open_pair()
    a, b = (client, server) if pinger == "client" else (server, client)
    b.receive_data(a.send(Frame(Kind.PING, 42, m.Empty())))
    assert drain(b) == [Frame(Kind.PING, 42, m.Empty())]
    a.receive_data(b.send(Frame(Kind.PONG, 42, m.Empty())))
    assert drain(a) == [Frame(Kind.PONG, 42, m.Empty())]
    assert client.state is server.state is State.OPEN


@pytest.mark.parametrize("leaver", ["client", "server"])
def test_goodbye_closes_and_nothing_after_it_is_taken(leaver: str) -> None:
    client, server = open_pair()
    a, b = (client, server) if leaver == "client" else (server, client)
    b.receive_data(a.send(Frame(Kind.GOODBYE, 0, m.Empty())))
    assert a.state is State.CLOSED
    assert drain(b) == [Frame(Kind.GOODBYE, 0, m.Empty())]
    assert b.state is State.CLOSED

    for codec in (a, b):  # neither side may send anything more, not even another GOODBYE
        for kind in (Kind.PING, Kind.PONG, Kind.GOODBYE):
            with pytest.raises(ProtocolError, match="closed"):
                codec.send(sample(kind))

    b.receive_data(raw_frame(Kind.PING, 1, m.Empty()))  # a peer that talks on
    with pytest.raises(ProtocolError, match="closed") as refused:
        b.next_event()
    with pytest.raises(ProtocolError) as again:
        b.next_event()
    assert again.value is refused.value


# -- golden bytes -------------------------------------------------------------------------

#: (sender, frame, its bytes) for one frame of each kind. Computed once from this codec: a
#: failure here means the wire format changed, which breaks every deployed peer.
GOLDEN: list[tuple[str, Frame, str]] = [
    (
        "client",
        Frame(Kind.HELLO, 0, m.Hello(versions=[1], client="py")),
        "0b000000 01 00000000 92 9101 a27079",
    ),
    (
        "server",
        Frame(Kind.WELCOME, 0, m.Welcome(1, "roost", max_frame_bytes=1024, heartbeat_ms=5000)),
        "13000000 02 00000000 94 01 a5726f6f7374 cd0400 cd1388",
    ),
    (
        "client",
        Frame(
            Kind.REQUEST,
            7,
            m.Publish(topic="t", messages=[m.Out(value=b"hi", key=b"k", headers=[("h", b"v")])]),
        ),
        # [20 (Publish), "t", [[b"hi", b"k", [["h", b"v"]], nil x4]], nil, nil]
        "1f000000 03 07000000 95 14 a174 91 97 c4026869 c4016b 91 92 a168 c40176 c0c0c0c0 c0c0",
    ),
    (
        "server",
        Frame(Kind.RESPONSE, 7, m.PublishedAt(runs=[("t", 0, 5, 1)])),
        # [20 (PublishedAt), [["t", partition 0, first offset 5, count 1]]]
        "0e000000 04 07000000 92 14 91 94 a174 00 05 01",
    ),
    (
        "server",
        Frame(Kind.FAILURE, 8, m.Failure(code="unknown_topic", message="no", retriable=True)),
        "18000000 05 08000000 93 ad756e6b6e6f776e5f746f706963 a26e6f c3",
    ),
    (
        "server",
        Frame(
            Kind.DELIVERIES,
            9,
            m.Deliveries(
                messages=[
                    m.Delivered(0, 3, 1000, key=None, value=b"x", headers=[], delivery_count=1)
                ]
            ),
        ),
        "13000000 06 09000000 91 91 97 00 03 cd03e8 c0 c40178 90 01",
    ),
    ("client", Frame(Kind.CREDIT, 9, m.Credit(messages=16)), "07000000 07 09000000 91 10"),
    ("client", Frame(Kind.PING, 1, m.Empty()), "06000000 08 01000000 90"),
    ("server", Frame(Kind.PONG, 1, m.Empty()), "06000000 09 01000000 90"),
    ("client", Frame(Kind.GOODBYE, 0, m.Empty()), "06000000 0a 00000000 90"),
    (
        "server",
        Frame(Kind.WELCOME, 0, m.Welcome(4, "roost", 1024, 5000, True, ["SCRAM-SHA-256", "TOKEN"])),
        # version 4: [4, "roost", 1024, 5000, true, ["SCRAM-SHA-256", "TOKEN"]]
        "29000000 02 00000000 96 04 a5726f6f7374 cd0400 cd1388 c3"
        " 92 ad534352414d2d5348412d323536 a5544f4b454e",
    ),
    (
        "client",
        Frame(Kind.AUTH, 0, m.Auth("TOKEN", b"rst_1_x")),
        "15000000 0b 00000000 92 a5544f4b454e c4077273745f315f78",
    ),
    (
        "server",
        Frame(Kind.AUTH_CHALLENGE, 0, m.AuthChallenge(b"r=a,s=b,i=4096")),
        "16000000 0c 00000000 91 c40e723d612c733d622c693d34303936",
    ),
    (
        "server",
        Frame(Kind.AUTH_OK, 0, m.AuthOk("ada", b"v=x")),
        "0f000000 0d 00000000 92 a3616461 c403763d78",
    ),
    # version 5: ["memory"], then an empty array
    (
        "server",
        Frame(Kind.BLOCKED, 0, m.Blocked("memory")),
        "0d000000 0e 00000000 91 a66d656d6f7279",
    ),
    ("server", Frame(Kind.UNBLOCKED, 0, m.Empty()), "06000000 0f 00000000 90"),
]


def test_golden_covers_every_kind() -> None:
    assert set(frame.kind for _, frame, _ in GOLDEN) == set(Kind)
    assert {k.name: int(k) for k in Kind} == {
        "HELLO": 1, "WELCOME": 2, "REQUEST": 3, "RESPONSE": 4, "FAILURE": 5,
        "DELIVERIES": 6, "CREDIT": 7, "PING": 8, "PONG": 9, "GOODBYE": 10,
        "AUTH": 11, "AUTH_CHALLENGE": 12, "AUTH_OK": 13, "BLOCKED": 14, "UNBLOCKED": 15,
    }  # fmt: skip
    assert HEADER.format == "<IBI"
    assert HEADER_SIZE == 9


@pytest.mark.parametrize(
    ("sender", "frame", "wire_hex"), GOLDEN, ids=lambda v: getattr(v, "name", None)
)
def test_golden_bytes(sender: str, frame: Frame, wire_hex: str) -> None:
    wire = bytes.fromhex(wire_hex)
    if frame.kind is Kind.HELLO:
        client, server = NativeCodec("client"), NativeCodec("server")
    elif frame.kind is Kind.WELCOME:
        client, server = NativeCodec("client"), NativeCodec("server")
        hello(client, server)
    elif frame.kind is Kind.AUTH:
        client, server = authenticating_pair()
    elif frame.kind in (Kind.AUTH_CHALLENGE, Kind.AUTH_OK):
        client, server = challenged_pair()
    elif frame.kind in KIND_ADDED_IN:
        client, server = open_pair(version=KIND_ADDED_IN[frame.kind])
    else:
        client, server = open_pair()
    sending, receiving = (client, server) if sender == "client" else (server, client)

    assert sending.send(frame) == wire
    assert encode(frame) == wire  # the same bytes without a codec, in any state
    header, payload = encode_parts(frame)  # the same, as the header and the payload
    assert (header, payload) == (wire[:HEADER_SIZE], wire[HEADER_SIZE:])
    receiving.receive_data(wire)
    assert drain(receiving) == [frame]


def test_operation_tags_are_the_wire_contract() -> None:
    """Never renumber, only add: a change here breaks every deployed peer."""
    requests = {cls.__name__: cls.__struct_config__.tag for cls in REQUESTS}
    responses = {cls.__name__: cls.__struct_config__.tag for cls in RESPONSES}
    assert requests == {
        "CreateTopic": 1, "ListTopics": 2, "DescribeTopic": 3, "DeleteTopic": 4,
        "CreateQueue": 5, "DeleteQueue": 6, "CreateSubscription": 7, "ListSubscriptions": 8,
        "DeleteSubscription": 9, "DeclareExchange": 10, "DeleteExchange": 11,
        "ListExchanges": 12, "Bind": 13, "Unbind": 14, "ListBindings": 15, "Publish": 20,
        "PublishToExchange": 21, "Receive": 30, "Ack": 31, "Nack": 32, "Extend": 33,
        "Subscribe": 34, "Unsubscribe": 35, "Join": 40, "Heartbeat": 41, "Leave": 42,
        "Fetch": 43, "Commit": 44, "Seek": 45, "SeekToTime": 46, "FetchBatches": 47,
        "Stats": 50, "Redrive": 51, "Peek": 36, "Purge": 37, "StartRedrive": 52,
        "ListRedrives": 53, "CancelRedrive": 54,
    }  # fmt: skip
    assert responses == {
        "Done": 0, "Described": 1, "Names": 2, "PublishedAt": 20, "Messages": 30,
        "Refused": 31, "Membership": 40, "Records": 43, "Position": 45, "Batches": 47,
        "Moved": 51, "Peeked": 36, "Purged": 37,
    }  # fmt: skip
    # every struct is in its union, or it could be sent but never decoded
    assert set(REQUESTS) == set(m.Request.__subclasses__())
    assert set(RESPONSES) == set(m.Response.__subclasses__())


# -- limits -------------------------------------------------------------------------------

LIMIT = 64


def test_a_frame_at_the_limit_passes_and_one_byte_more_is_refused_on_send() -> None:
    client, server = open_pair(max_frame_bytes=LIMIT)
    # Names(["x" * n]): 5 header bytes after the length + [2, [str n]] -> 5 + 3 + 2 + n (n < 256)
    fits = Frame(Kind.RESPONSE, 1, m.Names(names=["x" * (LIMIT - 10)]))
    wire = server.send(fits)
    assert len(wire) == 4 + LIMIT
    client.receive_data(wire)
    assert drain(client) == [fits]

    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b") as refused:
        server.send(Frame(Kind.RESPONSE, 2, m.Names(names=["x" * (LIMIT - 9)])))
    assert str(LIMIT + 1) in refused.value.problem
    assert server.state is State.OPEN  # our own mistake does not fail the connection


def test_a_header_announcing_too_many_bytes_fails_before_the_payload_arrives() -> None:
    _, server = open_pair(max_frame_bytes=LIMIT)
    server.receive_data(HEADER.pack(LIMIT + 1, Kind.REQUEST, 1))  # the header alone
    with pytest.raises(ProtocolError, match=rf"\b{LIMIT}\b"):
        server.next_event()
    assert server.state is State.CLOSED


def test_a_header_announcing_exactly_the_limit_waits_for_its_payload() -> None:
    _, server = open_pair(max_frame_bytes=LIMIT)
    name = "x" * (LIMIT - 9)  # payload [3, str8 n]: 2 + 2 + n bytes, after 5 header bytes
    frame = raw_frame(Kind.REQUEST, 1, m.DescribeTopic(name=name))
    assert HEADER.unpack(frame[:HEADER_SIZE])[0] == LIMIT
    server.receive_data(frame[:-1])
    assert server.next_event() is NEED_DATA
    server.receive_data(frame[-1:])
    assert drain(server) == [Frame(Kind.REQUEST, 1, m.DescribeTopic(name=name))]


@pytest.mark.parametrize("length", [0, 1, 4])
def test_a_length_too_short_to_hold_the_header_is_refused(length: int) -> None:
    _, server = open_pair()
    server.receive_data(HEADER.pack(length, Kind.PING, 0))
    with pytest.raises(ProtocolError, match=f"frame length {length}"):
        server.next_event()


@pytest.mark.parametrize("pair", ["fresh", "authenticating"])
def test_frames_before_the_connection_opens_have_a_small_limit(pair: str) -> None:
    """An unauthenticated peer cannot make the codec wait for a 16 MiB frame."""
    server = NativeCodec("server") if pair == "fresh" else authenticating_pair()[1]
    server.receive_data(HEADER.pack(MAX_HANDSHAKE_FRAME_BYTES + 1, Kind.HELLO, 0))
    with pytest.raises(ProtocolError, match=rf"limit {MAX_HANDSHAKE_FRAME_BYTES}\b"):
        server.next_event()
    _, opened = open_pair()  # the connection's own limit once open
    opened.receive_data(HEADER.pack(MAX_HANDSHAKE_FRAME_BYTES + 1, Kind.REQUEST, 1))
    assert opened.next_event() is NEED_DATA


def test_the_receive_buffer_is_bounded_by_the_frame_limit() -> None:
    """A peer that never finishes a frame, to a caller that does not drain: refused at the
    first chunk after more than ``max_frame_bytes + HEADER_SIZE`` bytes are held."""
    _, server = open_pair(max_frame_bytes=LIMIT)
    server.receive_data(HEADER.pack(LIMIT, Kind.REQUEST, 1))
    fed = HEADER_SIZE
    with pytest.raises(ProtocolError, match="buffered") as refused:
        while True:
            server.receive_data(b"\xc0")
            fed += 1
            assert fed <= LIMIT + HEADER_SIZE + 1
    assert fed == LIMIT + HEADER_SIZE + 1
    with pytest.raises(ProtocolError) as again:
        server.next_event()
    assert again.value is refused.value


def test_the_default_limit() -> None:
    assert NativeCodec("server").max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024


# -- closing and failing ------------------------------------------------------------------


@pytest.mark.parametrize("state", ["handshake", "open"])
def test_an_empty_chunk_marks_the_connection_closed(state: str) -> None:
    if state == "handshake":
        server = NativeCodec("server")
    else:
        _, server = open_pair()
    server.receive_data(b"")
    assert server.state is State.CLOSED
    assert server.next_event() is NEED_DATA
    with pytest.raises(ProtocolError, match="closed"):
        server.send(sample(Kind.PING))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(raw_payload_frame(99, 1, b"\x90"), id="unknown-kind"),
        pytest.param(raw_payload_frame(Kind.REQUEST, 1, b"\x91\x7f"), id="unknown-operation"),
        pytest.param(raw_payload_frame(Kind.REQUEST, 1, b"\xc1"), id="not-msgpack"),
        pytest.param(raw_payload_frame(Kind.PING, 1, b"\x91\x01"), id="extra-field"),
        pytest.param(raw_frame(Kind.RESPONSE, 1, m.Done()), id="out-of-turn"),
        pytest.param(HEADER.pack(2**32 - 1, Kind.REQUEST, 1), id="too-long"),
    ],
)
def test_after_a_receive_error_the_codec_keeps_raising_it(bad: bytes) -> None:
    client, server = open_pair()
    server.receive_data(bad)
    with pytest.raises(ProtocolError) as first:
        server.next_event()
    assert server.state is State.CLOSED
    for _ in range(3):
        with pytest.raises(ProtocolError) as again:
            server.next_event()
        assert again.value is first.value
    with pytest.raises(ProtocolError) as fed:  # a good frame does not revive it
        server.receive_data(client.send(sample(Kind.PING)))
    assert fed.value is first.value


# -- known bugs ---------------------------------------------------------------------------


def test_deeply_nested_payload_is_a_protocol_error() -> None:
    _, server = open_pair()
    # CreateTopic(name="t", config={"a": {"a": ... nil}}): 30 KB, far under the 16 MiB limit
    payload = b"\x93\x01\xa1t" + b"\x81\xa1a" * 10_000 + b"\xc0"
    server.receive_data(raw_payload_frame(Kind.REQUEST, 1, payload))
    with pytest.raises(ProtocolError):
        server.next_event()
    assert server.state is State.CLOSED


@pytest.mark.parametrize("case", ["oversized-hello", "goodbye-wrong-payload", "welcome-too-big"])
def test_a_refused_send_leaves_the_state_alone(case: str) -> None:
    if case == "oversized-hello":
        codec = NativeCodec("client", max_frame_bytes=LIMIT)
        with pytest.raises(ProtocolError, match="limit"):
            codec.send(Frame(Kind.HELLO, 0, m.Hello(versions=[1], client="x" * LIMIT)))
        codec.send(Frame(Kind.HELLO, 0, m.Hello(versions=[1])))  # the retry must be allowed
    elif case == "goodbye-wrong-payload":
        codec, _ = open_pair()
        with pytest.raises(ProtocolError, match="cannot carry"):
            codec.send(Frame(Kind.GOODBYE, 0, m.Done()))
        assert codec.state is State.OPEN
    else:
        client, codec = NativeCodec("client"), NativeCodec("server", max_frame_bytes=LIMIT)
        hello(client, codec)
        with pytest.raises(ProtocolError, match="limit"):
            codec.send(Frame(Kind.WELCOME, 0, m.Welcome(1, "x" * LIMIT, LIMIT, 0)))
        assert codec.state is State.HANDSHAKE  # nothing was sent, nothing was agreed


def test_whole_frames_arriving_in_one_chunk_are_never_refused() -> None:
    client, server = open_pair(max_frame_bytes=LIMIT)
    frames = [Frame(Kind.REQUEST, i, m.DescribeTopic(name="x" * 40)) for i in range(3)]
    wire = b"".join(client.send(f) for f in frames)
    assert all(len(client.send(f)) <= 4 + LIMIT for f in frames)
    assert len(wire) > LIMIT + HEADER_SIZE
    server.receive_data(wire)
    assert drain(server) == frames


def test_frames_received_before_the_peer_closed_are_still_delivered() -> None:
    client, server = open_pair()
    request = Frame(Kind.REQUEST, 1, m.ListTopics())
    server.receive_data(client.send(request) + client.send(sample(Kind.GOODBYE)))
    server.receive_data(b"")
    assert drain(server) == [request, sample(Kind.GOODBYE)]


@pytest.mark.parametrize("correlation", [-1, 2**32])
def test_a_correlation_outside_u32_is_refused_with_protocol_error(correlation: int) -> None:
    client, _ = open_pair()
    with pytest.raises(ProtocolError):
        client.send(Frame(Kind.PING, correlation, m.Empty()))


def test_send_parts_is_send_unjoined_and_takes_the_same_turn() -> None:
    value = bytes(range(256)) * 1024  # 256 KiB
    delivery = m.Delivered(0, 7, 1_700_000_000_000, None, value, [("h", b"v")], 1)
    frame = Frame(Kind.DELIVERIES, 3, m.Deliveries([delivery, delivery]))
    _, joined = open_pair()
    _, parted = open_pair()
    wire = joined.send(frame)
    header, payload = parted.send_parts(frame)
    assert header + payload == wire and len(header) == HEADER_SIZE
    assert parted.state is joined.state
    client, _ = open_pair()
    client.receive_data(header + payload)
    assert drain(client) == [frame]
    with pytest.raises(ProtocolError):  # the client never sends deliveries: refused, as send
        client.send_parts(frame)


@pytest.mark.parametrize(
    ("role", "first_bytes", "said"),
    [
        ("client", b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", "an HTTP server"),
        ("client", b"\x15\x03\x03\x00\x02\x02\x46", "speaks TLS: connect with roosts://"),
        ("server", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "sent an HTTP request"),
        ("server", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), "TLS handshake"),
    ],
)
def test_a_peer_of_another_protocol_is_named(role: str, first_bytes: bytes, said: str) -> None:
    """The usual mistakes: a client pointed at the admin port or at a TLS listener without
    TLS; an HTTP client or a TLS client at the native port. Said as such, not as a frame
    length of 1347703880."""
    codec = NativeCodec(role)  # type: ignore[arg-type]
    if role == "client":
        codec.send(Frame(Kind.HELLO, 0, m.Hello(versions=list(VERSIONS))))
    codec.receive_data(first_bytes)
    codec.receive_data(b"")  # and it closed (a TLS server's alert is shorter than a header)
    with pytest.raises(ProtocolError, match=said):
        codec.next_event()
