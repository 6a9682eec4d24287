"""Topic patterns (roost.core.patterns, roost.core.routing) against a plain reference matcher.

The reference is the AMQP definition read literally, recursive over words: ``#`` matches zero
words or one word and stays, ``*`` exactly one word, anything else the same word. Words are
drawn from a small alphabet with the empty word, ``*`` and ``#`` in it, so patterns and keys
meet often and wildcards land in every position (first, last, repeated, next to each other).

What is pinned here:

- ``TopicTrie`` with one pattern agrees with the reference on every pattern/key pair;
- a trie of many patterns returns exactly the topics whose pattern matches, sorted;
- ``check_pattern`` accepts exactly the strings whose wildcards are whole words;
- a topic exchange driven by random bind / unbind / route steps always routes as the reference
  over its current bindings: the route cache never serves a result from before a change.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roost.core.patterns import TopicTrie, check_pattern
from roost.core.routing import BindingSpec, ExchangeSpec, Router
from roost.errors import InvalidPattern, Unroutable


def words_of(text: str) -> list[str]:
    return text.split(".") if text else []


def reference_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return reference_match(rest, words) or (bool(words) and reference_match(pattern, words[1:]))
    if not words:
        return False
    return (head == "*" or head == words[0]) and reference_match(rest, words[1:])


def dotted(alphabet: list[str], max_words: int = 6) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(alphabet), max_size=max_words).map(".".join)


patterns = dotted(["", "a", "b", "*", "#"])
routing_keys = dotted(["", "a", "b", "c", "*", "#"])
topics = st.sampled_from(["t0", "t1", "t2", "t3"])


@given(patterns, routing_keys)
def test_one_pattern_matches_as_the_reference(pattern: str, routing_key: str) -> None:
    expected = reference_match(words_of(pattern), words_of(routing_key))
    assert TopicTrie([(pattern, "t")]).match(routing_key) == (("t",) if expected else ())


@given(st.lists(st.tuples(patterns, topics), max_size=12), st.lists(routing_keys, max_size=8))
def test_many_patterns_match_as_the_reference(
    bindings: list[tuple[str, str]], keys: list[str]
) -> None:
    trie = TopicTrie(bindings)
    for routing_key in keys + keys:  # the second pass is served by the cache
        expected = {
            topic
            for pattern, topic in bindings
            if reference_match(words_of(pattern), words_of(routing_key))
        }
        assert trie.match(routing_key) == tuple(sorted(expected))


@given(dotted(["", "a", "*", "#", "a*", "#b", "**", "*#", "x#y"]))
def test_wildcards_are_accepted_only_as_whole_words(pattern: str) -> None:
    whole = all(w in ("*", "#") or not ({"*", "#"} & set(w)) for w in words_of(pattern))
    try:
        assert check_pattern(pattern) == words_of(pattern)
        assert whole
    except InvalidPattern as e:
        assert not whole
        assert e.pattern == pattern


steps = st.lists(
    st.one_of(
        st.tuples(st.just("bind"), patterns, topics),
        st.tuples(st.just("unbind"), patterns, topics),
        st.tuples(st.just("route"), routing_keys, st.just("")),
    ),
    max_size=30,
)


@given(steps)
def test_a_topic_exchange_routes_as_the_reference_after_every_change(
    script: list[tuple[str, str, str]],
) -> None:
    router = Router()
    router.declare(ExchangeSpec("x", "topic"))
    model: set[tuple[str, str]] = set()
    for action, text, topic in script:
        if action == "bind":
            assert router.bind(BindingSpec("x", topic, text)) == ((text, topic) not in model)
            model.add((text, topic))
        elif action == "unbind":
            assert router.unbind(BindingSpec("x", topic, text)) == ((text, topic) in model)
            model.discard((text, topic))
        else:
            expected = sorted({t for p, t in model if reference_match(words_of(p), words_of(text))})
            try:
                assert router.route("x", text) == expected
            except Unroutable:
                assert expected == []
