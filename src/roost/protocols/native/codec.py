"""The native protocol, sans-IO: bytes in, events out; events in, bytes out.

A frame, little-endian (docs/protocol.md has the same table)::

    offset size field
    0      4    u32 length       bytes after this field: 5 + payload; at most max_frame_bytes
    4      1    u8  kind         Kind below
    5      4    u32 correlation  a request's id; its response carries the same; a Deliveries
                                 or Credit frame carries its Subscribe's id; 0 otherwise
    9      ...      payload      MessagePack, the struct of the kind (messages.py)

A connection starts with the client's ``HELLO`` (the versions it speaks) and the server's
``WELCOME`` (the version chosen, the server's limits) or ``FAILURE`` (none in common). Then the
client sends requests, any number before the first answer (pipelining); the server answers each
with a ``RESPONSE`` or a ``FAILURE`` of the same correlation id, in any order. ``PING`` is
answered with ``PONG``; ``GOODBYE`` ends the connection.

    codec = NativeCodec(role="server")
    codec.receive_data(chunk)
    while (event := codec.next_event()) is not NEED_DATA:
        ...                                  # a Frame: its kind, correlation and message
    wire = codec.send(Frame(Kind.RESPONSE, 7, Done()))

Anything malformed — a bad length, an unknown kind, a payload that is not the kind's struct, a
frame out of turn — raises ``ProtocolError`` and the connection is done: ``next_event`` keeps
raising it. The codec never calls back into the connection and never touches a socket.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final, Literal, NamedTuple

import msgspec

from roost.errors import ProtocolError
from roost.protocols._buffer import ReceiveBuffer
from roost.protocols.native import messages as m

PROTOCOL = "roost"
#: Protocol versions spoken, oldest first. 2 adds ``FetchBatches``/``Batches``; a client says
#: which it speaks in ``HELLO`` and uses a newer operation only if ``WELCOME`` chose its version.
VERSIONS: Final = (1, 2, 3)
HEADER = struct.Struct("<IBI")
HEADER_SIZE = HEADER.size  # 9
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REQUEST = 3
    RESPONSE = 4
    FAILURE = 5
    DELIVERIES = 6
    CREDIT = 7
    PING = 8
    PONG = 9
    GOODBYE = 10


class Frame(NamedTuple):
    kind: Kind
    correlation: int
    message: msgspec.Struct


class _NeedData(enum.Enum):
    NEED_DATA = "need data"


NEED_DATA: Final = _NeedData.NEED_DATA
Role = Literal["client", "server"]

#: What each kind's payload is.
PAYLOADS: dict[Kind, type] = {
    Kind.HELLO: m.Hello,
    Kind.WELCOME: m.Welcome,
    Kind.REQUEST: m.AnyRequest,  # type: ignore[dict-item]
    Kind.RESPONSE: m.AnyResponse,  # type: ignore[dict-item]
    Kind.FAILURE: m.Failure,
    Kind.DELIVERIES: m.Deliveries,
    Kind.CREDIT: m.Credit,
    Kind.PING: m.Empty,
    Kind.PONG: m.Empty,
    Kind.GOODBYE: m.Empty,
}
#: Which kinds each side may send once the handshake is done; the handshake is its own step.
SENT_BY: dict[Role, frozenset[Kind]] = {
    "client": frozenset({Kind.REQUEST, Kind.CREDIT, Kind.PING, Kind.PONG, Kind.GOODBYE}),
    "server": frozenset({
        Kind.RESPONSE, Kind.FAILURE, Kind.DELIVERIES, Kind.PING, Kind.PONG, Kind.GOODBYE,
    }),
}  # fmt: skip
_DECODERS: dict[Kind, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(payload) for kind, payload in PAYLOADS.items()
}
_ENCODER = msgspec.msgpack.Encoder()


class State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class NativeCodec:
    def __init__(self, role: Role, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.role: Role = role
        self.peer: Role = "server" if role == "client" else "client"
        self.max_frame_bytes = max_frame_bytes
        self.state = State.HANDSHAKE
        self._buffer = ReceiveBuffer(PROTOCOL, max_frame_bytes + HEADER_SIZE)
        self._error: ProtocolError | None = None
        self._sent_hello = self._got_hello = False
        self._peer_closed = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as frames."""
        return len(self._buffer)

    @property
    def failed(self) -> bool:
        """The peer broke the protocol: every further call raises that error."""
        return self._error is not None

    # -- receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the peer. An empty chunk means the peer closed the connection."""
        if self._error is not None:
            raise self._error
        if not data:
            # Frames already buffered are still delivered; with none, it is over at once.
            self._peer_closed = True
            if not len(self._buffer):
                self.state = State.CLOSED
            return
        try:
            self._buffer.feed(data)
        except ProtocolError as e:
            raise self._fail(e) from None

    def next_event(self) -> Frame | _NeedData:
        """The next whole frame from the peer, or ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        header = self._buffer.unpack(HEADER)
        if header is None:
            return self._end_of_data()
        length, kind_number, correlation = header
        if not HEADER_SIZE - 4 <= length <= self.max_frame_bytes:
            raise self._fail(self._problem(f"frame length {length} (limit {self.max_frame_bytes})"))
        if len(self._buffer) < 4 + length:
            return self._end_of_data()
        try:
            kind = Kind(kind_number)
            message = self._buffer.decode(4 + length, HEADER_SIZE, _DECODERS[kind].decode)
        except (ValueError, msgspec.DecodeError, RecursionError) as e:
            # RecursionError: a payload nested thousands deep must not escape as a crash.
            raise self._fail(self._problem(f"bad frame of kind {kind_number}: {e}")) from None
        self._check_turn(kind, received=True)
        return Frame(kind, correlation, message)

    # -- sending --------------------------------------------------------------------------

    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame``; raises ``ProtocolError`` for a frame this side may not send
        now (our own mistake, so the connection is not failed for it, nor its state moved)."""
        wire = encode(frame, self.max_frame_bytes)
        self._check_turn(frame.kind, received=False)
        return wire

    def _end_of_data(self) -> _NeedData:
        if not self._peer_closed:
            return NEED_DATA
        if len(self._buffer):
            raise self._fail(
                self._problem(f"the stream ended inside a frame ({len(self._buffer)} bytes)")
            )
        self.state = State.CLOSED
        return NEED_DATA

    # -- the table of turns ---------------------------------------------------------------

    def _check_turn(self, kind: Kind, received: bool) -> None:
        sender: Role = self.peer if received else self.role
        if self.state is State.CLOSED:
            self._refuse(f"{kind.name} after the connection closed", received)
        elif self.state is State.HANDSHAKE:
            self._handshake(kind, sender, received)
        elif kind not in SENT_BY[sender]:
            self._refuse(f"the {sender} may not send {kind.name}", received)
        elif kind is Kind.GOODBYE:
            self.state = State.CLOSED

    def _handshake(self, kind: Kind, sender: Role, received: bool) -> None:
        if sender == "client" and kind is Kind.HELLO and not self._sent_or_got_hello(received):
            self._mark_hello(received)
        elif sender == "server" and kind in (Kind.WELCOME, Kind.FAILURE) and self._hello_done():
            self.state = State.OPEN if kind is Kind.WELCOME else State.CLOSED
        else:
            self._refuse(f"{kind.name} from the {sender} during the handshake", received)

    def _sent_or_got_hello(self, received: bool) -> bool:
        return self._got_hello if received else self._sent_hello

    def _mark_hello(self, received: bool) -> None:
        if received:
            self._got_hello = True
        else:
            self._sent_hello = True

    def _hello_done(self) -> bool:
        return self._got_hello or self._sent_hello

    def _refuse(self, problem: str, received: bool) -> None:
        if received:
            raise self._fail(self._problem(problem))
        raise ProtocolError(PROTOCOL, problem)

    def _problem(self, problem: str) -> ProtocolError:
        return ProtocolError(PROTOCOL, problem)

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._error = error
        self.state = State.CLOSED
        return error


def encode(frame: Frame, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """The bytes of ``frame`` whatever the connection's state: for a last ``FAILURE`` after
    the peer broke the protocol (``NativeCodec.send`` would refuse it then)."""
    if not isinstance(frame.message, PAYLOADS[frame.kind]):
        raise ProtocolError(PROTOCOL, f"a {frame.kind.name} frame cannot carry that message")
    if not 0 <= frame.correlation < 2**32:
        raise ProtocolError(PROTOCOL, f"correlation id {frame.correlation} is not a u32")
    payload = _ENCODER.encode(frame.message)
    length = HEADER_SIZE - 4 + len(payload)
    if length > max_frame_bytes:
        raise ProtocolError(
            PROTOCOL, f"frame of {length} bytes exceeds the limit of {max_frame_bytes}"
        )
    return HEADER.pack(length, frame.kind, frame.correlation) + payload


def negotiate(hello: m.Hello) -> int | None:
    """The newest version both sides speak, or None."""
    common = [v for v in hello.versions if v in VERSIONS]
    return max(common) if common else None
