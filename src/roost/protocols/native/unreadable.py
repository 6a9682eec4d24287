"""A request whose frame is sound but whose payload is no request: answered, not fatal.

The frame's length said where the request ends, so the stream is still in step: a payload
that is valid MessagePack but not any request's struct (an unknown field in a settings map,
a string where a number goes, a field missing) is the request's fault, not the
connection's. The server codec hands it on as ``Unreadable``; the session
answers it ``invalid_request`` and goes on serving the connection. Bytes that are not
MessagePack at all, a payload not led by a known operation's number, and anything wrong in
any other kind of frame still end the connection (``ProtocolError``): the peer is not
speaking the protocol.

msgspec says where it stopped as a path of positions (``$[2].policy``); a request is an
array, so positions are turned back into field names (``CreateQueue: ... - at
`options.policy```), the names a client's user wrote.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import inspect as mi

from roost.protocols.native import messages as m

#: One step of a msgspec path: ``[3]``, ``[...]`` (a dict's value) or ``.name``.
_STEP = re.compile(r"\[(\d+|\.\.\.)\]|\.([^.\[]+)")
#: Where msgspec quotes the path: the last backticked token that starts with ``$``.
_PATH = re.compile(r"`(\$[^`]*)`")
_BY_TAG: dict[object, type[m.Request]] = {
    cls.__struct_config__.tag: cls for cls in m.AnyRequest.__args__
}


class Unreadable(msgspec.Struct, frozen=True):
    """What a server codec makes of a ``REQUEST`` frame whose payload is not a request.
    Never sent: ``operation`` is the request's name when its tag was known (else ""),
    ``problem`` says what is wrong and names the field."""

    operation: str
    problem: str


def unreadable(payload: memoryview | bytes, error: msgspec.ValidationError) -> Unreadable | None:
    """``error`` (decoding ``payload`` as a request) said with the request's field names; None
    when ``payload`` is not an array led by a known operation's number: no request at all."""
    cls = _request_class(payload)
    if cls is None:
        return None
    problem = _PATH.sub(lambda found: f"`{field_path(cls, found.group(1))}`", str(error))
    return Unreadable(cls.__name__, f"{cls.__name__}: {problem}")


def _request_class(payload: memoryview | bytes) -> type[m.Request] | None:
    # What msgspec cannot decode at all (nested thousands deep: RecursionError; a string
    # that is not UTF-8: a ValueError) raises here, and the codec fails the frame for it.
    value = msgspec.msgpack.decode(payload)
    if not isinstance(value, list) or not value:
        return None
    tag = value[0]
    return _BY_TAG.get(tag) if isinstance(tag, int) and not isinstance(tag, bool) else None


def field_path(cls: type[msgspec.Struct], path: str) -> str:
    """msgspec's ``path`` into a value of ``cls`` (``$[2].policy``) with field names for
    positions (``options.policy``); a step it cannot follow is kept as it was."""
    where: list[str] = []
    info: Any = mi.type_info(cls)
    for position, name in _STEP.findall(path.removeprefix("$")):
        info = _without_none(info)
        if isinstance(info, mi.StructType) and info.array_like and position.isdigit():
            index = int(position) - (info.tag is not None)  # a tagged array starts with it
            if index < 0:
                where.append("operation")
                info = None
            elif index < len(info.fields):
                where.append(info.fields[index].name)
                info = info.fields[index].type
            else:
                where.append(f"[{position}]")
                info = None
        elif isinstance(info, mi.StructType) and name:
            field = next((f for f in info.fields if f.encode_name == name), None)
            where.append(name)
            info = field.type if field is not None else None
        elif isinstance(info, mi.ListType | mi.TupleType | mi.VarTupleType) and position:
            where[-1:] = [f"{where[-1] if where else ''}[{position}]"]
            info = _item_type(info, position)
        elif isinstance(info, mi.DictType):
            where[-1:] = [f"{where[-1] if where else ''}[...]"]
            info = info.value_type
        else:
            where.append(f"[{position}]" if position else name)
            info = None
    return ".".join(where) if where else "the request"


def _without_none(info: Any) -> Any:
    """The one type a union allows besides None (``X | None``), or the union itself."""
    if isinstance(info, mi.UnionType):
        rest = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return info


def _item_type(info: Any, position: str) -> Any:
    if isinstance(info, mi.TupleType):
        index = int(position) if position.isdigit() else -1
        return info.item_types[index] if 0 <= index < len(info.item_types) else None
    return info.item_type
