"""The native codec's table of turns, walked in full (STYLE.md principle 4).

The model below is written out by hand, independently of ``codec.SENT_BY``: a (state, sender,
kind) triple is either in ``TURNS``, with the state it leads to, or it is refused. The codec
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

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.errors import ProtocolError
from roost.protocols.native.codec import SENT_BY, Frame, Kind, NativeCodec, Role, State
from tests.protocols.native_support import (
    ROLES,
    SAMPLES,
    STATES,
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

#: (state, sender, kind) -> the next state. Anything else is refused.
TURNS: dict[tuple[StateName, Role, Kind], StateName] = {
    ("before_hello", "client", Kind.HELLO): "after_hello",
    ("after_hello", "server", Kind.WELCOME): "open",
    ("after_hello", "server", Kind.FAILURE): "closed",
    **{("open", "client", kind): "open" for kind in CLIENT_OPEN},
    **{("open", "server", kind): "open" for kind in SERVER_OPEN},
    ("open", "client", Kind.GOODBYE): "closed",
    ("open", "server", Kind.GOODBYE): "closed",
}

CODEC_STATE: dict[StateName, State] = {
    "before_hello": State.HANDSHAKE,
    "after_hello": State.HANDSHAKE,
    "open": State.OPEN,
    "closed": State.CLOSED,
}


def test_the_model_agrees_with_sent_by() -> None:
    assert SENT_BY["client"] == CLIENT_OPEN | {Kind.GOODBYE}
    assert SENT_BY["server"] == SERVER_OPEN | {Kind.GOODBYE}


def sender_of(role: Role, direction: Direction) -> Role:
    if direction == "send":
        return role
    return "server" if role == "client" else "client"


# -- every combination, from every way into each state ------------------------------------

#: Ways into each state: the state they reach, and how.
ROUTES: dict[str, StateName] = {
    "fresh": "before_hello",
    "hello": "after_hello",
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


def check_turn(codec: NativeCodec, state: StateName, kind: Kind, direction: Direction) -> StateName:
    """Try one turn on ``codec`` (believed to be in ``state``); assert the codec does what the
    model says; return the model's next state ("failed" once a receive was refused)."""
    after = TURNS.get((state, sender_of(codec.role, direction), kind))
    if direction == "send":
        if after is None:
            with pytest.raises(ProtocolError):
                codec.send(sample(kind, 5))
            assert codec.state is CODEC_STATE[state]  # a refused send changes nothing
            return state
        assert isinstance(codec.send(sample(kind, 5)), bytes)
    else:
        codec.receive_data(raw_frame(kind, 5, SAMPLES[kind]))
        if after is None:
            with pytest.raises(ProtocolError) as refused:
                codec.next_event()
            assert codec.state is State.CLOSED
            with pytest.raises(ProtocolError) as again:
                codec.next_event()
            assert again.value is refused.value
            return "closed"
        assert drain(codec) == [Frame(kind, 5, SAMPLES[kind])]
    assert codec.state is CODEC_STATE[after]
    return after


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_every_turn_from_every_state(
    route: str, role: Role, direction: Direction, kind: Kind
) -> None:
    state = ROUTES[route]
    codec = codec_by(route, role)
    assert codec.state is CODEC_STATE[state]
    check_turn(codec, state, kind, direction)


def test_the_walk_covers_every_state_role_kind_and_direction() -> None:
    walked = {(ROUTES[route], role, kind, d) for route in ROUTES for role in ROLES
              for kind in Kind for d in DIRECTIONS}  # fmt: skip
    assert walked == set(itertools.product(STATES, ROLES, Kind, DIRECTIONS))


# -- random sequences of turns ------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    role=st.sampled_from(ROLES),
    turns=st.lists(
        st.tuples(st.sampled_from(list(Kind)), st.sampled_from(DIRECTIONS)), max_size=12
    ),
)
def test_random_sequences_of_turns_follow_the_table(
    role: Role, turns: list[tuple[Kind, Direction]]
) -> None:
    codec = NativeCodec(role)
    state: StateName = "before_hello"
    failed = False
    for kind, direction in turns:
        if failed:  # a refused receive is final: everything is refused from now on
            with pytest.raises(ProtocolError):
                if direction == "send":
                    codec.send(sample(kind))
                else:
                    codec.next_event()
            continue
        before = state
        state = check_turn(codec, state, kind, direction)
        failed = direction == "receive" and (before, sender_of(role, "receive"), kind) not in TURNS


def test_an_open_pair_can_talk_in_every_allowed_kind() -> None:
    """The table's open row, end to end: each allowed kind sent by one codec is taken by the
    other."""
    client, server = open_pair()
    for sender, receiver in ((client, server), (server, client)):
        for kind in sorted(SENT_BY[sender.role] - {Kind.GOODBYE}):
            receiver.receive_data(sender.send(sample(kind, 9)))
            assert drain(receiver) == [sample(kind, 9)]
    assert client.state is server.state is State.OPEN
