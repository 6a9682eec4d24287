"""Grants and principals: parsing, what each kind covers, the broker-wide operations, and
``Principal.may`` against a small reference matcher of the patterns (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.errors import InvalidConfig, InvalidPattern, NotAuthorised
from roost.server.access import ANONYMOUS, TRUSTED, Grant, Principal


def principal(*grants: str) -> Principal:
    """``principal("publish topic:orders.*", "monitor")``."""
    return Principal("ada", tuple(Grant.parse(*grant.split(" ")) for grant in grants))


# -- parsing --------------------------------------------------------------------------------


def test_parse_named_and_broker_wide_grants() -> None:
    assert Grant.parse("publish", "topic:orders.*") == Grant("publish", "topic", "orders.*")
    assert Grant.parse("consume", "queue:emails") == Grant("consume", "queue", "emails")
    assert Grant.parse("manage", "exchange:#") == Grant("manage", "exchange", "#")
    assert Grant.parse("consume", "group:bill-ing.*.x_1").pattern == "bill-ing.*.x_1"
    assert Grant.parse("admin") == Grant("admin", "broker", "")
    assert Grant.parse("monitor", "broker") == Grant("monitor")
    assert str(Grant.parse("publish", "topic:orders.*")) == "publish topic:orders.*"
    assert str(Grant.parse("monitor")) == "monitor"


@pytest.mark.parametrize(
    ("operation", "resource", "error", "says"),
    [
        ("read", "topic:orders", InvalidConfig, "operation"),
        ("read", "", InvalidConfig, "operation"),  # the operation first, not "KIND:PATTERN"
        ("publish", "", InvalidConfig, "KIND:PATTERN"),
        ("publish", "orders", InvalidConfig, "KIND:PATTERN"),
        ("publish", "broker", InvalidConfig, "KIND:PATTERN"),
        ("publish", "table:orders", InvalidConfig, "resource kind"),
        ("publish", "broker:orders", InvalidConfig, "resource kind"),
        ("admin", "topic:orders", InvalidConfig, "broker-wide"),
        ("monitor", "queue:#", InvalidConfig, "broker-wide"),
        ("publish", "topic:", InvalidPattern, "e.g. orders.*"),
        ("publish", "topic:orders*", InvalidPattern, "whole words"),
        ("publish", "topic:#x.y", InvalidPattern, "whole words"),
        ("publish", "topic:orders/eu", InvalidPattern, "A-Z a-z"),
        ("publish", "topic:orders eu", InvalidPattern, "A-Z a-z"),
        ("publish", "topic:" + "a" * 250, InvalidPattern, "A-Z a-z"),
    ],
)
def test_parse_refuses_with_the_reason(
    operation: str, resource: str, error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as raised:
        Grant.parse(operation, resource)
    assert says in str(raised.value)


# -- what grants cover ----------------------------------------------------------------------


def test_wildcards_one_word_and_any_words() -> None:
    ada = principal("publish topic:orders.*", "consume topic:logs.#")
    assert ada.may("publish", "topic", "orders.eu")
    assert not ada.may("publish", "topic", "orders")
    assert not ada.may("publish", "topic", "orders.eu.paris")
    assert not ada.may("consume", "topic", "orders.eu"), "publish is not consume"
    assert ada.may("consume", "topic", "logs")
    assert ada.may("consume", "topic", "logs.a.b.c")
    assert not ada.may("consume", "topic", "logsx")
    assert not ada.may("publish", "exchange", "orders.eu"), "a topic grant is about topics"
    assert principal("manage exchange:#").may("manage", "exchange", "anything.at.all")


def test_a_queue_grant_covers_its_topic_and_its_group() -> None:
    ada = principal("consume queue:emails")
    assert ada.may("consume", "topic", "emails")
    assert ada.may("consume", "group", "emails")
    assert ada.may("consume", "queue", "emails")
    assert not ada.may("consume", "queue", "sms")
    assert not ada.may("publish", "queue", "emails")
    # A queue is both: a grant on only one of them is not a grant on the queue.
    assert not principal("consume topic:emails").may("consume", "queue", "emails")
    assert not principal("consume topic:emails", "consume group:other").may(
        "consume", "queue", "emails"
    )
    both = principal("consume topic:emails", "consume group:*")
    assert both.may("consume", "queue", "emails")


def test_admin_may_everything_monitor_only_reads() -> None:
    boss = principal("admin")
    assert (boss.admin, boss.monitor) == (True, True)
    assert boss.may("admin", "broker", "")
    assert boss.may("publish", "topic", "x") and boss.may("manage", "exchange", "y")
    assert boss.may("made-up", "thing", "z"), "admin is everything, asked or not yet named"
    watcher = principal("monitor")
    assert (watcher.admin, watcher.monitor) == (False, True)
    assert watcher.may("monitor", "broker", "")
    assert not watcher.may("admin", "broker", "")
    assert not watcher.may("publish", "topic", "x")
    assert watcher.sees("topic", "x") and watcher.sees("exchange", "y")
    assert Principal("boss", admin=True).may("admin", "broker", "")
    assert TRUSTED.admin and ANONYMOUS.admin


def test_nothing_granted_means_no() -> None:
    nobody = principal()
    assert not nobody.may("monitor", "broker", "")
    assert not nobody.may("publish", "topic", "x")
    assert not nobody.sees("topic", "x")
    assert not principal("publish topic:#").may("publish", "table", "x"), "unknown kind: no"
    assert not principal("publish topic:#").may("burn", "topic", "x"), "unknown operation: no"
    assert principal("publish topic:a.*").sees("topic", "a.b")
    assert not principal("publish topic:a.*").sees("topic", "b")


def test_check_names_what_was_refused() -> None:
    ada = principal("publish topic:orders")
    ada.check("publish", "topic", "orders")
    with pytest.raises(NotAuthorised) as refused:
        ada.check("consume", "topic", "orders")
    assert (refused.value.user, refused.value.operation) == ("ada", "consume")
    assert str(refused.value) == "user 'ada' may not consume on topic 'orders'"
    with pytest.raises(NotAuthorised, match="may not admin on the broker"):
        ada.check("admin", "broker")


def test_decisions_are_cached_but_bounded() -> None:
    ada = principal("publish topic:a.*")
    for i in range(5000):
        assert ada.may("publish", "topic", f"a.{i}")
    assert len(ada._decided) == 4096
    assert ada.may("publish", "topic", "a.4999") and not ada.may("publish", "topic", "b.1")


# -- property: may agrees with a reference matcher -----------------------------------------


def reference_match(pattern: list[str], name: list[str]) -> bool:
    """AMQP topic matching, written the obvious recursive way."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(reference_match(rest, name[i:]) for i in range(len(name) + 1))
    if not name:
        return False
    return (head in ("*", name[0])) and reference_match(rest, name[1:])


def words(text: str) -> list[str]:
    return text.split(".") if text else []


WORD = st.sampled_from(["a", "b", "c", ""])
PATTERN_WORD = st.sampled_from(["a", "b", "c", "*", "#"])
KINDS = ["topic", "queue", "exchange", "group"]
OPERATIONS = ["publish", "consume", "manage"]
GRANTS = st.builds(
    Grant,
    st.sampled_from(OPERATIONS),
    st.sampled_from(KINDS),
    st.lists(PATTERN_WORD, min_size=1, max_size=4).map(".".join),
)
NAMES = st.lists(WORD, min_size=1, max_size=5).map(".".join).filter(bool)


def reference_may(grants: list[Grant], operation: str, kind: str, name: str) -> bool:
    """A grant on kind K covers K, and a queue grant also covers the topic and the group of
    the name; asking about a queue asks about its topic and its group."""
    if kind == "queue":
        return reference_may(grants, operation, "topic", name) and reference_may(
            grants, operation, "group", name
        )
    covers = {"topic": {"topic"}, "queue": {"topic", "group"}, "exchange": {"exchange"},
              "group": {"group"}}  # fmt: skip
    return any(
        g.operation == operation and kind in covers[g.kind]
        and reference_match(words(g.pattern), words(name))
        for g in grants
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    grants=st.lists(GRANTS, max_size=4),
    operation=st.sampled_from(OPERATIONS),
    kind=st.sampled_from(KINDS),
    names=st.lists(NAMES, min_size=1, max_size=6),
)
def test_may_agrees_with_the_reference(
    grants: list[Grant], operation: str, kind: str, names: list[str]
) -> None:
    ada = Principal("ada", tuple(g.check() for g in grants))
    for name in names + names:  # twice: the cached answer is the same answer
        assert ada.may(operation, kind, name) == reference_may(grants, operation, kind, name), (
            grants, operation, kind, name,
        )  # fmt: skip
