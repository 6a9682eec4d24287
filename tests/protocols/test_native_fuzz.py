"""The native codec against a hostile peer (STYLE.md principle 12).

What is pinned here:

- (a) Every message struct round-trips: ``send`` on one side, the peer's ``next_event`` on the
  other, fed byte-at-a-time and in random chunks, gives back an equal message and correlation.
- (b) Random bytes, and random MessagePack under a valid header, after a valid handshake: the
  only exception ever raised is ``ProtocolError``.
- (c) A valid frame cut short anywhere is ``NEED_DATA``, never an error; with any one byte
  changed to any value it decodes to some frame, waits, or raises ``ProtocolError``.
- (d) A length field over the limit fails as soon as the header is in.
- (f) The same hostility during version 4's authentication exchange (random bytes, random
  payloads, mutated AUTH frames): only ``ProtocolError``, and the codec never opens by it.
- (e) 100 MB of garbage in 64 KiB chunks never makes the codec hold more than
  ``max_frame_bytes + HEADER_SIZE`` bytes, and is refused early.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.errors import ProtocolError
from roost.protocols.native import messages as m
from roost.protocols.native.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    HEADER_SIZE,
    NEED_DATA,
    SENT_BY,
    TURNS,
    VERSIONS,
    Frame,
    Kind,
    NativeCodec,
    State,
    Step,
    check_version,
)
from tests.protocols.native_support import (
    ANY_VALUE,
    REQUESTS,
    RESPONSES,
    ROLES,
    authenticating_pair,
    challenged_pair,
    drain,
    hello,
    messages_of,
    open_pair,
    raw_payload_frame,
)

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U32 = st.integers(0, 2**32 - 1)

#: The struct each kind carries, apart from the unions (which are listed struct by struct).
SINGLE_PAYLOADS: dict[Kind, type[msgspec.Struct]] = {
    Kind.HELLO: m.Hello,
    Kind.WELCOME: m.Welcome,
    Kind.FAILURE: m.Failure,
    Kind.DELIVERIES: m.Deliveries,
    Kind.CREDIT: m.Credit,
    Kind.PING: m.Empty,
    Kind.PONG: m.Empty,
    Kind.GOODBYE: m.Empty,
    Kind.AUTH: m.Auth,
    Kind.AUTH_CHALLENGE: m.AuthChallenge,
    Kind.AUTH_OK: m.AuthOk,
}


def sendable(message: msgspec.Struct) -> bool:
    """Whether the message has no value its own version lacks (a WELCOME of version 3 that
    requires auth cannot be sent: the codec refuses it, tested in test_native_codec)."""
    try:
        check_version(message, message.version if isinstance(message, m.Welcome) else 4)
    except ProtocolError:
        return False
    return True


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` split at ``cuts`` (positions, any order, repeats and out-of-range allowed)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def take_all(codec: NativeCodec) -> list[Frame]:
    """Every frame ``codec`` can decode now; stops quietly at the first ``ProtocolError``
    (checking that the codec is then closed for good). Any other exception escapes."""
    frames: list[Frame] = []
    try:
        while (event := codec.next_event()) is not NEED_DATA:
            assert isinstance(event, Frame)
            frames.append(event)
    except ProtocolError as error:
        assert codec.state is State.CLOSED
        with pytest.raises(ProtocolError) as again:
            codec.next_event()
        assert again.value is error
    return frames


def feed_all(codec: NativeCodec, chunks: Sequence[bytes]) -> list[Frame]:
    """Feed ``chunks`` one by one, decoding after each, until the codec refuses."""
    frames: list[Frame] = []
    for chunk in chunks:
        try:
            codec.receive_data(chunk)
        except ProtocolError:
            break
        frames += take_all(codec)
        if codec.state is State.CLOSED:
            break
    return frames


# -- (a) round trips ----------------------------------------------------------------------


Pair = Callable[[], tuple[NativeCodec, NativeCodec]]


def round_trip(pair: Pair, frame: Frame, cuts: list[int]) -> None:
    """``frame`` sent by the first codec of ``pair()`` and taken by the second, byte-at-a-time
    on one fresh pair and in the chunks ``cuts`` makes on another."""
    sender, receiver = pair()
    wire = sender.send(frame)
    for byte in wire[:-1]:
        receiver.receive_data(bytes([byte]))
        assert receiver.next_event() is NEED_DATA
    receiver.receive_data(wire[-1:])
    assert drain(receiver) == [frame]

    sender, receiver = pair()
    assert sender.send(frame) == wire
    got: list[Frame] = []
    for chunk in chunked(wire, cuts):
        receiver.receive_data(chunk)
        got += drain(receiver)
    assert got == [frame]
    assert type(got[0].message) is type(frame.message)


def client_to_server() -> tuple[NativeCodec, NativeCodec]:
    # The newest version, so that every field of every request may be sent.
    return open_pair(version=max(VERSIONS))


def server_to_client() -> tuple[NativeCodec, NativeCodec]:
    client, server = open_pair()
    return server, client


def newest_server_to_client() -> tuple[NativeCodec, NativeCodec]:
    # The newest version, so that every response may be sent.
    client, server = open_pair(version=max(VERSIONS))
    return server, client


def fresh_client_to_server() -> tuple[NativeCodec, NativeCodec]:
    return NativeCodec("client"), NativeCodec("server")


def server_to_client_after_hello() -> tuple[NativeCodec, NativeCodec]:
    client, server = NativeCodec("client"), NativeCodec("server")
    hello(client, server)
    return server, client


#: How to get a pair whose first codec may send the kind to the second.
PAIR_FOR: dict[Kind, Pair] = {
    Kind.HELLO: fresh_client_to_server,
    Kind.WELCOME: server_to_client_after_hello,
    Kind.FAILURE: server_to_client_after_hello,
    Kind.DELIVERIES: server_to_client,
    Kind.CREDIT: client_to_server,
    Kind.PING: server_to_client,
    Kind.PONG: client_to_server,
    Kind.GOODBYE: server_to_client,
    Kind.AUTH: authenticating_pair,
    Kind.AUTH_CHALLENGE: lambda: challenged_pair()[::-1],
    Kind.AUTH_OK: lambda: challenged_pair()[::-1],
}


CUTS = st.lists(st.integers(0, 10_000), max_size=8)


@FUZZ
@given(data=st.data(), correlation=U32, cuts=CUTS)
@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_every_request_round_trips(
    cls: type[msgspec.Struct], data: st.DataObject, correlation: int, cuts: list[int]
) -> None:
    message = data.draw(messages_of(cls))
    round_trip(client_to_server, Frame(Kind.REQUEST, correlation, message), cuts)


@FUZZ
@given(data=st.data(), correlation=U32, cuts=CUTS)
@pytest.mark.parametrize("cls", RESPONSES, ids=lambda c: c.__name__)
def test_every_response_round_trips(
    cls: type[msgspec.Struct], data: st.DataObject, correlation: int, cuts: list[int]
) -> None:
    message = data.draw(messages_of(cls))
    round_trip(newest_server_to_client, Frame(Kind.RESPONSE, correlation, message), cuts)


@FUZZ
@given(data=st.data(), correlation=U32, cuts=CUTS)
@pytest.mark.parametrize("kind", list(SINGLE_PAYLOADS), ids=lambda k: k.name)
def test_every_other_kind_round_trips(
    kind: Kind, data: st.DataObject, correlation: int, cuts: list[int]
) -> None:
    message = data.draw(messages_of(SINGLE_PAYLOADS[kind]).filter(sendable))
    round_trip(PAIR_FOR[kind], Frame(kind, correlation, message), cuts)


# -- (b) random bytes after a valid handshake ---------------------------------------------


@FUZZ
@given(role=st.sampled_from(ROLES), garbage=st.binary(max_size=2000), cuts=CUTS)
def test_random_bytes_raise_only_protocol_error(role: str, garbage: bytes, cuts: list[int]) -> None:
    client, server = open_pair()
    feed_all(client if role == "client" else server, chunked(garbage, cuts))


@FUZZ
@given(role=st.sampled_from(ROLES), garbage=st.binary(max_size=300))
def test_random_bytes_byte_at_a_time_raise_only_protocol_error(role: str, garbage: bytes) -> None:
    client, server = open_pair()
    feed_all(client if role == "client" else server, [bytes([b]) for b in garbage])


#: Payloads that are valid MessagePack but (mostly) not the kind's struct: deeper into msgspec.
RANDOM_PAYLOAD = st.one_of(
    st.binary(max_size=200),
    ANY_VALUE.map(msgspec.msgpack.encode),
    st.lists(ANY_VALUE, max_size=6).map(lambda v: msgspec.msgpack.encode([20, *v])),
)


@FUZZ
@given(
    role=st.sampled_from(ROLES),
    frames=st.lists(st.tuples(st.integers(0, 255), U32, RANDOM_PAYLOAD), min_size=1, max_size=5),
    cuts=CUTS,
)
def test_random_payloads_under_valid_headers_raise_only_protocol_error(
    role: str, frames: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    client, server = open_pair()
    wire = b"".join(raw_payload_frame(k, c, p) for k, c, p in frames)
    feed_all(client if role == "client" else server, chunked(wire, cuts))


# -- (c) truncated and mutated valid frames -----------------------------------------------

HEARTBEAT_OR_GOODBYE = st.sampled_from([Kind.PING, Kind.PONG, Kind.GOODBYE])
#: A frame a server may receive once open, with its message.
CLIENT_FRAMES = st.one_of(
    st.builds(Frame, st.just(Kind.REQUEST), U32, st.one_of(*map(messages_of, REQUESTS))),
    st.builds(Frame, st.just(Kind.CREDIT), U32, messages_of(m.Credit)),
    st.builds(Frame, HEARTBEAT_OR_GOODBYE, U32, st.just(m.Empty())),
)
#: A frame a client may receive once open.
SERVER_FRAMES = st.one_of(
    st.builds(Frame, st.just(Kind.RESPONSE), U32, st.one_of(*map(messages_of, RESPONSES))),
    st.builds(Frame, st.just(Kind.FAILURE), U32, messages_of(m.Failure)),
    st.builds(Frame, st.just(Kind.DELIVERIES), U32, messages_of(m.Deliveries)),
    st.builds(Frame, HEARTBEAT_OR_GOODBYE, U32, st.just(m.Empty())),
)


#: For each receiving role: an open (sender, receiver) pair and the frames that may arrive.
TOWARDS: dict[str, tuple[Pair, st.SearchStrategy[Frame]]] = {
    "server": (client_to_server, CLIENT_FRAMES),
    "client": (newest_server_to_client, SERVER_FRAMES),
}


@FUZZ
@given(receiver_role=st.sampled_from(ROLES), data=st.data())
def test_a_frame_cut_short_anywhere_needs_data(receiver_role: str, data: st.DataObject) -> None:
    pair, frames = TOWARDS[receiver_role]
    sender, _ = pair()
    wire = sender.send(data.draw(frames))
    for end in range(1, len(wire)):  # (an empty chunk would mean the peer closed)
        _, receiver = pair()
        receiver.receive_data(wire[:end])
        assert receiver.next_event() is NEED_DATA
        assert receiver.state is State.OPEN


@FUZZ
@given(receiver_role=st.sampled_from(ROLES), data=st.data())
def test_a_frame_with_one_byte_changed_decodes_waits_or_is_refused(
    receiver_role: str, data: st.DataObject
) -> None:
    pair, frames = TOWARDS[receiver_role]
    sender, receiver = pair()
    wire = bytearray(sender.send(data.draw(frames)))
    position = data.draw(st.integers(0, len(wire) - 1), label="position")
    wire[position] = data.draw(st.integers(0, 255).filter(lambda b: b != wire[position]))
    for got in feed_all(receiver, [bytes(wire)]):  # anything but ProtocolError escapes
        assert got.kind in SENT_BY[sender.role]


# -- (d) oversized length fields ----------------------------------------------------------


@FUZZ
@given(
    role=st.sampled_from(ROLES),
    limit=st.integers(64, DEFAULT_MAX_FRAME_BYTES),  # room for the handshake
    excess=st.integers(1, 2**32),
    kind=st.integers(0, 255),
    correlation=U32,
)
def test_a_length_over_the_limit_fails_with_the_header_alone(
    role: str, limit: int, excess: int, kind: int, correlation: int
) -> None:
    client, server = open_pair(max_frame_bytes=limit)
    codec = client if role == "client" else server
    length = min(limit + excess, 2**32 - 1)
    codec.receive_data(HEADER.pack(length, kind, correlation))
    with pytest.raises(ProtocolError, match=rf"frame length {length} \(limit {limit}\)"):
        codec.next_event()
    assert codec.state is State.CLOSED


# -- (f) the authentication exchange ------------------------------------------------------

#: Where authentication can be, on either side: the codec of ``role`` in a pair at that step.
AUTH_STEPS: dict[str, Pair] = {
    "client-to-speak": authenticating_pair,
    "server-to-speak": challenged_pair,
}
#: A payload for an auth frame: its struct's shape with anything in it, or anything at all.
AUTH_PAYLOAD = st.one_of(
    st.binary(max_size=100),
    st.tuples(ANY_VALUE, ANY_VALUE).map(lambda v: msgspec.msgpack.encode(list(v))),
    st.tuples(st.text(max_size=20), st.binary(max_size=200)).map(
        lambda v: msgspec.msgpack.encode(list(v))
    ),
)
AUTH_KINDS = st.sampled_from([Kind.AUTH, Kind.AUTH_CHALLENGE, Kind.AUTH_OK, Kind.FAILURE])


def never_opened_by_garbage(codec: NativeCodec, before: Step) -> None:
    """After hostile input the codec is where a valid turn could have put it, or closed."""
    assert codec.state in (State.AUTHENTICATING, State.OPEN, State.CLOSED)
    if codec.state is State.OPEN:  # only an AUTH_OK from the server's turn opens
        assert (before, "server", Kind.AUTH_OK) in TURNS and codec.role == "client"


@FUZZ
@given(
    step=st.sampled_from(list(AUTH_STEPS)),
    role=st.sampled_from(ROLES),
    garbage=st.binary(max_size=500),
    cuts=CUTS,
)
def test_random_bytes_during_authentication_raise_only_protocol_error(
    step: str, role: str, garbage: bytes, cuts: list[int]
) -> None:
    client, server = AUTH_STEPS[step]()
    codec = client if role == "client" else server
    before = codec.step
    feed_all(codec, chunked(garbage, cuts))
    never_opened_by_garbage(codec, before)


@FUZZ
@given(
    step=st.sampled_from(list(AUTH_STEPS)),
    role=st.sampled_from(ROLES),
    frames=st.lists(st.tuples(AUTH_KINDS, U32, AUTH_PAYLOAD), min_size=1, max_size=4),
    cuts=CUTS,
)
def test_random_auth_payloads_raise_only_protocol_error(
    step: str, role: str, frames: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    client, server = AUTH_STEPS[step]()
    codec = client if role == "client" else server
    before = codec.step
    wire = b"".join(raw_payload_frame(k, c, p) for k, c, p in frames)
    for got in feed_all(codec, chunked(wire, cuts)):
        assert got.kind in (Kind.AUTH, Kind.AUTH_CHALLENGE, Kind.AUTH_OK, Kind.FAILURE)
    never_opened_by_garbage(codec, before)


@FUZZ
@given(data=st.data())
def test_a_mutated_auth_frame_decodes_waits_or_is_refused(data: st.DataObject) -> None:
    client, server = authenticating_pair()
    frame = Frame(Kind.AUTH, data.draw(U32), data.draw(messages_of(m.Auth)))
    wire = bytearray(client.send(frame))
    position = data.draw(st.integers(0, len(wire) - 1), label="position")
    wire[position] = data.draw(st.integers(0, 255).filter(lambda b: b != wire[position]))
    for got in feed_all(server, [bytes(wire)]):
        assert got.kind in (Kind.AUTH, Kind.GOODBYE)
    assert server.state is not State.OPEN  # only the server's own AUTH_OK opens it


# -- (e) memory ---------------------------------------------------------------------------

CHUNK_BYTES = 64 * 1024
GARBAGE_BYTES = 100 * 1024 * 1024


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("drains", [True, False], ids=["draining", "not-draining"])
def test_100_mb_of_garbage_is_refused_early_and_never_buffered(seed: int, drains: bool) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(CHUNK_BYTES) for _ in range(4)]
    _, server = open_pair()
    # A chunk is taken whole while what is buffered is within the limit: one chunk over, at most.
    bound = server.max_frame_bytes + HEADER_SIZE + CHUNK_BYTES
    refused_after = None
    for i in range(GARBAGE_BYTES // CHUNK_BYTES):
        try:
            server.receive_data(chunks[i % len(chunks)])
            if drains:
                take_all(server)
        except ProtocolError:
            refused_after = refused_after if refused_after is not None else i
        assert len(server._buffer) <= bound
    assert refused_after is not None
    assert refused_after * CHUNK_BYTES <= bound


@pytest.mark.parametrize("drains", [True, False], ids=["draining", "not-draining"])
def test_a_frame_announcing_the_limit_then_endless_bytes_is_bounded(drains: bool) -> None:
    """The worst a peer can do within the header check: announce the largest frame and keep
    sending. The codec holds at most one frame's worth (and one chunk), then refuses."""
    _, server = open_pair()
    bound = server.max_frame_bytes + HEADER_SIZE + CHUNK_BYTES
    server.receive_data(HEADER.pack(server.max_frame_bytes, Kind.REQUEST, 1))
    filler = b"\xc1" * CHUNK_BYTES  # never valid MessagePack
    with pytest.raises(ProtocolError):
        for _ in range(GARBAGE_BYTES // CHUNK_BYTES):
            server.receive_data(filler)
            assert len(server._buffer) <= bound
            if drains:
                assert server.next_event() is NEED_DATA
    assert len(server._buffer) <= bound
    assert server.state is State.CLOSED
