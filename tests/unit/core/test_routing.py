"""Exchanges and bindings (roost.core.routing): every kind, every binding rule, alternates, specs.

What is pinned here:

- direct, fanout, topic, headers and hash routing, each topic once and sorted;
- bind is idempotent, unbind of a missing binding is a quiet False, a topic may be bound twice;
- the alternate chain, its cycle and missing alternates, and ``Unroutable`` at the end of it;
- every validation error, by class and by the field it names;
- consistent hashing: shares follow weights, a new binding takes only its share, the same specs
  choose the same topic in every router (golden choices guard the hash scheme itself);
- specs round-trip through msgspec JSON and ``Router.from_specs``.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec
import pytest

from roost.core.routing import MAX_KEY_BYTES, MAX_WEIGHT, BindingSpec, ExchangeSpec, Router
from roost.errors import (
    ExchangeExists,
    InvalidConfig,
    InvalidName,
    InvalidPattern,
    UnknownExchange,
    Unroutable,
)

KEYS = [b"key-%d" % i for i in range(10_000)]


def router_with(kind: str, *bindings: BindingSpec, name: str = "x") -> Router:
    router = Router()
    router.declare(ExchangeSpec(name, kind))  # type: ignore[arg-type]
    for binding in bindings:
        router.bind(binding)
    return router


def routes(router: Router, exchange: str, routing_key: str, **message: object) -> list[str]:
    """``route``, with [] for ``Unroutable``."""
    try:
        return router.route(exchange, routing_key, **message)  # type: ignore[arg-type]
    except Unroutable:
        return []


# -- exchanges ----------------------------------------------------------------------------------


def test_declare_is_idempotent_and_refuses_a_different_definition() -> None:
    router = Router()
    spec = ExchangeSpec("orders", "topic", alternate="spill")
    assert router.declare(spec) == spec
    assert router.declare(ExchangeSpec("orders", "topic", alternate="spill")) == spec
    for other in (ExchangeSpec("orders", "direct", "spill"), ExchangeSpec("orders", "topic")):
        with pytest.raises(ExchangeExists) as caught:
            router.declare(other)
        assert caught.value.exchange == "orders"
    assert router.exchanges() == [spec]


def test_exchanges_are_listed_by_name() -> None:
    router = Router()
    for name in ("b", "a", "c"):
        router.declare(ExchangeSpec(name, "fanout"))
    assert [spec.name for spec in router.exchanges()] == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a b", "x" * 250, "é"])
def test_exchange_names_follow_the_name_rule(name: str) -> None:
    with pytest.raises(InvalidName) as caught:
        Router().declare(ExchangeSpec(name, "direct"))
    assert caught.value.kind == "exchange"
    with pytest.raises(InvalidName):
        Router().declare(ExchangeSpec("ok", "direct", alternate=name))


def test_unknown_kind_and_self_alternate_are_invalid_config() -> None:
    with pytest.raises(InvalidConfig) as caught:
        Router().declare(ExchangeSpec("x", "quorum"))  # type: ignore[arg-type]
    assert caught.value.field == "kind"
    with pytest.raises(InvalidConfig) as caught:
        Router().declare(ExchangeSpec("x", "direct", alternate="x"))
    assert caught.value.field == "alternate"


def test_delete_removes_the_exchange_and_returns_its_bindings() -> None:
    router = router_with("direct", BindingSpec("x", "t1", "a"), BindingSpec("x", "t2", "b"))
    router.declare(ExchangeSpec("y", "fanout"))
    router.bind(BindingSpec("y", "t3"))
    assert router.delete("x") == [BindingSpec("x", "t1", "a"), BindingSpec("x", "t2", "b")]
    assert [spec.name for spec in router.exchanges()] == ["y"]
    assert router.bindings() == [BindingSpec("y", "t3")]
    with pytest.raises(UnknownExchange):
        router.route("x", "a")
    with pytest.raises(UnknownExchange) as caught:
        router.delete("x")
    assert caught.value.exchange == "x"
    # Declared again, it starts with no bindings.
    router.declare(ExchangeSpec("x", "direct"))
    assert router.bindings("x") == []


def test_an_unknown_exchange_is_refused_everywhere() -> None:
    router = Router()
    for call in (
        lambda: router.route("nope", "k"),
        lambda: router.bind(BindingSpec("nope", "t")),
        lambda: router.unbind(BindingSpec("nope", "t")),
        lambda: router.bindings("nope"),
        lambda: router.delete("nope"),
    ):
        with pytest.raises(UnknownExchange):
            call()


# -- direct and fanout --------------------------------------------------------------------------


def test_direct_routes_on_key_equality() -> None:
    router = router_with(
        "direct",
        BindingSpec("x", "red", "r"),
        BindingSpec("x", "both", "r"),
        BindingSpec("x", "both", "b"),
        BindingSpec("x", "empty", ""),
    )
    assert router.route("x", "r") == ["both", "red"]
    assert router.route("x", "b") == ["both"]
    assert router.route("x", "") == ["empty"]
    for unmatched in ("R", "r ", "r.b", "#", "*"):
        with pytest.raises(Unroutable):
            router.route("x", unmatched)


def test_fanout_routes_to_every_topic_once_whatever_the_key() -> None:
    router = router_with(
        "fanout",
        BindingSpec("x", "b"),
        BindingSpec("x", "a"),
        BindingSpec("x", "a", key="another binding"),
    )
    assert len(router.bindings("x")) == 3
    assert router.route("x", "") == ["a", "b"]
    assert router.route("x", "anything.at.all") == ["a", "b"]
    with pytest.raises(Unroutable):
        router_with("fanout").route("x", "k")


# -- topic --------------------------------------------------------------------------------------

TOPIC_CASES = [
    # pattern, routing key, matches
    ("a.b", "a.b", True),
    ("a.b", "a.b.c", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("a.*", "a.", True),  # the empty word is a word
    ("*", "", False),
    ("*", "*", True),
    ("*", "#", True),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.b.c.d", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("#.#", "", True),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
    ("a.*.b", "a..b", True),
    ("", "", True),
    ("", ".", False),
    (".", ".", True),
    ("a.", "a.", True),
    ("a.", "a", False),
    ("é.*", "é.ü", True),
]


@pytest.mark.parametrize(("pattern", "routing_key", "matches"), TOPIC_CASES)
def test_topic_patterns(pattern: str, routing_key: str, matches: bool) -> None:
    router = router_with("topic", BindingSpec("x", "t", pattern))
    assert routes(router, "x", routing_key) == (["t"] if matches else [])


def test_topic_routes_each_topic_once_sorted_over_many_patterns() -> None:
    router = router_with(
        "topic",
        BindingSpec("x", "z", "#"),
        BindingSpec("x", "all.a", "a.#"),
        BindingSpec("x", "all.a", "a.*"),
        BindingSpec("x", "all.a", "a.b"),
        BindingSpec("x", "m", "*.b"),
        BindingSpec("x", "never", "b.*"),
    )
    assert router.route("x", "a.b") == ["all.a", "m", "z"]
    assert router.route("x", "") == ["z"]


@pytest.mark.parametrize("pattern", ["a.b*", "#x", "*a", "a.#b", "**", "##", "a.*#", "x.y#.z"])
def test_wildcards_must_be_whole_words(pattern: str) -> None:
    router = router_with("topic")
    with pytest.raises(InvalidPattern) as caught:
        router.bind(BindingSpec("x", "t", pattern))
    assert caught.value.pattern == pattern
    # A direct exchange takes the same string as a plain key.
    assert router_with("direct", BindingSpec("x", "t", pattern)).route("x", pattern) == ["t"]


def test_topic_patterns_are_limited_to_an_amqp_short_string() -> None:
    router = router_with("topic")
    with pytest.raises(InvalidPattern):
        router.bind(BindingSpec("x", "t", "a" * (MAX_KEY_BYTES + 1)))
    with pytest.raises(InvalidPattern):
        router.bind(BindingSpec("x", "t", "é" * (MAX_KEY_BYTES // 2 + 1)))
    assert router.bind(BindingSpec("x", "t", "a" * MAX_KEY_BYTES))
    assert router.bind(BindingSpec("x", "t", "#." * (MAX_KEY_BYTES // 2) + "#"))


def test_topic_results_follow_bind_and_unbind_despite_the_cache() -> None:
    router = router_with("topic", BindingSpec("x", "first", "a.*"))
    assert router.route("x", "a.b") == ["first"]
    router.bind(BindingSpec("x", "second", "#.b"))
    assert router.route("x", "a.b") == ["first", "second"]
    router.unbind(BindingSpec("x", "first", "a.*"))
    assert router.route("x", "a.b") == ["second"]
    router.unbind(BindingSpec("x", "second", "#.b"))
    with pytest.raises(Unroutable):
        router.route("x", "a.b")


def test_long_routing_keys_bypass_the_cache_and_still_match() -> None:
    router = router_with("topic", BindingSpec("x", "t", "a.#.z"))
    assert router.route("x", "a." + "m." * 500 + "z") == ["t"]


# -- headers ------------------------------------------------------------------------------------


def headers_binding(
    topic: str, match: Literal["all", "any"] = "all", **args: bytes | str | None
) -> BindingSpec:
    """A binding on exchange x; str values as a caller with untyped data would pass them."""
    return BindingSpec("x", topic, headers=args, match=match)  # type: ignore[arg-type]


def test_headers_all_needs_every_header_equal() -> None:
    router = router_with("headers", headers_binding("t", format=b"pdf", type="report"))
    assert router.route("x", "", [("format", b"pdf"), ("type", b"report"), ("x", b"")]) == ["t"]
    for headers in (
        [("format", b"pdf")],
        [("format", b"pdf"), ("type", b"log")],
        [("Format", b"pdf"), ("type", b"report")],  # names are case-sensitive
        [],
    ):
        assert routes(router, "x", "", headers=headers) == []


def test_headers_any_needs_one_header_equal() -> None:
    router = router_with("headers", headers_binding("t", "any", format=b"pdf", type=b"report"))
    assert router.route("x", "", [("type", b"report")]) == ["t"]
    assert router.route("x", "", [("format", b"pdf"), ("type", b"log")]) == ["t"]
    assert routes(router, "x", "", headers=[("format", b"zip"), ("other", b"pdf")]) == []


def test_a_none_value_means_present_with_any_value() -> None:
    router = router_with("headers", headers_binding("t", trace=None, kind=b"a"))
    assert router.route("x", "", [("trace", b""), ("kind", b"a")]) == ["t"]
    assert router.route("x", "", [("trace", b"\xff" * 9), ("kind", b"a")]) == ["t"]
    assert routes(router, "x", "", headers=[("kind", b"a")]) == []


def test_header_values_compare_as_bytes_and_str_binding_values_are_utf8() -> None:
    router = router_with("headers", headers_binding("t", lang="français"))
    assert router.route("x", "", [("lang", "français".encode())]) == ["t"]
    assert routes(router, "x", "", headers=[("lang", "français".encode("latin-1"))]) == []
    # The str and the bytes form are the same binding; the spec keeps bytes.
    assert not router.bind(headers_binding("t", lang="français".encode()))
    assert router.bindings("x") == [headers_binding("t", lang="français".encode())]


def test_a_repeated_message_header_matches_if_any_of_its_values_does() -> None:
    router = router_with("headers", headers_binding("t", tag=b"b"))
    assert router.route("x", "", [("tag", b"a"), ("tag", b"b")]) == ["t"]


def test_empty_headers_match_everything_with_all_and_nothing_with_any() -> None:
    router = router_with("headers", headers_binding("every"), headers_binding("none", "any"))
    assert router.route("x", "", []) == ["every"]
    assert router.route("x", "", [("a", b"1")]) == ["every"]


def test_headers_routes_each_topic_once_sorted() -> None:
    router = router_with(
        "headers",
        headers_binding("b", a=b"1"),
        headers_binding("a", a=b"1"),
        headers_binding("a", "any", a=b"1", z=None),
        headers_binding("c", a=b"2"),
    )
    assert router.route("x", "ignored", [("a", b"1")]) == ["a", "b"]


@pytest.mark.parametrize(
    ("binding", "field"),
    [
        (BindingSpec("x", "t"), "headers"),  # a headers binding needs headers
        (BindingSpec("x", "t", headers={}, match="some"), "match"),  # type: ignore[arg-type]
        (BindingSpec("x", "t", headers={"a": 1}), "headers"),  # type: ignore[dict-item]
        (BindingSpec("x", "t", headers={1: b"a"}), "headers"),  # type: ignore[dict-item]
        (BindingSpec("x", "t", headers={"a": "\udc80"}), "headers"),  # type: ignore[dict-item]
        (BindingSpec("x", "t", headers=[("a", b"b")]), "headers"),  # type: ignore[arg-type]
        (BindingSpec("x", "t", headers={}, weight=2), "weight"),
    ],
)
def test_invalid_headers_bindings(binding: BindingSpec, field: str) -> None:
    with pytest.raises(InvalidConfig) as caught:
        router_with("headers").bind(binding)
    assert caught.value.field == field


# -- fields a kind does not use -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "hash"])
def test_headers_and_match_belong_to_headers_exchanges(kind: str) -> None:
    router = router_with(kind)
    with pytest.raises(InvalidConfig) as caught:
        router.bind(BindingSpec("x", "t", headers={"a": b"b"}))
    assert caught.value.field == "headers"
    with pytest.raises(InvalidConfig) as caught:
        router.bind(BindingSpec("x", "t", match="any"))
    assert caught.value.field == "match"


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers"])
def test_weight_belongs_to_hash_exchanges(kind: str) -> None:
    headers: dict[str, bytes | None] | None = {} if kind == "headers" else None
    with pytest.raises(InvalidConfig) as caught:
        router_with(kind).bind(BindingSpec("x", "t", headers=headers, weight=2))
    assert caught.value.field == "weight"


@pytest.mark.parametrize("kind", ["direct", "fanout", "headers", "hash"])
def test_keys_are_strings_of_at_most_255_utf8_bytes(kind: str) -> None:
    headers: dict[str, bytes | None] | None = {} if kind == "headers" else None
    router = router_with(kind)
    for key in (None, b"bytes", "x" * (MAX_KEY_BYTES + 1), "€" * 86):
        with pytest.raises(InvalidConfig) as caught:
            router.bind(BindingSpec("x", "t", key, headers=headers))  # type: ignore[arg-type]
        assert caught.value.field == "key"
    assert router.bind(BindingSpec("x", "t", "€" * 85, headers=headers))


@pytest.mark.parametrize("topic", ["", ".t", "a/b", "t" * 250])
def test_topic_names_follow_the_name_rule(topic: str) -> None:
    with pytest.raises(InvalidName) as caught:
        router_with("fanout").bind(BindingSpec("x", topic))
    assert caught.value.kind == "topic"


# -- binding and unbinding ----------------------------------------------------------------------


def test_bind_is_idempotent() -> None:
    router = router_with("direct")
    assert router.bind(BindingSpec("x", "t", "k"))
    assert not router.bind(BindingSpec("x", "t", "k"))
    assert router.bindings() == [BindingSpec("x", "t", "k")]
    assert router.route("x", "k") == ["t"]


def test_unbind_of_a_missing_binding_is_a_quiet_false() -> None:
    router = router_with("direct", BindingSpec("x", "t", "k"))
    assert not router.unbind(BindingSpec("x", "t", "other"))
    assert not router.unbind(BindingSpec("x", "u", "k"))
    assert router.unbind(BindingSpec("x", "t", "k"))
    assert not router.unbind(BindingSpec("x", "t", "k"))
    assert router.bindings() == []


def test_unbind_checks_the_spec_like_bind() -> None:
    router = router_with("topic")
    with pytest.raises(InvalidPattern):
        router.unbind(BindingSpec("x", "t", "a#"))
    with pytest.raises(InvalidName):
        router.unbind(BindingSpec("x", "no/such"))


def test_unbind_matches_headers_whatever_their_order_and_str_or_bytes() -> None:
    router = router_with("headers", headers_binding("t", a=b"1", b=None))
    assert router.unbind(BindingSpec("x", "t", headers={"b": None, "a": "1"}))  # type: ignore[dict-item]
    assert router.bindings() == []


def test_bindings_list_in_binding_order_per_exchange_by_exchange_name() -> None:
    router = Router()
    router.declare(ExchangeSpec("b", "direct"))
    router.declare(ExchangeSpec("a", "direct"))
    specs = [BindingSpec("b", "t2", "k"), BindingSpec("b", "t1", "k"), BindingSpec("a", "t3", "k")]
    for spec in specs:
        router.bind(spec)
    assert router.bindings("b") == specs[:2]
    assert router.bindings() == [specs[2], *specs[:2]]


def test_listed_bindings_are_copies() -> None:
    router = router_with("headers", headers_binding("t", a=b"1"))
    listed = router.bindings("x")[0]
    assert listed.headers is not None
    listed.headers["a"] = b"2"
    assert router.route("x", "", [("a", b"1")]) == ["t"]
    passed = {"a": b"1"}
    router.bind(BindingSpec("x", "u", headers=passed))  # type: ignore[arg-type]
    passed["a"] = b"9"
    assert router.route("x", "", [("a", b"1")]) == ["t", "u"]


# -- alternate exchanges ------------------------------------------------------------------------


def chain(*exchanges: ExchangeSpec) -> Router:
    router = Router()
    for spec in exchanges:
        router.declare(spec)
    return router


def test_unmatched_messages_continue_along_the_alternate_chain() -> None:
    router = chain(
        ExchangeSpec("a", "direct", "b"),
        ExchangeSpec("b", "topic", "c"),
        ExchangeSpec("c", "fanout"),
    )
    router.bind(BindingSpec("a", "from.a", "k"))
    router.bind(BindingSpec("b", "from.b", "x.*"))
    router.bind(BindingSpec("c", "from.c"))
    assert router.route("a", "k") == ["from.a"]
    assert router.route("a", "x.y") == ["from.b"]
    assert router.route("a", "other") == ["from.c"]
    assert router.route("b", "x.y") == ["from.b"]


def test_the_alternate_sees_the_same_headers_and_key() -> None:
    router = chain(ExchangeSpec("a", "direct", "h"), ExchangeSpec("h", "headers", "hh"))
    router.declare(ExchangeSpec("hh", "hash"))
    router.bind(BindingSpec("h", "by.header", headers={"k": b"v"}))
    router.bind(BindingSpec("hh", "by.hash"))
    assert router.route("a", "r", [("k", b"v")]) == ["by.header"]
    assert router.route("a", "r", [], key=b"\x00") == ["by.hash"]


def test_a_cycle_of_alternates_ends_in_unroutable() -> None:
    router = chain(
        ExchangeSpec("a", "direct", "b"),
        ExchangeSpec("b", "direct", "c"),
        ExchangeSpec("c", "direct", "a"),
    )
    router.bind(BindingSpec("c", "t", "only.c"))
    assert router.route("a", "only.c") == ["t"]
    with pytest.raises(Unroutable) as caught:
        router.route("b", "nothing")
    assert (caught.value.exchange, caught.value.routing_key) == ("b", "nothing")
    assert caught.value.code == "unroutable"


def test_a_cycle_further_down_the_chain_ends_too() -> None:
    router = chain(
        ExchangeSpec("start", "direct", "b"),
        ExchangeSpec("b", "topic", "c"),
        ExchangeSpec("c", "fanout", "b"),
    )
    with pytest.raises(Unroutable) as caught:
        router.route("start", "k")
    assert caught.value.exchange == "start"


def test_unroutable_without_an_alternate_names_the_exchange_and_key() -> None:
    router = router_with("direct", BindingSpec("x", "t", "k"))
    with pytest.raises(Unroutable) as caught:
        router.route("x", "other.key")
    assert caught.value.exchange == "x"
    assert caught.value.routing_key == "other.key"
    assert "other.key" in str(caught.value)


def test_a_missing_alternate_counts_as_none_until_declared() -> None:
    router = chain(ExchangeSpec("a", "direct", alternate="later"))
    with pytest.raises(Unroutable) as caught:
        router.route("a", "k")
    assert caught.value.exchange == "a"
    router.declare(ExchangeSpec("later", "fanout"))
    router.bind(BindingSpec("later", "t"))
    assert router.route("a", "k") == ["t"]
    # Deleting an exchange that is another's alternate is allowed; routing skips it.
    router.delete("later")
    assert router.exchanges() == [ExchangeSpec("a", "direct", alternate="later")]
    with pytest.raises(Unroutable):
        router.route("a", "k")


# -- hash ---------------------------------------------------------------------------------------


def shares(router: Router, keys: list[bytes] = KEYS) -> Counter[str]:
    return Counter(router.route("x", "", key=key)[0] for key in keys)


def hash_router(*weights: tuple[str, int]) -> Router:
    return router_with("hash", *(BindingSpec("x", topic, weight=w) for topic, w in weights))


def test_hash_routes_each_message_to_exactly_one_topic() -> None:
    router = hash_router(("a", 1), ("b", 1), ("c", 1))
    assert all(len(router.route("x", "", key=key)) == 1 for key in KEYS[:1000])
    with pytest.raises(Unroutable):
        router_with("hash").route("x", "k", key=b"k")


def test_hash_falls_back_to_the_routing_key_when_the_key_is_none() -> None:
    router = hash_router(("a", 1), ("b", 1), ("c", 1))
    for text in ("order-1", "order-2", "é", ""):
        assert router.route("x", text) == router.route("x", "unused", key=text.encode())
    # An empty key is a key: it does not fall back.
    chosen = {router.route("x", f"rk-{i}", key=b"")[0] for i in range(50)}
    assert len(chosen) == 1


def test_equal_weights_share_keys_evenly() -> None:
    counts = shares(hash_router(("a", 1), ("b", 1), ("c", 1)))
    assert set(counts) == {"a", "b", "c"}
    for count in counts.values():
        assert 0.25 * len(KEYS) <= count <= 0.42 * len(KEYS)


def test_shares_follow_weights() -> None:
    counts = shares(hash_router(("light", 1), ("heavy", 3)))
    assert 0.18 * len(KEYS) <= counts["light"] <= 0.32 * len(KEYS)


def test_a_new_binding_takes_only_its_share_of_keys() -> None:
    router = hash_router(("a", 1), ("b", 1), ("c", 1))
    before = {key: router.route("x", "", key=key)[0] for key in KEYS}
    router.bind(BindingSpec("x", "d"))
    after = {key: router.route("x", "", key=key)[0] for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert {after[key] for key in moved} == {"d"}
    assert 0.15 * len(KEYS) <= len(moved) <= 0.35 * len(KEYS)
    # And unbinding it gives every key back to where it was.
    router.unbind(BindingSpec("x", "d"))
    assert {key: router.route("x", "", key=key)[0] for key in KEYS} == before


def test_the_same_specs_choose_the_same_topic_in_every_router() -> None:
    bindings = [BindingSpec("x", t, weight=w) for t, w in [("a", 1), ("b", 5), ("c", 2)]]
    exchanges = [ExchangeSpec("x", "hash")]
    first = Router.from_specs(exchanges, bindings)
    second = Router.from_specs(exchanges, reversed(bindings))
    keys = KEYS[:2000]
    assert [first.route("x", "", key=k) for k in keys] == [
        second.route("x", "", key=k) for k in keys
    ]


def test_hash_choices_are_pinned() -> None:
    """Golden choices: if this fails, the hash scheme changed and every key would move."""
    router = Router.from_specs(
        [ExchangeSpec("h", "hash")],
        [
            BindingSpec("h", "alpha"),
            BindingSpec("h", "beta", weight=2),
            BindingSpec("h", "gamma", key="g"),
        ],
    )
    chosen = {k: router.route("h", k)[0] for k in ("", "a", "order-1", "order-2", "user:42", "é")}
    assert chosen == {
        "": "beta",
        "a": "alpha",
        "order-1": "beta",
        "order-2": "alpha",
        "user:42": "beta",
        "é": "gamma",
    }
    assert router.route("h", "ignored", key=b"\x00\xff") == ["beta"]


def test_a_topic_bound_twice_gets_both_shares_but_one_copy() -> None:
    router = hash_router(("a", 1), ("b", 1))
    router.bind(BindingSpec("x", "a", key="second"))
    counts = shares(router)
    assert 0.55 * len(KEYS) <= counts["a"] <= 0.78 * len(KEYS)


@pytest.mark.parametrize("weight", [0, -1, MAX_WEIGHT + 1, True, 1.5, "2", None])
def test_hash_weights_are_ints_from_1_to_the_max(weight: object) -> None:
    with pytest.raises(InvalidConfig) as caught:
        router_with("hash").bind(BindingSpec("x", "t", weight=weight))  # type: ignore[arg-type]
    assert caught.value.field == "weight"
    assert caught.value.value == weight


def test_the_max_weight_is_accepted() -> None:
    router = hash_router(("small", 1), ("big", MAX_WEIGHT))
    assert sum(router.route("x", "", key=key) == ["small"] for key in KEYS[:2000]) < 40


# -- specs --------------------------------------------------------------------------------------


def sample_router() -> Router:
    router = Router()
    router.declare(ExchangeSpec("t", "topic", alternate="f"))
    router.declare(ExchangeSpec("f", "fanout"))
    router.declare(ExchangeSpec("h", "headers", alternate="missing"))
    router.declare(ExchangeSpec("hh", "hash"))
    router.bind(BindingSpec("t", "orders", "order.#"))
    router.bind(BindingSpec("t", "orders", "*.order"))
    router.bind(BindingSpec("f", "audit"))
    router.bind(BindingSpec("h", "pdf", headers={"f": b"pdf\xff", "x": None}, match="any"))
    router.bind(BindingSpec("h", "txt", headers={"f": "txt"}))  # type: ignore[dict-item]
    router.bind(BindingSpec("hh", "p1", weight=3))
    router.bind(BindingSpec("hh", "p2"))
    return router


def test_specs_round_trip_through_msgspec_json() -> None:
    exchanges, bindings = sample_router().specs()
    assert msgspec.json.decode(msgspec.json.encode(exchanges), type=list[ExchangeSpec]) == exchanges
    assert msgspec.json.decode(msgspec.json.encode(bindings), type=list[BindingSpec]) == bindings
    assert BindingSpec("h", "txt", headers={"f": b"txt"}) in bindings


def test_from_specs_rebuilds_the_same_router() -> None:
    original = sample_router()
    exchanges, bindings = original.specs()
    copy = Router.from_specs(
        msgspec.json.decode(msgspec.json.encode(exchanges), type=list[ExchangeSpec]),
        msgspec.json.decode(msgspec.json.encode(bindings), type=list[BindingSpec]),
    )
    assert copy.specs() == original.specs()
    messages: list[tuple[str, str, list[tuple[str, bytes]], bytes | None]] = [
        ("t", "order.new", [], None),
        ("t", "eu.order", [], None),
        ("t", "nothing", [], None),
        ("h", "", [("f", b"txt")], None),
        ("h", "", [("x", b"")], None),
        ("hh", "k1", [], None),
        ("hh", "", [], b"k2"),
    ]
    for exchange, routing_key, headers, key in messages:
        assert copy.route(exchange, routing_key, headers, key) == original.route(
            exchange, routing_key, headers, key
        )


def test_from_specs_checks_what_it_loads() -> None:
    with pytest.raises(UnknownExchange):
        Router.from_specs([], [BindingSpec("x", "t")])
    with pytest.raises(InvalidPattern):
        Router.from_specs([ExchangeSpec("x", "topic")], [BindingSpec("x", "t", "a*")])


def test_decoding_refuses_unknown_fields_and_kinds() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name":"x","kind":"direct","extra":1}', type=ExchangeSpec)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"name":"x","kind":"quorum"}', type=ExchangeSpec)
