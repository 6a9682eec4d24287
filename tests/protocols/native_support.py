"""Helpers shared by the native codec tests: codecs brought into a state by real traffic, raw
frames built without a codec (so a test can send what no codec would), one sample message per
kind, and hypothesis strategies for every message struct, read from msgspec's own type info.

Everything goes through the codec's seam, bytes: nothing here reaches into a codec's fields.
"""

from __future__ import annotations

import builtins
import typing
from typing import Literal

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from roost.protocols.native import messages as m
from roost.protocols.native.codec import (
    HEADER,
    HEADER_SIZE,
    NEED_DATA,
    Frame,
    Kind,
    NativeCodec,
    Role,
)

ROLES: tuple[Role, ...] = ("client", "server")
#: The states a codec can be in, as seen from the turn table: the handshake is two steps, and
#: authentication two more (whose turn it is).
StateName = Literal["before_hello", "after_hello", "auth_client", "auth_server", "open", "closed"]
STATES: tuple[StateName, ...] = (
    "before_hello", "after_hello", "auth_client", "auth_server", "open", "closed",
)  # fmt: skip

#: One valid message per kind, to fill a frame of that kind.
SAMPLES: dict[Kind, msgspec.Struct] = {
    Kind.HELLO: m.Hello(versions=[4, 3, 2, 1], client="test"),
    Kind.WELCOME: m.Welcome(version=4, server="roost", max_frame_bytes=1 << 24, heartbeat_ms=5000),
    Kind.REQUEST: m.Publish(topic="t", messages=[m.Out(value=b"hi")]),
    Kind.RESPONSE: m.Done(),
    Kind.FAILURE: m.Failure(code="unknown_topic", message="unknown topic 't'"),
    Kind.DELIVERIES: m.Deliveries(messages=[]),
    Kind.CREDIT: m.Credit(messages=10),
    Kind.PING: m.Empty(),
    Kind.PONG: m.Empty(),
    Kind.GOODBYE: m.Empty(),
    Kind.AUTH: m.Auth(mechanism="SCRAM-SHA-256", data=b"n,,n=ada,r=rOprNGfwEbeRWgbNEkqO"),
    Kind.AUTH_CHALLENGE: m.AuthChallenge(
        data=b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTC,s=W22Z,i=4096"
    ),
    Kind.AUTH_OK: m.AuthOk(principal="ada", data=b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
    Kind.BLOCKED: m.Blocked(reason="memory 900 MiB over the budget of 800 MiB (max_memory)"),
    Kind.UNBLOCKED: m.Empty(),
}
#: A version-4 WELCOME that asks the client to authenticate.
WELCOME_AUTH = m.Welcome(
    version=4, server="roost", max_frame_bytes=1 << 24, heartbeat_ms=5000, auth_required=True,
    mechanisms=["SCRAM-SHA-256", "TOKEN"],
)  # fmt: skip

REQUESTS: tuple[type[msgspec.Struct], ...] = typing.get_args(m.AnyRequest)
RESPONSES: tuple[type[msgspec.Struct], ...] = typing.get_args(m.AnyResponse)


def raw_frame(kind: int, correlation: int, message: msgspec.Struct) -> bytes:
    """A frame's bytes built by hand, bypassing every check of ``NativeCodec.send``."""
    return raw_payload_frame(kind, correlation, msgspec.msgpack.encode(message))


def raw_payload_frame(kind: int, correlation: int, payload: bytes) -> bytes:
    return HEADER.pack(HEADER_SIZE - 4 + len(payload), kind, correlation) + payload


def sample(kind: Kind, correlation: int = 0) -> Frame:
    return Frame(kind, correlation, SAMPLES[kind])


def drain(codec: NativeCodec) -> list[Frame]:
    """Every whole frame ``codec`` has buffered."""
    frames = []
    while (event := codec.next_event()) is not NEED_DATA:
        assert isinstance(event, Frame)
        frames.append(event)
    return frames


def hello(client: NativeCodec, server: NativeCodec) -> None:
    server.receive_data(client.send(sample(Kind.HELLO)))
    assert [f.kind for f in drain(server)] == [Kind.HELLO]


def open_pair(
    max_frame_bytes: int | None = None, version: int | None = None
) -> tuple[NativeCodec, NativeCodec]:
    """A client and a server codec past a successful handshake (of ``version``, else the
    sample WELCOME's)."""
    limits = {} if max_frame_bytes is None else {"max_frame_bytes": max_frame_bytes}
    client, server = NativeCodec("client", **limits), NativeCodec("server", **limits)
    hello(client, server)
    welcome = sample(Kind.WELCOME)
    if version is not None:
        welcome = welcome._replace(
            message=msgspec.structs.replace(welcome.message, version=version)
        )
    client.receive_data(server.send(welcome))
    assert [f.kind for f in drain(client)] == [Kind.WELCOME]
    return client, server


def authenticating_pair() -> tuple[NativeCodec, NativeCodec]:
    """A client and a server codec after a WELCOME that requires authentication: the client's
    turn to send AUTH."""
    client, server = NativeCodec("client"), NativeCodec("server")
    hello(client, server)
    client.receive_data(server.send(Frame(Kind.WELCOME, 0, WELCOME_AUTH)))
    assert [f.kind for f in drain(client)] == [Kind.WELCOME]
    return client, server


def challenged_pair() -> tuple[NativeCodec, NativeCodec]:
    """An authenticating pair after one AUTH: the server's turn."""
    client, server = authenticating_pair()
    server.receive_data(client.send(sample(Kind.AUTH)))
    assert [f.kind for f in drain(server)] == [Kind.AUTH]
    return client, server


# -- strategies for every message struct, from msgspec's type info --------------------------

I64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=20)
#: What an ``object`` field may hold and still decode to an equal value: no tuples (they come
#: back as lists), no NaN (never equal to itself).
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | I64 | st.floats(allow_nan=False) | TEXT | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)


def strategy_for(t: mi.Type) -> st.SearchStrategy[object]:
    """Values of a msgspec type that survive a MessagePack round trip unchanged."""
    match t:
        case mi.IntType():
            return I64
        case mi.StrType():
            return TEXT
        case mi.BytesType():
            return st.binary(max_size=40)
        case mi.BoolType():
            return st.booleans()
        case mi.FloatType():
            return st.floats(allow_nan=False)
        case mi.NoneType():
            return st.none()
        case mi.AnyType() | mi.CustomType(cls=builtins.object):  # msgspec decodes both as Any
            return ANY_VALUE
        case mi.UnionType(types=types):
            return st.one_of(*(strategy_for(member) for member in types))
        case mi.ListType(item_type=item):
            return st.lists(strategy_for(item), max_size=4)
        case mi.TupleType(item_types=items):
            return st.tuples(*(strategy_for(item) for item in items))
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(strategy_for(key), strategy_for(value), max_size=4)
        case mi.StructType(cls=cls, fields=fields):
            return st.builds(cls, **{f.name: strategy_for(f.type) for f in fields})
    raise AssertionError(f"no strategy for {t!r}: extend strategy_for")


def messages_of(cls: type[msgspec.Struct]) -> st.SearchStrategy[msgspec.Struct]:
    return strategy_for(mi.type_info(cls))  # type: ignore[return-value]
