"""The blocking client cannot drift from the async one: every public method and property of
``Client``, ``Delivery``, ``StreamMember`` and ``Producer`` has a twin on ``SyncBroker``,
``SyncDelivery``, ``SyncStreamMember`` and ``SyncProducer`` with the same parameters (names,
kinds, defaults) and the same types, resolved, where the async types map to the sync ones
(``Delivery`` -> ``SyncDelivery``, ``AsyncIterator`` -> ``Iterator``, ...)."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any

import pytest

from roost.client.api import Client, StreamMember, StreamReader
from roost.client.producer import Producer
from roost.client.subscriber import Delivery
from roost.client.sync import SyncBroker, SyncDelivery, SyncProducer, SyncStreamMember
from roost.core.model import Message

#: async type -> its blocking twin, in annotations.
TWINS: dict[Any, Any] = {
    Delivery: SyncDelivery,
    StreamMember: SyncStreamMember,
    collections.abc.AsyncIterator: collections.abc.Iterator,
    StreamReader: collections.abc.Iterator[list[Message]],
}
#: Public names with no blocking twin, and why.
NO_TWIN = {
    Client: {
        "aclose": "close() is its twin",
        "call": "the raw request call, for the client's own methods",
        "subscribe": "an async context manager; consume() is its blocking twin",
        "subscribe_stream": "the raw push stream under subscribe",
    },
    Producer: {"aclose": "close() is its twin", "start": "SyncBroker.producer() is its twin"},
    Delivery: {},
    StreamMember: {},
}
PAIRS = [
    (Client, SyncBroker),
    (Delivery, SyncDelivery),
    (StreamMember, SyncStreamMember),
    (Producer, SyncProducer),
]


def _twin(annotation: Any) -> Any:
    if isinstance(annotation, typing.TypeVar):
        return annotation.__name__  # each module has its own ``T``
    if annotation in TWINS:
        return _twin(TWINS[annotation])
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is None or not args:
        return annotation
    if origin in TWINS:
        origin = TWINS[origin]
    if origin is typing.Literal:
        return annotation
    twins = tuple(_twin(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return frozenset(twins)
    return (origin, twins)


def _public(cls: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and name not in NO_TWIN.get(cls, {})
    }


def _hints(function: Any) -> dict[str, Any]:
    return typing.get_type_hints(function)


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_every_public_name_has_a_blocking_twin(async_cls: type, sync_cls: type) -> None:
    missing = sorted(set(_public(async_cls)) - set(_public(sync_cls)))
    assert missing == [], f"{sync_cls.__name__} lacks {missing}"


def _methods(async_cls: type, sync_cls: type) -> list[Any]:
    return [
        pytest.param(name, value, getattr(sync_cls, name), id=f"{sync_cls.__name__}.{name}")
        for name, value in _public(async_cls).items()
        if callable(value) and not isinstance(value, property)
    ]


@pytest.mark.parametrize(
    ("name", "async_method", "sync_method"), [m for a, s in PAIRS for m in _methods(a, s)]
)
def test_each_twin_has_the_same_signature(name: str, async_method: Any, sync_method: Any) -> None:
    wanted = inspect.signature(async_method)
    got = inspect.signature(sync_method)
    as_seen = [(p.name, p.kind, p.default) for p in wanted.parameters.values()]
    assert [(p.name, p.kind, p.default) for p in got.parameters.values()] == as_seen, name
    async_hints, sync_hints = _hints(async_method), _hints(sync_method)
    for parameter, annotation in async_hints.items():
        assert _twin(sync_hints.get(parameter)) == _twin(annotation), f"{name}({parameter})"


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_properties_have_the_same_types(async_cls: type, sync_cls: type) -> None:
    for name, value in _public(async_cls).items():
        twin = getattr(sync_cls, name)
        if isinstance(value, property):
            assert isinstance(twin, property), name
            want = _hints(value.fget)["return"]
            assert _twin(_hints(twin.fget)["return"]) == _twin(want), name
        elif not callable(value):  # a slot, read as an attribute
            assert isinstance(twin, property), name
