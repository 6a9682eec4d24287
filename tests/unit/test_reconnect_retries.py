"""Which requests a reconnecting client repeats after a broken connection."""

from __future__ import annotations

from roost.client.reconnect import safe_to_retry
from roost.protocols.native import messages as m


def test_both_kinds_of_fetch_are_repeated_and_a_plain_publish_is_not() -> None:
    args = ("clicks", "analytics", "member-1", 3)
    assert safe_to_retry(m.Fetch(*args))
    assert safe_to_retry(m.FetchBatches(*args)), "a version-2 fetch is a fetch"
    assert not safe_to_retry(m.Publish("clicks", [m.Out(b"x")]))
    assert safe_to_retry(m.Publish("clicks", [m.Out(b"x")], producer_id="p", sequence=0))
