"""Who is asking, and what they may do: principals and their grants.

A ``Principal`` is what authentication yields and what the door checks every command against.
Its grants name an operation and a pattern of resource names:

    Grant("publish", "topic", "orders.*")     publish to orders.eu, orders.us
    Grant("consume", "queue", "emails")       receive, ack, nack on the queue emails
    Grant("manage", "exchange", "#")          declare, bind, delete every exchange
    Grant("monitor", "broker", "")            read stats, list and describe everything

Operations on a named resource are ``publish``, ``consume`` and ``manage``; ``admin`` and
``monitor`` are broker-wide. ``admin`` may do everything (users, grants, and every operation);
``monitor`` may read everything and change nothing.

Resource kinds: ``topic``, ``queue``, ``exchange``, ``group``. A queue is a topic with a
subscription of the same name, so a ``queue`` grant covers both the topic and the group of
that name: ``consume`` on ``queue:emails`` is what ``receive("emails")`` needs. Consuming a
subscription ``S`` of topic ``T`` needs ``consume`` on the topic and on the group (as in Kafka:
Read on the topic and on the group).

Patterns are topic-exchange patterns over dot-separated words: ``*`` is one word, ``#`` zero
or more (``#`` alone is every name); other words use the characters of names (letters, digits,
``_`` and ``-``), so a pattern that could never match a name is refused when granted.

A principal never changes: its decisions are cached, and a grant change makes ``Identities``
build new principals. Whoever keeps one (a connection) keeps its grants until it asks
``Identities.principal`` again. Anything not granted is refused: an unknown operation or
kind is a "no", never an error.
"""

from __future__ import annotations

import re
from typing import Final, Literal

import msgspec

from roost.core.patterns import TopicTrie, check_pattern
from roost.errors import InvalidConfig, InvalidPattern, NotAuthorised

Operation = Literal["publish", "consume", "manage", "admin", "monitor"]
ResourceKind = Literal["topic", "queue", "exchange", "group", "broker"]
OPERATIONS: Final = ("publish", "consume", "manage", "admin", "monitor")
NAMED_OPERATIONS: Final = frozenset({"publish", "consume", "manage"})
BROKER_OPERATIONS: Final = frozenset({"admin", "monitor"})
RESOURCE_KINDS: Final = ("topic", "queue", "exchange", "group")
#: What a grant on a kind covers: a queue is a topic and a group of one name.
_COVERS: Final[dict[str, tuple[str, ...]]] = {
    "topic": ("topic",),
    "queue": ("topic", "group"),
    "exchange": ("exchange",),
    "group": ("group",),
}
#: A literal word of a pattern: what names are made of, less the dots between words.
_WORD = re.compile(r"[A-Za-z0-9_-]*")
#: As long as the longest name (storage.config.NAME_RULE).
MAX_PATTERN_CHARS = 249
PATTERN_RULE = "words of A-Z a-z 0-9 _ - (or * and #) separated by dots, e.g. orders.* or #"


class Grant(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One permission: ``operation`` on the resources of ``kind`` whose names match
    ``pattern`` (``kind`` is ``"broker"`` and ``pattern`` empty for ``admin``/``monitor``)."""

    operation: str
    kind: str = "broker"
    pattern: str = ""

    def check(self) -> Grant:
        """This grant, or ``InvalidConfig`` / ``InvalidPattern`` naming what is wrong with it."""
        if self.operation in BROKER_OPERATIONS:
            if self.kind != "broker" or self.pattern:
                raise InvalidConfig("grant", str(self), f"{self.operation} is broker-wide")
            return self
        _check_operation(self.operation)
        if self.kind not in _COVERS:
            raise InvalidConfig("resource kind", self.kind, f"one of {list(RESOURCE_KINDS)}")
        words = check_pattern(self.pattern)  # wildcards are whole words
        if (
            not self.pattern
            or len(self.pattern) > MAX_PATTERN_CHARS
            or not all(w in ("*", "#") or _WORD.fullmatch(w) for w in words)
        ):
            raise InvalidPattern(self.pattern, PATTERN_RULE)
        return self

    @classmethod
    def parse(cls, operation: str, resource: str = "") -> Grant:
        """``Grant.parse("publish", "topic:orders.*")``; ``Grant.parse("admin")``.

        ``InvalidConfig`` (an unknown operation, a resource not shaped ``KIND:PATTERN``, a
        broker-wide operation given a resource) or ``InvalidPattern``."""
        _check_operation(operation)
        if operation in BROKER_OPERATIONS and resource in ("", "broker"):
            return cls(operation).check()
        kind, colon, pattern = resource.partition(":")
        if not colon:
            raise InvalidConfig(
                "resource", resource, "KIND:PATTERN, e.g. topic:orders.* or queue:emails"
            )
        return cls(operation, kind, pattern).check()

    def __str__(self) -> str:
        if self.kind == "broker":
            return self.operation
        return f"{self.operation} {self.kind}:{self.pattern}"


class Principal:
    """An authenticated user (or the trusted embedded caller) and what it may do."""

    def __init__(
        self, name: str, grants: tuple[Grant, ...] = (), admin: bool = False, generation: str = ""
    ) -> None:
        self.name = name
        #: Which incarnation of the user this is: a user deleted and made again under the same
        #: name, or given a new password, is another generation, and what the old one logged
        #: in (a connection, a session) is not theirs.
        self.generation = generation
        self.admin = admin or any(g.operation == "admin" for g in grants)
        self.monitor = self.admin or any(g.operation == "monitor" for g in grants)
        self.grants = grants
        #: (operation, kind) -> the patterns granting it, matched together.
        patterns: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for grant in grants:
            if grant.operation in NAMED_OPERATIONS:
                for kind in _COVERS.get(grant.kind, ()):  # an unchecked grant grants nothing
                    patterns.setdefault((grant.operation, kind), []).append(
                        (grant.pattern, grant.pattern)
                    )
        self._tries = {key: TopicTrie(bindings) for key, bindings in patterns.items()}
        self._decided: dict[tuple[str, str, str], bool] = {}

    def __repr__(self) -> str:
        return f"Principal({self.name!r})"

    def may(self, operation: str, kind: str, name: str) -> bool:
        """Whether this principal may do ``operation`` on the ``kind`` named ``name``;
        ``kind`` ``"broker"`` asks about ``admin`` and ``monitor``."""
        if self.admin:
            return True
        if kind == "broker":
            return operation == "monitor" and self.monitor
        if kind == "queue":  # a queue is its topic and its group: the grant must cover both
            return self.may(operation, "topic", name) and self.may(operation, "group", name)
        key = (operation, kind, name)
        decided = self._decided.get(key)
        if decided is None:
            trie = self._tries.get((operation, kind))
            decided = trie is not None and bool(trie.match(name))
            if len(self._decided) < _MAX_DECISIONS:
                self._decided[key] = decided
        return decided

    def sees(self, kind: str, name: str) -> bool:
        """Whether this principal may read about the resource: ``monitor``, or any grant on
        it (what ``list_*`` shows and ``describe`` answers)."""
        return self.monitor or any(self.may(op, kind, name) for op in NAMED_OPERATIONS)

    def check(self, operation: str, kind: str, name: str = "") -> None:
        """Raise ``NotAuthorised`` unless ``may``."""
        if not self.may(operation, kind, name):
            resource = "the broker" if kind == "broker" else f"{kind} {name!r}"
            raise NotAuthorised(self.name, operation, resource)


def _check_operation(operation: str) -> None:
    if operation not in OPERATIONS:
        raise InvalidConfig("operation", operation, f"one of {', '.join(OPERATIONS)}")


#: Decisions cached per principal at most: a client cycling through names cannot grow it.
_MAX_DECISIONS = 4096

#: The caller of an embedded broker owns the process: it may do everything.
TRUSTED: Final = Principal("embedded", admin=True)
#: A listener with no users defined serves everyone on loopback as an administrator
#: (server/exposure.py: elsewhere only with ``allow_anonymous``).
ANONYMOUS: Final = Principal("anonymous", admin=True)
#: Who a connection or request is before it authenticates: it may do nothing.
NOBODY: Final = Principal("unauthenticated")
