"""Exchanges: route a published message to topic names, as RabbitMQ's exchanges do.

An exchange has a kind, bindings to topics, and maybe an alternate exchange. A binding matches:

    direct    when its key equals the routing key
    fanout    always
    topic     when its pattern matches the routing key (``*`` one word, ``#`` zero or more)
    headers   when all (``match="all"``) or any (``match="any"``) of its headers are in the
              message with equal bytes; a header whose binding value is None need only be there
    hash      for one binding per message, by consistent hashing of the message key (of the
              routing key, UTF-8, when the key is None), each binding's share set by its weight

How each kind matches, exactly and fast, is in ``patterns.py``. Rules:

- ``route`` returns each matching topic once, sorted by name; a hash exchange returns one.
- When no binding matches, routing goes on in the alternate exchange, and in its alternate,
  with the same message; each exchange is tried at most once, so a cycle ends the chain. If
  nothing matches, ``route`` raises ``Unroutable`` naming the exchange published to.
- A missing alternate counts as none: ``declare`` may name one that does not exist yet (specs
  load in any order; a chain may be built back to front), and an exchange that is another's
  alternate may be deleted. Routing uses it again once it is declared again.
- Bindings are values: binding an equal spec twice is one binding (``bind`` returns False the
  second time); unbinding one that is not there changes nothing and returns False. A topic may
  be bound several times with different keys; it still gets a message once.
- Fields a kind does not use must keep their defaults: ``headers`` and ``match`` belong to
  headers exchanges, ``weight`` (1 to ``MAX_WEIGHT``) to hash exchanges. ``key`` decides routing
  for direct and topic exchanges only; elsewhere it just tells two bindings apart, as in
  RabbitMQ. Keys are at most ``MAX_KEY_BYTES`` UTF-8 bytes, an AMQP short string.
- Headers binding values are bytes; a str is taken and stored UTF-8 encoded (msgspec cannot
  tell ``str`` from ``bytes`` in JSON, so the persisted spec holds bytes). Empty ``headers``
  match every message with ``all`` and none with ``any``, as in RabbitMQ.
- The router knows no topics: it checks topic names, not that the topics exist.

Cost of ``route``: a dict lookup plus the exchange's matcher, built on the first route after a
binding change: a dict lookup (direct), a constant (fanout), a cached trie walk (topic), a pass
over the message's and the bindings' headers (headers), one blake2b and a bisect (hash).
Not thread-safe: the core runs on one event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

import msgspec

from roost.core.declares import differences
from roost.core.patterns import HashRing, HeaderRules, TopicTrie, check_pattern
from roost.errors import (
    ExchangeExists,
    InvalidConfig,
    InvalidPattern,
    UnknownExchange,
    Unroutable,
)
from roost.storage.config import check_name

ExchangeKind = Literal["direct", "fanout", "topic", "headers", "hash"]
KINDS: tuple[str, ...] = get_args(ExchangeKind)
#: Binding keys are AMQP short strings.
MAX_KEY_BYTES = 255
MAX_WEIGHT = 1000

#: A message's headers, as in a record: (name, value) pairs, names repeatable.
MessageHeaders = Sequence[tuple[str, bytes]]
#: (routing key, message headers, message key) -> topics, sorted.
_Route = Callable[[str, MessageHeaders, "bytes | None"], tuple[str, ...]]


class ExchangeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    kind: ExchangeKind
    #: Where unmatched messages go on; None or a missing exchange: nowhere (``Unroutable``).
    alternate: str | None = None


class BindingSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    exchange: str
    topic: str
    #: Direct: the routing key to match. Topic: the pattern. Others: only names the binding.
    key: str = ""
    #: Headers exchanges only: header name -> value (bytes; None: present with any value).
    headers: dict[str, bytes | None] | None = None
    match: Literal["all", "any"] = "all"
    #: Hash exchanges only: the binding's share of keys, relative to the others'.
    weight: int = 1


class Router:
    """Exchanges and their bindings, in memory; the broker persists the specs."""

    def __init__(self) -> None:
        self._exchanges: dict[str, _Exchange] = {}

    @classmethod
    def from_specs(
        cls, exchanges: Iterable[ExchangeSpec], bindings: Iterable[BindingSpec]
    ) -> Router:
        """Rebuild a router from persisted specs, checking them as ``declare``/``bind`` do."""
        router = cls()
        for exchange in exchanges:
            router.declare(exchange)
        for binding in bindings:
            router.bind(binding)
        return router

    def specs(self) -> tuple[list[ExchangeSpec], list[BindingSpec]]:
        """Everything ``from_specs`` needs: exchanges by name, then bindings as ``bindings()``."""
        return self.exchanges(), self.bindings()

    def declare(self, spec: ExchangeSpec) -> ExchangeSpec:
        """Create an exchange; an identical one already there is fine and returned.

        ``ExchangeExists`` naming what differs if the name is taken by a different kind or
        alternate;
        ``InvalidName`` / ``InvalidConfig`` for a bad name, kind or alternate.
        """
        _check_exchange(spec)
        existing = self._exchanges.get(spec.name)
        if existing is not None:
            found = differences(existing.spec, spec)
            if found:
                raise ExchangeExists(spec.name, found)
            return existing.spec
        self._exchanges[spec.name] = _Exchange(spec)
        return spec

    def delete(self, name: str) -> list[BindingSpec]:
        """Delete an exchange and its bindings, returned; ``UnknownExchange`` if missing.

        Exchanges naming it as their alternate keep the name and route as if it had none.
        """
        exchange = self._exchange(name)
        del self._exchanges[name]
        return [_copy(binding) for binding in exchange.bindings.values()]

    def exchanges(self) -> list[ExchangeSpec]:
        return [self._exchanges[name].spec for name in sorted(self._exchanges)]

    def bind(self, spec: BindingSpec) -> bool:
        """Add a binding; False if an equal one is already there (nothing changes).

        ``UnknownExchange``; ``InvalidName`` for the topic; ``InvalidPattern`` for a topic
        exchange's key; ``InvalidConfig`` for any other field.
        """
        exchange = self._exchange(spec.exchange)
        binding = _checked_binding(exchange.spec.kind, spec)
        identity = _identity(binding)
        if identity in exchange.bindings:
            return False
        exchange.bindings[identity] = binding
        exchange.changed()
        return True

    def unbind(self, spec: BindingSpec) -> bool:
        """Remove a binding; False if there was none equal to it (nothing changes).

        Checks the spec as ``bind`` does, so a malformed spec is an error, not a quiet False.
        """
        exchange = self._exchange(spec.exchange)
        identity = _identity(_checked_binding(exchange.spec.kind, spec))
        if exchange.bindings.pop(identity, None) is None:
            return False
        exchange.changed()
        return True

    def drop_topic(self, topic: str) -> list[BindingSpec]:
        """Remove every binding to ``topic`` (it is deleted), from every exchange; returns
        them. An exchange left without bindings routes nothing (``Unroutable``)."""
        dropped: list[BindingSpec] = []
        for exchange in self._exchanges.values():
            gone = [i for i, b in exchange.bindings.items() if b.topic == topic]
            dropped.extend(_copy(exchange.bindings.pop(identity)) for identity in gone)
            if gone:
                exchange.changed()
        return dropped

    def bindings(self, exchange: str | None = None) -> list[BindingSpec]:
        """The bindings of ``exchange`` (``UnknownExchange`` if missing), or of every exchange.

        Exchanges by name, each one's bindings in the order they were bound; header values
        as bytes. The specs are copies: changing them changes nothing here.
        """
        names = sorted(self._exchanges) if exchange is None else [self._exchange(exchange).name]
        return [_copy(b) for name in names for b in self._exchanges[name].bindings.values()]

    def route(
        self,
        exchange: str,
        routing_key: str,
        headers: MessageHeaders = (),
        key: bytes | None = None,
    ) -> list[str]:
        """The topics a message published to ``exchange`` goes to: never empty.

        ``UnknownExchange`` if ``exchange`` does not exist; ``Unroutable`` if neither it nor
        any exchange in its alternate chain has a matching binding.
        """
        current: _Exchange | None = self._exchange(exchange)
        tried: set[str] = set()
        while current is not None and current.name not in tried:
            topics = current.route(routing_key, headers, key)
            if topics:
                return list(topics)
            tried.add(current.name)
            alternate = current.spec.alternate
            current = None if alternate is None else self._exchanges.get(alternate)
        raise Unroutable(exchange, routing_key)

    def _exchange(self, name: str) -> _Exchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            raise UnknownExchange(name)
        return exchange


class _Exchange:
    """One exchange: its spec, bindings by identity (in binding order) and a lazy matcher."""

    __slots__ = ("_route", "bindings", "spec")

    def __init__(self, spec: ExchangeSpec) -> None:
        self.spec = spec
        self.bindings: dict[tuple[object, ...], BindingSpec] = {}
        #: Built from ``bindings`` on first use; None after every change.
        self._route: _Route | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def changed(self) -> None:
        self._route = None

    def route(
        self, routing_key: str, headers: MessageHeaders, key: bytes | None
    ) -> tuple[str, ...]:
        if self._route is None:
            self._route = _BUILDERS[self.spec.kind](list(self.bindings.values()))
        return self._route(routing_key, headers, key)


# -- checking specs -----------------------------------------------------------------------------


def _require(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise InvalidConfig(field, value, rule)


def _check_exchange(spec: ExchangeSpec) -> None:
    check_name("exchange", spec.name)
    _require(spec.kind in KINDS, "kind", spec.kind, "one of " + ", ".join(KINDS))
    if spec.alternate is not None:
        check_name("exchange", spec.alternate)
        _require(
            spec.alternate != spec.name, "alternate", spec.alternate, "not the exchange itself"
        )


def _checked_binding(kind: str, spec: BindingSpec) -> BindingSpec:
    """``spec`` checked against its exchange's kind; header values become bytes."""
    check_name("topic", spec.topic)
    _check_key(kind, spec.key)
    _check_weight(kind, spec.weight)
    if kind != "headers":
        rule = f"only headers exchanges use it, not {kind}"
        _require(spec.headers is None, "headers", spec.headers, rule)
        _require(spec.match == "all", "match", spec.match, rule)
        return spec
    _require(spec.match in ("all", "any"), "match", spec.match, "all or any")
    if not isinstance(spec.headers, dict):
        rule = "a dict of header name -> value ({} with match all: every message)"
        raise InvalidConfig("headers", spec.headers, rule)
    return msgspec.structs.replace(spec, headers=_header_args(spec.headers))


def _check_key(kind: str, key: object) -> None:
    if not isinstance(key, str):
        raise InvalidConfig("key", key, "a string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        rule = f"at most {MAX_KEY_BYTES} UTF-8 bytes"
        raise InvalidPattern(key, rule) if kind == "topic" else InvalidConfig("key", key, rule)
    if kind == "topic":
        check_pattern(key)


def _check_weight(kind: str, weight: object) -> None:
    if kind != "hash":
        _require(
            type(weight) is int and weight == 1,
            "weight",
            weight,
            "1: only hash exchanges use weights",
        )
    elif type(weight) is not int or not 1 <= weight <= MAX_WEIGHT:
        raise InvalidConfig("weight", weight, f"an integer from 1 to {MAX_WEIGHT}")


def _header_args(headers: dict[str, bytes | None]) -> dict[str, bytes | None]:
    """A copy of ``headers`` with str values UTF-8 encoded; names must be str."""
    args: dict[str, bytes | None] = {}
    for name, value in headers.items():
        _require(isinstance(name, str), "headers", headers, "header names are str")
        if isinstance(value, str):
            try:
                args[name] = value.encode()
            except UnicodeEncodeError as e:
                raise InvalidConfig("headers", headers, "str values must be valid UTF-8") from e
        elif value is None or isinstance(value, bytes):
            args[name] = value
        else:
            raise InvalidConfig("headers", headers, "values are bytes, str or None")
    return args


def _identity(binding: BindingSpec) -> tuple[object, ...]:
    headers = None if binding.headers is None else tuple(sorted(binding.headers.items()))
    return (binding.topic, binding.key, headers, binding.match, binding.weight)


def _copy(binding: BindingSpec) -> BindingSpec:
    """A copy the caller may change without changing the router."""
    if binding.headers is None:
        return binding
    return msgspec.structs.replace(binding, headers=dict(binding.headers))


# -- matchers: one builder per kind, from the bindings to a route function -----------------------


def _direct(bindings: list[BindingSpec]) -> _Route:
    by_key: dict[str, set[str]] = {}
    for binding in bindings:
        by_key.setdefault(binding.key, set()).add(binding.topic)
    topics = {key: tuple(sorted(names)) for key, names in by_key.items()}

    def route(routing_key: str, headers: MessageHeaders, key: bytes | None) -> tuple[str, ...]:
        return topics.get(routing_key, ())

    return route


def _fanout(bindings: list[BindingSpec]) -> _Route:
    topics = tuple(sorted({binding.topic for binding in bindings}))

    def route(routing_key: str, headers: MessageHeaders, key: bytes | None) -> tuple[str, ...]:
        return topics

    return route


def _topic(bindings: list[BindingSpec]) -> _Route:
    match = TopicTrie((binding.key, binding.topic) for binding in bindings).match

    def route(routing_key: str, headers: MessageHeaders, key: bytes | None) -> tuple[str, ...]:
        return match(routing_key)

    return route


def _headers(bindings: list[BindingSpec]) -> _Route:
    match = HeaderRules((b.match == "all", b.headers or {}, b.topic) for b in bindings).match

    def route(routing_key: str, headers: MessageHeaders, key: bytes | None) -> tuple[str, ...]:
        return match(headers)

    return route


def _hash(bindings: list[BindingSpec]) -> _Route:
    match = HashRing((b.topic, b.key, b.weight) for b in bindings).match

    def route(routing_key: str, headers: MessageHeaders, key: bytes | None) -> tuple[str, ...]:
        if key is None:
            key = routing_key.encode("utf-8", "surrogatepass")
        return match(key)

    return route


_BUILDERS: dict[str, Callable[[list[BindingSpec]], _Route]] = {
    "direct": _direct,
    "fanout": _fanout,
    "topic": _topic,
    "headers": _headers,
    "hash": _hash,
}
