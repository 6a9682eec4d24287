"""Fuzz targets for the native protocol codec: what a server reads from clients, what it
reads in the handshake, and what a client reads from a server (frames, then the answers and
stored batches inside them).

Contract: bytes in any chunking give frames, ``NEED_DATA`` or ``ProtocolError`` (after which
the codec keeps raising that same error); a decoded frame encodes back to bytes that decode
to the same frame. A client's reading of an answer or of stored batches raises only
``ProtocolError``.
"""

from __future__ import annotations

import contextlib

import msgspec

from roost.client.api import _answered
from roost.client.batches import decode_fetched
from roost.core.model import SubscriptionSpec
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.core.stats import StreamStats, SubscriptionStats
from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import NEED_DATA, VERSIONS, Frame, Kind, NativeCodec, encode
from roost.protocols.native.unreadable import Unreadable
from roost.receipt import Receipt
from roost.storage import TopicInfo
from roost.storage.batch import Record
from roost.storage.batch import encode as encode_batch
from tests.fuzz.target import Target

WELCOME = {
    v: m.Welcome(version=v, server="roost", max_frame_bytes=1 << 20, heartbeat_ms=5000)
    for v in VERSIONS
}
WELCOME_AUTH = m.Welcome(4, "roost", 1 << 20, 5000, True, ["SCRAM-SHA-256", "TOKEN"])
LIMIT = 1 << 20


def open_codecs(version: int) -> tuple[NativeCodec, NativeCodec]:
    """A client and a server codec past a handshake that chose ``version``."""
    client, server = NativeCodec("client", LIMIT), NativeCodec("server", LIMIT)
    server.receive_data(client.send(Frame(Kind.HELLO, 0, m.Hello(list(VERSIONS)))))
    assert server.next_event() is not NEED_DATA
    client.receive_data(server.send(Frame(Kind.WELCOME, 0, WELCOME[version])))
    assert client.next_event() is not NEED_DATA
    return client, server


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def read_all(codec: NativeCodec, data: bytes, size: int) -> list[Frame]:
    """Feed ``data`` in ``size``-byte chunks, then the end of the stream; every frame decoded
    until the codec refuses, checking that a refusal sticks."""
    frames: list[Frame] = []
    try:
        for chunk in [*chunks(data, size), b""]:
            codec.receive_data(chunk)
            while (event := codec.next_event()) is not NEED_DATA:
                frames.append(event)
    except ProtocolError as error:
        assert codec.failed
        try:
            codec.next_event()
        except ProtocolError as again:
            assert again is error
        else:
            raise AssertionError("a failed codec decoded again") from None
    return frames


def _shape(data: bytes) -> tuple[int, int, bytes]:
    """The version and chunk size the first byte picks, and the rest of the input."""
    if not data:
        return max(VERSIONS), 1, b""
    return VERSIONS[data[0] % len(VERSIONS)], 1 + (data[0] >> 2) * 37, data[1:]


def round_trips(frame: Frame, role: str, version: int) -> None:
    """``frame``, decoded by a ``role`` codec of ``version``, encodes to bytes that a fresh
    codec decodes to the same frame (compared by its bytes: a NaN is never equal to itself)."""
    wire = encode(frame, LIMIT, version)
    client, server = open_codecs(version)
    receiver = server if role == "server" else client
    receiver.receive_data(wire)
    again = receiver.next_event()
    assert isinstance(again, Frame), again
    assert encode(again, LIMIT, version) == wire, (frame, again)
    assert receiver.next_event() is NEED_DATA


def check_server_frames(data: bytes) -> None:
    version, size, rest = _shape(data)
    _, server = open_codecs(version)
    for frame in read_all(server, rest, size):
        if isinstance(frame.message, Unreadable):
            assert frame.kind is Kind.REQUEST and frame.message.problem
        else:
            round_trips(frame, "server", version)


#: Requests a client asks and the type its API turns each answer into (client/api.py).
CLIENT_ANSWERS: list[tuple[m.Request, object]] = [
    (m.CreateTopic("t"), TopicInfo),
    (m.ListTopics(), list[str]),
    (m.DescribeTopic("t"), TopicInfo),
    (m.CreateQueue("q"), SubscriptionSpec),
    (m.CreateSubscription(m.SubscriptionSettings(name="s", topic="t")), SubscriptionSpec),
    (m.ListSubscriptions(), list[SubscriptionSpec]),
    (m.DeclareExchange("x", "direct"), ExchangeSpec),
    (m.ListExchanges(), list[ExchangeSpec]),
    (m.Bind(m.Binding(exchange="x", topic="t")), bool),
    (m.ListBindings(), list[BindingSpec]),
    (m.Stats("t", "s"), SubscriptionStats),
    (m.Stats("t", "s"), StreamStats),
]


def read_answer(message: msgspec.Struct) -> None:
    """What the client does with an answer's contents: only ``ProtocolError`` may escape."""
    if isinstance(message, m.Described):
        for request, kind in CLIENT_ANSWERS:
            with contextlib.suppress(ProtocolError):
                _answered(request, message.value, kind)  # type: ignore[arg-type]
    elif isinstance(message, m.Batches):
        for fetched in message.partitions:
            with contextlib.suppress(ProtocolError):
                decode_fetched("t", fetched)


def check_client_frames(data: bytes) -> None:
    version, size, rest = _shape(data)
    client, _ = open_codecs(version)
    for frame in read_all(client, rest, size):
        round_trips(frame, "client", version)
        read_answer(frame.message)


def check_handshake(data: bytes) -> None:
    """Either side before the connection is open: a server before HELLO, a client after
    HELLO (the WELCOME and the AUTH exchange to come)."""
    if not data:
        return
    role = "server" if data[0] & 1 else "client"
    size = 1 + (data[0] >> 1) * 11
    codec = NativeCodec(role, LIMIT)  # type: ignore[arg-type]
    if role == "client":
        codec.send(Frame(Kind.HELLO, 0, m.Hello(list(VERSIONS))))
    read_all(codec, data[1:], size)


# -- seeds: valid traffic, made by the codec itself -----------------------------------------

RECEIPT = Receipt(0, 7, 1)
REQUESTS: list[m.Request] = [
    m.CreateTopic("t", m.TopicSettings(partitions=3, retention_ms=None), m.BacklogPolicy(
        max_backlog_messages=10, overflow="reject")),
    m.ListTopics(), m.DescribeTopic("t"), m.DeleteTopic("t"),
    m.CreateQueue("q", m.QueueSettings(fifo=True, policy=m.BacklogPolicy(dedup_window_ms=5))),
    m.DeleteQueue("q"),
    m.CreateSubscription(m.SubscriptionSettings(
        name="s", topic="t", mode="queue", retry=m.RetrySettings(kind="fixed", base_ms=5))),
    m.ListSubscriptions("t"), m.DeleteSubscription("t", "s"),
    m.DeclareExchange("x", "topic", "alt"), m.DeleteExchange("x"), m.ListExchanges(),
    m.Bind(m.Binding(exchange="x", topic="t", key="a.*", headers={"h": b"v", "n": None})),
    m.Unbind(m.Binding(exchange="x", topic="t")), m.ListBindings("x"),
    m.Publish("t", [m.Out(b"v", b"k", [("h", b"1")], 0, 5, None, "d")], "p", 1),
    m.PublishToExchange("x", "a.b", [m.Out(b"v")]),
    m.Receive("q", "q", 10, 100, 30_000), m.Ack("q", "q", [RECEIPT]),
    m.Nack("q", "q", [RECEIPT], 10, "boom"), m.Extend("q", "q", [RECEIPT], 1000),
    m.Subscribe("q", "q", 100), m.Unsubscribe(4),
    m.Join("t", "g", None, "c"), m.Heartbeat("t", "g", "m", 1), m.Leave("t", "g", "m"),
    m.Fetch("t", "g", "m", 1), m.Commit("t", "g", "m", 1, {0: 5, 1: 7}),
    m.Seek("t", "g", "m", 1, 0, "earliest"), m.SeekToTime("t", "g", "m", 1, 0, 1000),
    m.FetchBatches("t", "g", "m", 1), m.Stats("q", "q"),
    m.Redrive("q.dlq", m.RedriveWhere(source_topic="q", key=b"k", headers={"h": b"v"})),
]  # fmt: skip
DELIVERED = m.Delivered(0, 7, 1000, b"k", b"v", [("h", b"1")], 2)
MEMBERSHIP = m.Membership("m", 1, [0, 1], 10_000)
BATCH, _ = encode_batch(
    7,
    [Record(value=b"v", key=b"k", headers=[("h", b"1")], timestamp_ms=5), Record(value=b"w")],
    1000,
)
RESPONSES: list[msgspec.Struct] = [
    m.Done(), m.Names(["a", "b"]), m.PublishedAt([("t", 0, 7, 2)]), m.Messages([DELIVERED]),
    m.Refused([RECEIPT]), MEMBERSHIP, m.Records([DELIVERED], MEMBERSHIP), m.Position(3),
    m.Batches([m.Fetched(0, 7, 9, BATCH)], MEMBERSHIP), m.Moved(2),
    m.Described(["t"]), m.Described(True),
    m.Described({"name": "x", "kind": "direct", "alternate": None}),
    m.Described({"topic": "t", "subscription": "s", "mode": "stream", "members": ["m"],
                 "generation": 1, "lag": 0, "partitions": []}),
]  # fmt: skip


def _frames(frames: list[tuple[Kind, msgspec.Struct]], version: int) -> bytes:
    return b"".join(encode(Frame(kind, i, message), LIMIT, version)
                    for i, (kind, message) in enumerate(frames))  # fmt: skip


def server_seeds() -> list[bytes]:
    per_request = [[(Kind.REQUEST, r)] for r in REQUESTS]
    extras = [[(Kind.CREDIT, m.Credit(5)), (Kind.PING, m.Empty()), (Kind.GOODBYE, m.Empty())]]
    seeds = [bytes([3]) + _frames(frames, 4) for frames in [*per_request, *extras]]
    seeds.append(bytes([0]) + _frames([(Kind.REQUEST, m.Ack("q", "q", [RECEIPT]))], 1))
    return seeds


def client_seeds() -> list[bytes]:
    frames = [[(Kind.RESPONSE, r)] for r in RESPONSES]
    frames += [
        [(Kind.FAILURE, m.Failure("unknown_topic", "no", False, {"topic": "t"}))],
        [(Kind.DELIVERIES, m.Deliveries([DELIVERED])), (Kind.PING, m.Empty())],
    ]
    return [bytes([3]) + _frames(f, 4) for f in frames]


def handshake_seeds() -> list[bytes]:
    hello = encode(Frame(Kind.HELLO, 0, m.Hello([4, 3], "c")))
    auth = encode(Frame(Kind.AUTH, 0, m.Auth("SCRAM-SHA-256", b"n,,n=ada,r=abc")))
    welcome = encode(Frame(Kind.WELCOME, 0, WELCOME_AUTH), version=4)
    challenge = encode(Frame(Kind.AUTH_CHALLENGE, 0, m.AuthChallenge(b"r=abc,s=W22Z,i=4096")))
    ok = encode(Frame(Kind.AUTH_OK, 0, m.AuthOk("ada", b"v=abc")))
    return [bytes([1]) + hello, bytes([1]) + hello + auth, bytes([0]) + welcome + challenge + ok,
            bytes([0]) + encode(Frame(Kind.WELCOME, 0, WELCOME[2]))]  # fmt: skip


TARGETS = {
    "native_server": Target(
        "native_server",
        "bytes from a client to an open server codec (versions 1-4, any chunking): frames, "
        "Unreadable requests or ProtocolError; each frame re-encodes to itself",
        check_server_frames, server_seeds,
    ),
    "native_handshake": Target(
        "native_handshake",
        "bytes to a server before HELLO and to a client awaiting WELCOME and the AUTH "
        "exchange: frames or ProtocolError",
        check_handshake, handshake_seeds,
    ),
    "native_client": Target(
        "native_client",
        "bytes from a server to an open client codec; each frame re-encodes to itself, and "
        "the client's reading of answers (Described, stored Batches) raises only ProtocolError",
        check_client_frames, client_seeds,
    ),
}  # fmt: skip
