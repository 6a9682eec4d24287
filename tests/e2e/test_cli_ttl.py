"""``roost queue create --message-ttl`` and ``roost publish --ttl`` against a real ``roost
serve`` (issue 15, item 3): the setting is kept, the expiry is fixed at publish, and what
cannot work is refused with one clear line. (Expiry itself is tested on a driven clock:
tests/unit/test_message_ttl.py, tests/property/test_ttl_model.py.)"""

from __future__ import annotations

import time

from tests.e2e.test_cli import failed, ok, roost_cli, url

__all__ = ["url"]  # the module's server, as test_cli's


def test_a_queue_ttl_and_a_message_ttl(url: str) -> None:
    spec = ok(url, "queue", "create", "ttl-jobs", "--message-ttl", "60")
    assert spec["message_ttl_ms"] == 60_000
    before_ms = time.time() * 1000  # a reading, not a wait: bounds the broker's publish time
    ok(url, "publish", "ttl-jobs", "stale soon", "--ttl", "30")
    ok(url, "publish", "ttl-jobs", "by the queue's default")
    after_ms = time.time() * 1000
    peeked = {p["value"]: p for p in ok(url, "queue", "peek", "ttl-jobs")}
    assert set(peeked) == {"stale soon", "by the queue's default"}
    headers = dict(peeked["stale soon"]["headers"])
    assert before_ms + 30_000 - 1 <= int(headers["x-roost-expires-at"]) <= after_ms + 30_000 + 1
    assert "x-roost-expires-at" not in dict(peeked["by the queue's default"]["headers"])
    assert ok(url, "queue", "describe", "ttl-jobs")["depth"] == 2


def test_what_cannot_expire_sensibly_is_refused(url: str) -> None:
    ok(url, "queue", "create", "ttl-refused")
    line = failed(url, "publish", "ttl-refused", "x", "--delay", "10", "--ttl", "5")
    assert "before it could be delivered" in line
    line = failed(url, "queue", "create", "ttl-delayed", "--delay", "10", "--message-ttl", "5")
    assert "message_ttl_ms" in line
    usage = roost_cli(url, "publish", "ttl-refused", "x", "--ttl", "0")
    assert usage.exit_code == 2 and "--ttl" in usage.stderr
    assert ok(url, "queue", "describe", "ttl-refused")["backlog"] == 0
