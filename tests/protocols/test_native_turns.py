"""The native codec's table of turns, walked in full (STYLE.md principle 4).

The model below is written out by hand, independently of ``codec.TURNS``: a (state, sender,
input) triple is either in ``TURNS``, with the state it leads to, or it is refused. An input is
a frame kind with its sample message, and one more: a version-4 ``WELCOME`` that requires
authentication (``WELCOME_AUTH``), which leads elsewhere than the plain one. The codec
must agree on every (state, role, kind, direction) combination:

- allowed: ``send`` returns bytes / ``next_event`` returns the frame, and the state moves as
  the table says;
- refused on send: ``ProtocolError``, and the codec is left as it was (our own mistake);
- refused on receive: ``ProtocolError``, the codec is closed and keeps raising that error.

One test walks every combination once from each reachable state; a hypothesis test walks
random sequences of turns from a fresh codec, so states are also reached by every path.
"""

from __future__ import annotations

import itertools
from typing import Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.errors import ProtocolError
from roost.protocols.native.codec import SENT_BY, VERSIONS, Frame, Kind, NativeCodec, Role, State
from tests.protocols.native_support import (
    ROLES,
    SAMPLES,
    STATES,
    WELCOME_AUTH,
    StateName,
    drain,
    open_pair,
    raw_frame,
    sample,
)

Direction = Literal["send", "receive"]
DIRECTIONS: tuple[Direction, ...] = ("send", "receive")

CLIENT_OPEN = {Kind.REQUEST, Kind.CREDIT, Kind.PING, Kind.PONG}
SERVER_OPEN = {Kind.RESPONSE, Kind.FAILURE, Kind.DELIVERIES, Kind.PING, Kind.PONG}
#: Sent by the server once open, on a version-5 connection only: the WELCOME of the walk
#: below chooses version 4, so there they are refused (test_native_codec covers version 5).
SERVER_OPEN_V5 = {Kind.BLOCKED, Kind.UNBLOCKED}

#: What can arrive: every kind with its sample message, and the WELCOME that asks for auth.
INPUTS: dict[str, tuple[Kind, msgspec.Struct]] = {
    **{kind.name: (kind, SAMPLES[kind]) for kind in Kind},
    "WELCOME_AUTH": (Kind.WELCOME, WELCOME_AUTH),
}

#: (state, sender, input) -> the next state. Anything else is refused.
TURNS: dict[tuple[StateName, Role, str], StateName] = {
    ("before_hello", "client", "HELLO"): "after_hello",
    ("after_hello", "server", "WELCOME"): "open",
    ("after_hello", "server", "WELCOME_AUTH"): "auth_client",
    ("after_hello", "server", "FAILURE"): "closed",
    ("auth_client", "client", "AUTH"): "auth_server",
    ("auth_client", "client", "GOODBYE"): "closed",
    ("auth_client", "server", "FAILURE"): "closed",
    ("auth_server", "server", "AUTH_CHALLENGE"): "auth_client",
    ("auth_server", "server", "AUTH_OK"): "open",
    ("auth_server", "server", "FAILURE"): "closed",
    ("auth_server", "client", "GOODBYE"): "closed",
    **{("open", "client", kind.name): "open" for kind in CLIENT_OPEN},
    **{("open", "server", kind.name): "open" for kind in SERVER_OPEN},
    ("open", "client", "GOODBYE"): "closed",
    ("open", "server", "GOODBYE"): "closed",
}

CODEC_STATE: dict[StateName, State] = {
    "before_hello": State.HANDSHAKE,
    "after_hello": State.HANDSHAKE,
    "auth_client": State.AUTHENTICATING,
    "auth_server": State.AUTHENTICATING,
    "open": State.OPEN,
    "closed": State.CLOSED,
}


def test_the_model_agrees_with_sent_by() -> None:
    assert SENT_BY["client"] == CLIENT_OPEN | {Kind.GOODBYE}
    assert SENT_BY["server"] == SERVER_OPEN | SERVER_OPEN_V5 | {Kind.GOODBYE}


def sender_of(role: Role, direction: Direction) -> Role:
    if direction == "send":
        return role
    return "server" if role == "client" else "client"


# -- every combination, from every way into each state ------------------------------------

#: Ways into each state: the state they reach, and how.
ROUTES: dict[str, StateName] = {
    "fresh": "before_hello",
    "hello": "after_hello",
    "welcome-auth": "auth_client",
    "auth": "auth_server",
    "challenge": "auth_client",
    "auth-failure": "closed",
    "auth-goodbye": "closed",
    "auth-ok": "open",
    "welcome": "open",
    "failure": "closed",
    "goodbye-sent": "closed",
    "goodbye-received": "closed",
    "eof": "closed",
}


def codec_by(route: str, role: Role) -> NativeCodec:
    """A codec of ``role`` brought along ``route`` by real traffic with a peer codec."""
    client, server = NativeCodec("client"), NativeCodec("server")
    me, peer = (client, server) if role == "client" else (server, client)
    if route == "fresh":
        return me
    server.receive_data(client.send(sample(Kind.HELLO)))
    drain(server)
    if route == "hello":
        return me
    if route == "failure":
        client.receive_data(server.send(sample(Kind.FAILURE)))
        drain(client)
        return me
    if route.startswith(("auth", "welcome-auth", "challenge")):
        return authenticate_by(route, me, client, server)
    client.receive_data(server.send(sample(Kind.WELCOME)))
    drain(client)
    if route == "goodbye-sent":
        peer.receive_data(me.send(sample(Kind.GOODBYE)))
    elif route == "goodbye-received":
        me.receive_data(peer.send(sample(Kind.GOODBYE)))
        drain(me)
    elif route == "eof":
        me.receive_data(b"")
    return me


def authenticate_by(
    route: str, me: NativeCodec, client: NativeCodec, server: NativeCodec
) -> NativeCodec:
    """The authentication routes, from a HELLO already taken by the server."""
    client.receive_data(server.send(Frame(Kind.WELCOME, 0, WELCOME_AUTH)))
    drain(client)
    if route == "welcome-auth":
        return me
    if route == "auth-goodbye":
        server.receive_data(client.send(sample(Kind.GOODBYE)))
        drain(server)
        return me
    server.receive_data(client.send(sample(Kind.AUTH)))
    drain(server)
    answer = {"challenge": Kind.AUTH_CHALLENGE, "auth-failure": Kind.FAILURE,
              "auth-ok": Kind.AUTH_OK}.get(route)  # fmt: skip
    if answer is not None:
        client.receive_data(server.send(sample(answer)))
        drain(client)
    return me


def check_turn(codec: NativeCodec, state: StateName, name: str, direction: Direction) -> StateName:
    """Try one turn (input ``name``) on ``codec``, believed to be in ``state``; assert the
    codec does what the model says; return the model's next state."""
    kind, message = INPUTS[name]
    after = TURNS.get((state, sender_of(codec.role, direction), name))
    if direction == "send":
        if after is None:
            with pytest.raises(ProtocolError):
                codec.send(Frame(kind, 5, message))
            assert codec.state is CODEC_STATE[state]  # a refused send changes nothing
            return state
        assert isinstance(codec.send(Frame(kind, 5, message)), bytes)
    else:
        codec.receive_data(raw_frame(kind, 5, message))
        if after is None:
            with pytest.raises(ProtocolError) as refused:
                codec.next_event()
            assert codec.state is State.CLOSED
            with pytest.raises(ProtocolError) as again:
                codec.next_event()
            assert again.value is refused.value
            return "closed"
        assert drain(codec) == [Frame(kind, 5, message)]
    assert codec.state is CODEC_STATE[after]
    return after


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", list(INPUTS))
def test_every_turn_from_every_state(
    route: str, role: Role, direction: Direction, name: str
) -> None:
    state = ROUTES[route]
    codec = codec_by(route, role)
    assert codec.state is CODEC_STATE[state]
    check_turn(codec, state, name, direction)


def test_the_walk_covers_every_state_role_input_and_direction() -> None:
    walked = {(ROUTES[route], role, name, d) for route in ROUTES for role in ROLES
              for name in INPUTS for d in DIRECTIONS}  # fmt: skip
    assert walked == set(itertools.product(STATES, ROLES, INPUTS, DIRECTIONS))


# -- random sequences of turns ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(ROLES),
    turns=st.lists(
        st.tuples(st.sampled_from(list(INPUTS)), st.sampled_from(DIRECTIONS)), max_size=12
    ),
)
def test_random_sequences_of_turns_follow_the_table(
    role: Role, turns: list[tuple[str, Direction]]
) -> None:
    codec = NativeCodec(role)
    state: StateName = "before_hello"
    failed = False
    for name, direction in turns:
        if failed:  # a refused receive is final: everything is refused from now on
            with pytest.raises(ProtocolError):
                if direction == "send":
                    codec.send(Frame(*INPUTS[name][:1], 0, INPUTS[name][1]))
                else:
                    codec.next_event()
            continue
        before = state
        state = check_turn(codec, state, name, direction)
        failed = direction == "receive" and (before, sender_of(role, "receive"), name) not in TURNS


def test_an_open_pair_can_talk_in_every_allowed_kind() -> None:
    """The table's open row, end to end: each allowed kind sent by one codec is taken by the
    other."""
    client, server = open_pair(version=max(VERSIONS))
    for sender, receiver in ((client, server), (server, client)):
        for kind in sorted(SENT_BY[sender.role] - {Kind.GOODBYE}):
            receiver.receive_data(sender.send(sample(kind, 9)))
            assert drain(receiver) == [sample(kind, 9)]
    assert client.state is server.state is State.OPEN
