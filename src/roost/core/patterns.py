"""How a message is matched against many bindings at once: topic patterns, header arguments
and a consistent-hash ring. Pure data structures on plain values; ``routing.py`` checks the
bindings and decides what the matches mean.

Topic patterns, as in RabbitMQ (AMQP 0-9-1):

- A routing key or a binding pattern is a list of words separated by ``.``. Words may be empty
  (``"a..b"`` is ``["a", "", "b"]``, ``"a."`` is ``["a", ""]``), and the empty string is the
  empty list, so the pattern ``""`` matches only the routing key ``""``.
- In a pattern ``*`` matches exactly one word and ``#`` zero or more words. They must be whole
  words: ``"a.b*"`` and ``"#x"`` are refused with ``InvalidPattern``. In a routing key they are
  ordinary words, matched only by wildcards.
- ``#`` alone matches every routing key, the empty one included; ``*`` never matches ``""``.

``TopicTrie``: each pattern is a path of words from the root; ``*`` and ``#`` are edges of
their own. Matching walks states ``(node, i)`` — "the first ``i`` words are consumed and we are
at ``node``" — from ``(root, 0)``: a literal or ``*`` edge consumes one word; entering a ``#``
node consumes none, and a ``#`` node may loop on itself consuming one word. A state is visited
once, so a match costs at most nodes x (words + 1) steps, whatever the number of ``#``
(``#.#`` is stored as ``#``). Callers should bound routing keys (AMQP: 255 bytes).
Results are cached per routing key (an LRU of ``CACHE_SIZE``); a trie is immutable, so a
binding change builds a new trie and the old cache goes with it.

``HeaderRules``: a rule matches when all (or any) of its headers are among the message's, with
equal bytes; a rule value of None only needs the name present. A message header name may repeat;
each of its values counts. Names are case-sensitive.

``HashRing``: each binding puts ``weight * POINTS_PER_WEIGHT`` 64-bit points on a ring, derived
with blake2b from (topic, key, weight) — never Python's ``hash()`` — so the same bindings give
the same ring in every process and Python version. A key goes to the owner of the first point
at or after blake2b(key), wrapping around. A new binding takes over only the keys that fall
just before its own points, about its share of the weight.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence

from roost.errors import InvalidPattern

#: Routing keys remembered per trie, with the topics they matched.
CACHE_SIZE = 4096
#: Longer routing keys are matched without the cache, so it cannot be filled with huge strings.
MAX_CACHED_KEY_CHARS = 255
#: Ring points per unit of weight: more points, shares closer to the weights, a bigger ring.
POINTS_PER_WEIGHT = 100
WILDCARD_RULE = "'*' and '#' must be whole words between dots"


def split_words(key: str) -> list[str]:
    """The words of a routing key or pattern: ``""`` has none, ``"a..b"`` has three."""
    return key.split(".") if key else []


def check_pattern(pattern: str) -> list[str]:
    """Return the words of ``pattern``, or raise ``InvalidPattern`` if a wildcard is not whole."""
    words = split_words(pattern)
    for word in words:
        if word not in ("*", "#") and ("*" in word or "#" in word):
            raise InvalidPattern(pattern, WILDCARD_RULE)
    return words


class _Node:
    __slots__ = ("children", "hash", "is_hash", "star", "topics")

    def __init__(self, is_hash: bool = False) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        #: Reached through a ``#`` edge: may consume any number of further words in place.
        self.is_hash = is_hash
        #: Topics whose pattern ends here.
        self.topics: set[str] = set()


class TopicTrie:
    """Many ``(pattern, topic)`` bindings, matched together; immutable once built.

    ``match`` returns each matching topic once, sorted by name. Patterns must already be valid
    (``check_pattern``); the constructor does not check them again.
    """

    def __init__(self, bindings: Iterable[tuple[str, str]]) -> None:
        self._root = _Node()
        for pattern, topic in bindings:
            self._insert(split_words(pattern), topic)
        self._cached = functools.lru_cache(maxsize=CACHE_SIZE)(self._walk)

    def match(self, routing_key: str) -> tuple[str, ...]:
        """The topics bound by a pattern that matches ``routing_key``, sorted; may be empty."""
        if len(routing_key) <= MAX_CACHED_KEY_CHARS:
            return self._cached(routing_key)
        return self._walk(routing_key)

    def _insert(self, words: list[str], topic: str) -> None:
        node = self._root
        for word in words:
            if word == "*":
                node.star = node.star or _Node()
                node = node.star
            elif word == "#":
                if node.is_hash:
                    continue  # "#.#" matches what "#" matches: one node does
                node.hash = node.hash or _Node(is_hash=True)
                node = node.hash
            else:
                node = node.children.setdefault(word, _Node())
        node.topics.add(topic)

    def _walk(self, routing_key: str) -> tuple[str, ...]:
        words = split_words(routing_key)
        end = len(words)
        found: set[str] = set()
        seen: set[tuple[int, int]] = set()
        todo = [(self._root, 0)]
        while todo:
            node, i = todo.pop()
            state = (id(node), i)
            if state in seen:
                continue
            seen.add(state)
            if node.hash is not None:
                todo.append((node.hash, i))
            if i == end:
                found |= node.topics
                continue
            child = node.children.get(words[i])
            if child is not None:
                todo.append((child, i + 1))
            if node.star is not None:
                todo.append((node.star, i + 1))
            if node.is_hash:
                todo.append((node, i + 1))
        return tuple(sorted(found))


class HeaderRules:
    """``(match_all, {name: value or None}, topic)`` rules, matched against message headers."""

    def __init__(self, rules: Iterable[tuple[bool, Mapping[str, bytes | None], str]]) -> None:
        self._rules = [(match_all, tuple(args.items()), topic) for match_all, args, topic in rules]

    def match(self, headers: Sequence[tuple[str, bytes]]) -> tuple[str, ...]:
        """The topics of the matching rules, sorted; values must be bytes (hashable)."""
        names = {name for name, _ in headers}
        pairs = {(name, value) for name, value in headers}
        found = {
            topic
            for match_all, args, topic in self._rules
            if (all if match_all else any)(
                name in names if value is None else (name, value) in pairs for name, value in args
            )
        }
        return tuple(sorted(found))


class HashRing:
    """``(topic, key, weight)`` bindings on a consistent-hash ring; immutable once built."""

    def __init__(self, bindings: Iterable[tuple[str, str, int]]) -> None:
        ring = sorted(
            (point, topic, key, weight)
            for topic, key, weight in bindings
            for point in ring_points(topic, key, weight)
        )
        #: Sorted; equal points (never seen with 64 bits) are ordered by topic, key, weight.
        self._points = array("Q", (entry[0] for entry in ring))
        owners: dict[str, tuple[str]] = {}
        #: ``_owners[i]`` is ``(topic,)`` for the binding that put ``_points[i]`` there.
        self._owners = [owners.setdefault(entry[1], (entry[1],)) for entry in ring]

    def match(self, key: bytes) -> tuple[str, ...]:
        """``(topic,)`` for the owner of ``key``, or ``()`` if the ring is empty."""
        if not self._owners:
            return ()
        position = bisect.bisect_left(self._points, hash64(key))
        return self._owners[position % len(self._owners)]


def hash64(data: bytes) -> int:
    """Where ``data`` falls on the ring: blake2b, 8 bytes, big-endian."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def ring_points(topic: str, key: str, weight: int) -> list[int]:
    """A binding's ``weight * POINTS_PER_WEIGHT`` points: eight big-endian 64-bit integers from
    each 64-byte blake2b digest of ``topic NUL key NUL weight NUL block`` (block = 0, 1, ...;
    numbers in ASCII decimal). Changing this moves nearly every key: don't."""
    seed = b"\0".join((topic.encode(), key.encode("utf-8", "surrogatepass")))
    count = weight * POINTS_PER_WEIGHT
    points: list[int] = []
    for block in range((count + 7) // 8):
        digest = hashlib.blake2b(b"%s\0%d\0%d" % (seed, weight, block)).digest()
        points.extend(struct.unpack(">8Q", digest))
    return points[:count]
