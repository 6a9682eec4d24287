"""The native protocol, sans-IO: bytes in, events out; events in, bytes out.

A frame, little-endian (docs/protocol.md has the same table)::

    offset size field
    0      4    u32 length       bytes after this field: 5 + payload; at most max_frame_bytes
    4      1    u8  kind         Kind below
    5      4    u32 correlation  a request's id; its response carries the same; a Deliveries
                                 or Credit frame carries its Subscribe's id; 0 otherwise
    9      ...      payload      MessagePack, the struct of the kind (messages.py)

A connection starts with the client's ``HELLO`` (the versions it speaks) and the server's
``WELCOME`` (the version chosen, the server's limits) or ``FAILURE`` (none in common, or the
client may not connect). From version 4 the ``WELCOME`` may require authentication: the client
then sends ``AUTH`` and the server answers ``AUTH_CHALLENGE`` (the client sends the next
``AUTH``), ``AUTH_OK`` (authenticated) or ``FAILURE`` (not, and closed), strictly in turn.
Then the client sends requests, any number before the first answer (pipelining); the server
answers each with a ``RESPONSE`` or a ``FAILURE`` of the same correlation id, in any order.
``PING`` is answered with ``PONG``; ``GOODBYE`` ends the connection. ``TURNS`` is that
paragraph as a table.

    codec = NativeCodec(role="server")
    codec.receive_data(chunk)
    while (event := codec.next_event()) is not NEED_DATA:
        ...                                  # a Frame: its kind, correlation and message
    wire = codec.send(Frame(Kind.RESPONSE, 7, Done()))

Anything malformed — a bad length, an unknown kind, a payload that is not the kind's struct, a
field the connection's version does not have, a frame out of turn — raises ``ProtocolError``
and the connection is done: ``next_event`` keeps raising it. One exception: on an open
connection, a server's ``REQUEST`` whose payload is MessagePack but no request (an unknown
field, a mistyped value, a missing one) is a frame carrying ``Unreadable``
(unreadable.py), which the server answers ``invalid_request``; the connection goes on.
The codec never calls back into the connection and never touches a socket.
"""

from __future__ import annotations

import enum
import struct
import typing
from collections.abc import Callable
from typing import Any, Final, Literal, NamedTuple

import msgspec

from roost.errors import ProtocolError
from roost.protocols._buffer import ReceiveBuffer
from roost.protocols.native import messages as m
from roost.protocols.native.unreadable import unreadable

PROTOCOL = "roost"
#: Protocol versions spoken, oldest first (docs/protocol.md says what each adds); a client says
#: which it speaks in ``HELLO`` and uses a newer operation only if ``WELCOME`` chose its version.
VERSIONS: Final = (1, 2, 3, 4, 5, 6, 7, 8)
HEADER = struct.Struct("<IBI")
HEADER_SIZE = HEADER.size  # 9
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Frames before the connection is open (HELLO, WELCOME, the AUTH exchange) are small; a peer
#: not yet authenticated must not make us hold a 16 MiB frame.
MAX_HANDSHAKE_FRAME_BYTES = 64 * 1024


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
    AUTH = 11
    AUTH_CHALLENGE = 12
    AUTH_OK = 13
    BLOCKED = 14
    UNBLOCKED = 15


#: Frame kinds added after version 1 that the turn table alone does not gate (the AUTH kinds
#: come only after a version-4 WELCOME asked for them), and the version that added each.
KIND_ADDED_IN: Final = {Kind.BLOCKED: 5, Kind.UNBLOCKED: 5}


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
    Kind.AUTH: m.Auth,
    Kind.AUTH_CHALLENGE: m.AuthChallenge,
    Kind.AUTH_OK: m.AuthOk,
    Kind.BLOCKED: m.Blocked,
    Kind.UNBLOCKED: m.Empty,
}
#: Which kinds each side may send once the connection is open.
SENT_BY: dict[Role, frozenset[Kind]] = {
    "client": frozenset({Kind.REQUEST, Kind.CREDIT, Kind.PING, Kind.PONG, Kind.GOODBYE}),
    "server": frozenset({
        Kind.RESPONSE, Kind.FAILURE, Kind.DELIVERIES, Kind.PING, Kind.PONG, Kind.GOODBYE,
        Kind.BLOCKED, Kind.UNBLOCKED,
    }),
}  # fmt: skip
#: ``Kind(number)`` costs ~1 us (the enum's lookup machinery); a dict of ints does not.
_KIND_OF: dict[int, Kind] = {kind.value: kind for kind in Kind}
#: ``PAYLOADS`` as sets of concrete classes: ``isinstance`` against a union of 33 request
#: structs cost ~3 us a frame, which over 1,000 queues (small frames, many) was per push.
_PAYLOAD_TYPES: dict[Kind, frozenset[type]] = {
    kind: frozenset(typing.get_args(payload) or (payload,)) for kind, payload in PAYLOADS.items()
}
_DECODERS: dict[Kind, msgspec.msgpack.Decoder[Any]] = {
    kind: msgspec.msgpack.Decoder(payload) for kind, payload in PAYLOADS.items()
}
_ENCODER = msgspec.msgpack.Encoder()


class State(enum.Enum):
    HANDSHAKE = "in the handshake"
    AUTHENTICATING = "authenticating"  # version 4: after a WELCOME that requires it
    OPEN = "open"
    CLOSED = "closed"


class Step(enum.Enum):
    """Where a connection is, finer than ``State``: whose turn it is in the handshake."""

    BEFORE_HELLO = "before hello"
    AFTER_HELLO = "after hello"
    AUTH_CLIENT = "auth, the client's turn"  # the client sends the next AUTH
    AUTH_SERVER = "auth, the server's turn"  # an AUTH waits for its answer
    OPEN = "open"
    CLOSED = "closed"


STATE_OF: Final = {
    Step.BEFORE_HELLO: State.HANDSHAKE,
    Step.AFTER_HELLO: State.HANDSHAKE,
    Step.AUTH_CLIENT: State.AUTHENTICATING,
    Step.AUTH_SERVER: State.AUTHENTICATING,
    Step.OPEN: State.OPEN,
    Step.CLOSED: State.CLOSED,
}


def _after_welcome(welcome: m.Welcome) -> Step:
    return Step.AUTH_CLIENT if welcome.auth_required else Step.OPEN


#: (step, sender, kind) -> the step it leads to, or a function of the frame's message that
#: says which (a WELCOME opens the connection or starts authentication). Anything not in the
#: table is refused: received, it fails the connection; sent, it is our own bug.
TURNS: dict[tuple[Step, Role, Kind], Step | Callable[[Any], Step]] = {
    (Step.BEFORE_HELLO, "client", Kind.HELLO): Step.AFTER_HELLO,
    (Step.AFTER_HELLO, "server", Kind.WELCOME): _after_welcome,
    (Step.AFTER_HELLO, "server", Kind.FAILURE): Step.CLOSED,
    (Step.AUTH_CLIENT, "client", Kind.AUTH): Step.AUTH_SERVER,
    (Step.AUTH_SERVER, "server", Kind.AUTH_CHALLENGE): Step.AUTH_CLIENT,
    (Step.AUTH_SERVER, "server", Kind.AUTH_OK): Step.OPEN,
    # Refused, or out of time, whichever side's turn it was; or the client gives up.
    **{
        (step, "server", Kind.FAILURE): Step.CLOSED for step in (Step.AUTH_CLIENT, Step.AUTH_SERVER)
    },
    **{
        (step, "client", Kind.GOODBYE): Step.CLOSED for step in (Step.AUTH_CLIENT, Step.AUTH_SERVER)
    },
    **{(Step.OPEN, role, kind): Step.OPEN for role in SENT_BY for kind in SENT_BY[role]},
    (Step.OPEN, "client", Kind.GOODBYE): Step.CLOSED,
    (Step.OPEN, "server", Kind.GOODBYE): Step.CLOSED,
}

#: The newest version that added a field to some struct, or a message: older connections
#: trim and check.
_NEWEST_FIELD: Final = max(
    *(v for added in m.ADDED_IN.values() for v in added.values()), *m.MESSAGE_ADDED_IN.values()
)


class NativeCodec:
    def __init__(self, role: Role, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.role: Role = role
        self.peer: Role = "server" if role == "client" else "client"
        self.max_frame_bytes = max_frame_bytes
        self.step = Step.BEFORE_HELLO
        #: The size on the wire of the frame ``next_event`` returned last (header included).
        self.frame_bytes = 0
        #: The version the WELCOME chose (None before it): which fields frames may carry.
        self.version: int | None = None
        self._buffer = ReceiveBuffer(PROTOCOL, max_frame_bytes + HEADER_SIZE)
        self._error: ProtocolError | None = None
        self._peer_closed = False

    @property
    def state(self) -> State:
        return STATE_OF[self.step]

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as frames."""
        return len(self._buffer)

    @property
    def frame_pending(self) -> bool:
        """Bytes of the next frame are buffered but not all of it: a frame is arriving."""
        buffered = len(self._buffer)
        header = self._buffer.unpack(HEADER)
        return buffered > 0 and (header is None or buffered < 4 + header[0])

    @property
    def failed(self) -> bool:
        """The peer broke the protocol: every further call raises that error."""
        return self._error is not None

    def discard(self) -> None:
        """Drop what is buffered: the connection is over, and a frame it cut short may be
        megabytes. Frames already buffered are lost; nothing more may be received."""
        self._buffer.clear()
        self._peer_closed = True
        self.step = Step.CLOSED

    # -- receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes from the peer. An empty chunk means the peer closed the connection."""
        if self._error is not None:
            raise self._error
        if not data:
            # Frames already buffered are still delivered; with none, it is over at once.
            self._peer_closed = True
            if not len(self._buffer):
                self.step = Step.CLOSED
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
        limit = self.max_frame_bytes
        if self.step is not Step.OPEN:
            limit = min(limit, MAX_HANDSHAKE_FRAME_BYTES)
        if not HEADER_SIZE - 4 <= length <= limit:
            raise self._fail(
                self._problem(self._stranger() or f"frame length {length} (limit {limit})")
            )
        if len(self._buffer) < 4 + length:
            return self._end_of_data()
        try:
            kind = _KIND_OF.get(kind_number)
            if kind is None:
                raise ValueError(f"{kind_number} is not a valid Kind")
            decode: Callable[[memoryview], Any] = _DECODERS[kind].decode
            if kind is Kind.REQUEST and self.role == "server" and self.step is Step.OPEN:
                decode = _decode_request
            message = self._buffer.decode(4 + length, HEADER_SIZE, decode)
            check_version(message, _version_of(message, self.version))
        except (ValueError, msgspec.DecodeError, RecursionError) as e:
            # RecursionError: a payload nested thousands deep must not escape as a crash.
            raise self._fail(self._problem(f"bad frame of kind {kind_number}: {e}")) from None
        except ProtocolError as e:
            raise self._fail(e) from None
        self._take_turn(kind, message, received=True)
        self.frame_bytes = 4 + length
        return Frame(kind, correlation, message)

    # -- sending --------------------------------------------------------------------------

    def send(self, frame: Frame) -> bytes:
        """The bytes of ``frame``; raises ``ProtocolError`` for a frame this side may not send
        now (our own mistake, so the connection is not failed for it, nor its state moved)."""
        wire = encode(frame, self.max_frame_bytes, self.version)
        self._take_turn(frame.kind, frame.message, received=False)
        return wire

    def send_parts(self, frame: Frame) -> tuple[bytes, bytes]:
        """``send`` as its header and its payload, not joined: a frame of large values goes
        to the socket as two buffers of one write (``writelines``) instead of being copied
        once more to put its 9 bytes of header in front."""
        parts = encode_parts(frame, self.max_frame_bytes, self.version)
        self._take_turn(frame.kind, frame.message, received=False)
        return parts

    def _end_of_data(self) -> _NeedData:
        if not self._peer_closed:
            return NEED_DATA
        if len(self._buffer):
            ended = f"the stream ended inside a frame ({len(self._buffer)} bytes)"
            raise self._fail(self._problem(self._stranger() or ended))
        self.step = Step.CLOSED
        return NEED_DATA

    # -- the table of turns ---------------------------------------------------------------

    def _take_turn(self, kind: Kind, message: msgspec.Struct, received: bool) -> None:
        sender: Role = self.peer if received else self.role
        after = TURNS.get((self.step, sender, kind))
        added = KIND_ADDED_IN.get(kind)
        if after is not None and added is not None and (self.version or 0) < added:
            problem = (
                f"{kind.name} needs protocol version {added}; the connection speaks {self.version}"
            )
            if received:
                raise self._fail(self._problem(problem))
            raise ProtocolError(PROTOCOL, problem)
        if after is None:
            if self.step is Step.CLOSED:
                problem = f"{kind.name} after the connection closed"
            else:
                problem = (
                    f"the {sender} may not send {kind.name} while {self.state.value} "
                    f"({self.step.value})"
                )
            if received:
                raise self._fail(self._problem(problem))
            raise ProtocolError(PROTOCOL, problem)
        if kind is Kind.WELCOME:
            self.version = message.version  # type: ignore[attr-defined]
        self.step = after if isinstance(after, Step) else after(message)

    def _stranger(self) -> str | None:
        """What the peer is, when its first bytes show it speaks another protocol: the usual
        mistake is a client pointed at the admin port, or at a TLS listener without TLS."""
        if self.step not in (Step.BEFORE_HELLO, Step.AFTER_HELLO):
            return None
        head = self._buffer.head(8)
        if head.startswith(b"HTTP/"):
            return (
                "the peer is an HTTP server, not Roost's native protocol (the admin port? "
                "the native port is 7420 by default)"
            )
        if head[:1] == b"\x15" and head[1:2] == b"\x03":
            return "the peer speaks TLS: connect with roosts:// (and its CA)"
        if head.startswith((b"GET ", b"POST", b"HEAD", b"PUT ")):
            return "the peer sent an HTTP request: this is Roost's native port, not its admin API"
        if head[:1] == b"\x16" and head[1:2] == b"\x03":
            return "the peer opened a TLS handshake: this listener speaks plain TCP (no TLS)"
        return None

    def _problem(self, problem: str) -> ProtocolError:
        return ProtocolError(PROTOCOL, problem)

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._error = error
        self.step = Step.CLOSED
        return error


def _decode_request(payload: memoryview) -> msgspec.Struct:
    """A request, or ``Unreadable`` for MessagePack that is no request: the frame's length
    kept the stream in step, so that is the request's failure, not the connection's."""
    try:
        request: msgspec.Struct = _DECODERS[Kind.REQUEST].decode(payload)
    except msgspec.ValidationError as e:
        refused = unreadable(payload, e)
        if refused is None:
            raise
        return refused
    return request


def encode(
    frame: Frame, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, version: int | None = None
) -> bytes:
    """The bytes of ``frame`` whatever the connection's state: for a last ``FAILURE`` after
    the peer broke the protocol (``NativeCodec.send`` would refuse it then). A struct is sent
    with the fields its ``version`` has (``messages.ADDED_IN``): by default a ``WELCOME``'s
    own version, else the newest."""
    header, payload = encode_parts(frame, max_frame_bytes, version)
    return header + payload


def encode_parts(
    frame: Frame, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, version: int | None = None
) -> tuple[bytes, bytes]:
    """``encode``, as the frame's header and its payload (their concatenation is the frame)."""
    message = frame.message
    if type(message) not in _PAYLOAD_TYPES[frame.kind] and not isinstance(
        message, PAYLOADS[frame.kind]
    ):
        raise ProtocolError(PROTOCOL, f"a {frame.kind.name} frame cannot carry that message")
    if not 0 <= frame.correlation < 2**32:
        raise ProtocolError(PROTOCOL, f"correlation id {frame.correlation} is not a u32")
    payload = _ENCODER.encode(_in_version(frame.message, _version_of(frame.message, version)))
    length = HEADER_SIZE - 4 + len(payload)
    if length > max_frame_bytes:
        raise ProtocolError(
            PROTOCOL, f"frame of {length} bytes exceeds the limit of {max_frame_bytes}"
        )
    return HEADER.pack(length, frame.kind, frame.correlation), payload


# -- fields per version -------------------------------------------------------------------


def _version_of(message: msgspec.Struct, version: int | None) -> int:
    """The version ``message`` goes in on a connection of ``version`` (None: not agreed yet):
    a WELCOME's own, the one it chooses."""
    if isinstance(message, m.Welcome):
        return message.version
    return max(VERSIONS) if version is None else version


class _Added(NamedTuple):
    version: int
    name: str
    position: int
    default: Any


def _added_fields(cls: type[msgspec.Struct], added: dict[str, int]) -> list[_Added]:
    """The fields of ``cls`` added after version 1, checked to be trailing, in version order,
    with defaults: what makes trimming them off the array correct."""
    fields = msgspec.structs.fields(cls)
    found: list[_Added] = []
    for position, field in enumerate(fields):
        if field.name not in added:
            assert not found, f"{cls.__name__}.{field.name} follows an added field"
            continue
        assert found == [] or found[-1].version <= added[field.name], cls.__name__
        default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
        assert default is not msgspec.NODEFAULT, f"{cls.__name__}.{field.name} needs a default"
        found.append(_Added(added[field.name], field.name, position, default))
    return found


_ADDED: Final[dict[type[msgspec.Struct], list[_Added]]] = {
    cls: _added_fields(cls, added) for cls, added in m.ADDED_IN.items()
}
#: How many fields each struct of ``_ADDED`` has, counted once: ``msgspec.structs.fields``
#: resolves the type hints on every call (~90 µs), and every WELCOME, FAILURE and ack needs it.
_FIELD_COUNTS: Final[dict[type[msgspec.Struct], int]] = {
    cls: len(msgspec.structs.fields(cls)) for cls in _ADDED
}


def _in_version(message: msgspec.Struct, version: int) -> msgspec.Struct | tuple[Any, ...]:
    """``message`` as ``version`` has it: the struct, or the array of its fields without those
    added later (which must hold their defaults: dropping a value would change the meaning),
    nor trailing added fields that hold their defaults whatever the version (a field left at
    its default is as good as absent, and any peer decodes the shorter array: a FAILURE
    before a version is agreed reaches an old client intact)."""
    added = _ADDED.get(type(message))
    if added is None:
        if version < _NEWEST_FIELD and type(message) in m.MESSAGE_ADDED_IN:
            check_version(message, version)
        return message
    if version < _NEWEST_FIELD:
        check_version(message, version)
    keep = count = _FIELD_COUNTS[type(message)]
    for field in reversed(added):
        if field.version > version or getattr(message, field.name) == field.default:
            keep = field.position
        else:
            break
    if keep == count:
        return message
    fields = msgspec.structs.astuple(message)[:keep]
    tag = message.__struct_config__.tag  # a tagged struct's array starts with its tag
    return fields if tag is None else (tag, *fields)


def check_version(message: msgspec.Struct, version: int) -> None:
    """Raise ``ProtocolError`` if ``message`` carries a value in a field ``version`` lacks
    (a field left at its default is as good as absent)."""
    if version >= _NEWEST_FIELD:
        return
    since = m.MESSAGE_ADDED_IN.get(type(message))
    if since is not None and since > version:
        raise ProtocolError(
            PROTOCOL,
            f"{type(message).__name__} needs protocol version {since}; the connection "
            f"speaks {version}",
        )
    for added in _ADDED.get(type(message), ()):
        if added.version > version and getattr(message, added.name) != added.default:
            raise ProtocolError(
                PROTOCOL,
                f"{type(message).__name__}.{added.name} needs protocol version "
                f"{added.version}; the connection speaks {version}",
            )


def negotiate(hello: m.Hello) -> int | None:
    """The newest version both sides speak, or None."""
    common = [v for v in hello.versions if v in VERSIONS]
    return max(common) if common else None
