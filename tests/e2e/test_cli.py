"""The ``roost`` client commands against a real ``roost serve``, run in-process by CliRunner.

One server for the module; each test names its own topics and queues. Commands are checked
through ``--json`` (parsed, then asserted on) and, for a few, through their tables.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import roost
from roost.cli.main import main
from tests.e2e.test_serve import Server


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Server(tmp_path_factory.mktemp("cli") / "data")
    yield server.url
    server.stop()


def roost_cli(url: str, *args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["--url", url, *args], input=input)


def ok(url: str, *args: str, input: str | bytes | None = None) -> Any:
    """Run ``roost --url URL ARGS --json``; its stdout, parsed."""
    result = roost_cli(url, *args, "--json", input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def failed(url: str, *args: str) -> str:
    """Run a command that must fail as the broker refused it: its one line of stderr."""
    result = roost_cli(url, *args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), "a clean exit, no traceback"
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def with_client(url: str, body: Any) -> Any:
    async def session() -> Any:
        async with roost.connect(url) as broker:
            return await body(broker)

    return asyncio.run(session())


def test_topics_create_list_describe_delete(url: str) -> None:
    info = ok(url, "topic", "create", "t-clicks", "--partitions", "3",
              "--durability", "never", "--retention", "60")  # fmt: skip
    assert (info["name"], len(info["partitions"])) == ("t-clicks", 3)
    assert (info["config"]["durability"], info["config"]["retention_ms"]) == ("never", 60_000)
    assert "t-clicks" in ok(url, "topic", "list")
    assert ok(url, "topic", "describe", "t-clicks")["config"]["partitions"] == 3

    table = roost_cli(url, "topic", "list")
    assert table.exit_code == 0 and "t-clicks" in table.stdout
    described = roost_cli(url, "topic", "describe", "t-clicks")
    assert "durability" in described.stdout and "never" in described.stdout

    assert ok(url, "topic", "delete", "t-clicks", "-y") == {"deleted": "t-clicks"}
    assert "t-clicks" not in ok(url, "topic", "list")
    assert failed(url, "topic", "describe", "t-clicks") == "error: unknown topic 't-clicks'"


def test_a_compacted_topic_from_the_cli(url: str) -> None:
    info = ok(url, "topic", "create", "t-prices", "--cleanup", "compact",
              "--tombstone-retention", "90")  # fmt: skip
    assert (info["config"]["cleanup"], info["config"]["tombstone_retention_ms"]) == (
        "compact", 90_000,
    )  # fmt: skip
    described = roost_cli(url, "topic", "describe", "t-prices")
    assert "cleanup" in described.stdout and "compact" in described.stdout
    line = failed(url, "topic", "create", "t-bad", "--cleanup", "compact", "--retention", "60")
    assert line.startswith("error: invalid cleanup='compact'")
    text = roost_cli(url, "topic", "create", "t-table", "--cleanup", "compact,delete")
    assert text.exit_code == 0 and "cleanup compact,delete" in text.stdout


def test_queues_create_list_describe_purge_delete(url: str) -> None:
    spec = ok(url, "queue", "create", "q-jobs", "--fifo", "--partitions", "2",
              "--visibility-timeout", "5", "--max-deliveries", "3")  # fmt: skip
    assert (spec["mode"], spec["visibility_timeout_ms"], spec["max_deliveries"]) == (
        "keyed", 5000, 3,
    )  # fmt: skip
    assert spec["dead_letter"] == "q-jobs.dlq"
    ok(url, "topic", "create", "q-not-a-queue")
    names = [q["name"] for q in ok(url, "queue", "list")]
    assert "q-jobs" in names and "q-not-a-queue" not in names
    assert "q-jobs" in roost_cli(url, "queue", "list").stdout

    ok(url, "publish", "q-jobs", "a", "b", "c")
    ok(url, "publish", "q-jobs", "later", "--delay", "60")
    assert ok(url, "queue", "describe", "q-jobs")["backlog"] == 4
    peeked = ok(url, "queue", "peek", "q-jobs")
    assert sorted((p["value"], p["state"], p["delivery_count"]) for p in peeked) == [
        ("a", "pending", 0),
        ("b", "pending", 0),
        ("c", "pending", 0),
        ("later", "delayed", 0),
    ]
    assert ok(url, "queue", "describe", "q-jobs")["in_flight"] == 0, "peek took nothing"
    assert "delayed" in roost_cli(url, "queue", "peek", "q-jobs").stdout

    refused = roost_cli(url, "queue", "purge", "q-jobs", "--json")  # no terminal, no --yes
    assert refused.exit_code != 0 and "Pass --yes to confirm" in refused.stderr
    assert ok(url, "queue", "purge", "q-jobs", "--yes") == {"queue": "q-jobs", "purged": 4}
    stats = ok(url, "queue", "describe", "q-jobs")
    assert (stats["depth"], stats["delayed"], stats["backlog"]) == (0, 0, 0), "delayed too"

    assert roost_cli(url, "queue", "delete", "q-jobs").exit_code != 0
    assert ok(url, "queue", "delete", "q-jobs", "--yes") == {"deleted": "q-jobs"}
    assert "q-jobs" not in [q["name"] for q in ok(url, "queue", "list")]
    assert "q-jobs.dlq" in ok(url, "topic", "list"), "the dead-letter topic stays"


def test_exchange_bind_and_publish_through_it(url: str) -> None:
    ok(url, "topic", "create", "x-home")
    ok(url, "topic", "create", "x-audit")
    assert ok(url, "exchange", "declare", "x-events", "topic")["kind"] == "topic"
    ok(url, "exchange", "declare", "x-by-header", "headers")
    assert ok(url, "bind", "x-events", "x-home", "--key", "click.*")["changed"] is True
    assert ok(url, "bind", "x-events", "x-home", "--key", "click.*")["changed"] is False
    bound = ok(url, "bind", "x-by-header", "x-audit", "--header", "tenant=acme",
               "--header", "trace", "--match", "any")  # fmt: skip
    assert bound["binding"]["match"] == "any"

    listed = {e["name"]: e for e in ok(url, "exchange", "list")}
    assert [b["key"] for b in listed["x-events"]["bindings"]] == ["click.*"]
    assert set(listed["x-by-header"]["bindings"][0]["headers"]) == {"tenant", "trace"}
    assert "click.*" in roost_cli(url, "exchange", "list").stdout

    placed = ok(url, "publish", "--exchange", "x-events", "--routing-key", "click.home",
                "one", "two")  # fmt: skip
    assert placed == [{"topic": "x-home", "partition": 0, "offset": 0},
                      {"topic": "x-home", "partition": 0, "offset": 1}]  # fmt: skip
    placed = ok(url, "publish", "--exchange", "x-by-header", "--header", "tenant=acme", "hi")
    assert [p["topic"] for p in placed] == ["x-audit"]

    assert ok(url, "unbind", "x-events", "x-home", "--key", "click.*")["changed"] is True
    assert ok(url, "unbind", "x-events", "x-home", "--key", "click.*")["changed"] is False
    error = failed(url, "publish", "--exchange", "x-events", "--routing-key", "click.home", "x")
    assert "no binding" in error
    assert ok(url, "exchange", "delete", "x-events") == {"deleted": "x-events"}
    assert "x-events" not in [e["name"] for e in ok(url, "exchange", "list")]


def test_publish_from_arguments_stdin_and_a_file(url: str, tmp_path: Path) -> None:
    ok(url, "queue", "create", "p-in")
    placed = ok(url, "publish", "p-in", "a1", "a2", "--key", "k", "--header", "h=1",
                "--header", "trace=x")  # fmt: skip
    assert [p["offset"] for p in placed] == [0, 1]
    assert len(ok(url, "publish", "p-in", input="s1\ns2\r\ns3\n")) == 3
    assert len(ok(url, "publish", "p-in", "-", input="s4\n")) == 1
    lines = tmp_path / "lines.txt"
    lines.write_text("f1\nf2\n")
    assert [p["offset"] for p in ok(url, "publish", "p-in", "--file", str(lines))] == [6, 7]

    first = ok(url, "publish", "p-in", "once", "--dedup-id", "order-7")
    assert ok(url, "publish", "p-in", "once", "--dedup-id", "order-7") == first
    ok(url, "publish", "p-in", "later", "--delay", "60")

    got = ok(url, "consume", "p-in", "--wait", "0.2")
    assert [m["value"] for m in got] == ["a1", "a2", "s1", "s2", "s3", "s4", "f1", "f2", "once"]
    assert (got[0]["key"], got[0]["headers"]) == ("k", [["h", "1"], ["trace", "x"]])
    assert got[2]["key"] is None
    assert ok(url, "stats", "p-in")["delayed"] == 1, "'later' waits for its delay"

    human = roost_cli(url, "publish", "p-in", "shown")
    assert human.exit_code == 0 and "p-in" in human.stdout and "10" in human.stdout


def test_consume_with_and_without_ack(url: str) -> None:
    ok(url, "queue", "create", "c-work")
    ok(url, "publish", "c-work", "x", "y", "z")
    with_client(url, lambda broker: broker.publish("c-work", b"\xff\x00"))

    peeked = ok(url, "consume", "c-work", "--no-ack", "--max", "2", "--wait", "0.2")
    assert [(m["value"], m["delivery_count"]) for m in peeked] == [("x", 1), ("y", 1)]
    assert ok(url, "stats", "c-work")["depth"] == 4, "given back at once, not acked"

    got = ok(url, "consume", "c-work", "--wait", "0.2")
    assert [m["value"] for m in got] == ["x", "y", "z", {"base64": "/wA="}]
    assert [m["delivery_count"] for m in got] == [2, 2, 1, 1]
    assert ok(url, "stats", "c-work")["backlog"] == 0
    assert ok(url, "consume", "c-work", "--wait", "0") == []

    ok(url, "publish", "c-work", "line")
    human = roost_cli(url, "consume", "c-work", "--wait", "0.2")
    assert human.stdout == "c-work/0@4 line\n"
    assert human.stderr == "1 message acked\n"


def test_consume_a_stream_group(url: str) -> None:
    ok(url, "topic", "create", "s-log", "--partitions", "2")
    ok(url, "publish", "s-log", *[f"r{i}" for i in range(6)])
    first = ok(url, "consume", "s-log", "--group", "g", "--from", "earliest", "--max", "4",
               "--wait", "0.2")  # fmt: skip
    assert len(first) == 4
    looked = ok(url, "consume", "s-log", "--group", "g", "--no-ack", "--wait", "0.2")
    assert len(looked) == 2, "resumes after the commit"
    rest = ok(url, "consume", "s-log", "--group", "g", "--wait", "0.2")
    assert sorted(m["value"] for m in first + rest) == [f"r{i}" for i in range(6)]
    stats = ok(url, "stats", "s-log", "g")
    assert (stats["mode"], stats["lag"]) == ("stream", 0)
    assert "stream" in roost_cli(url, "stats", "s-log", "g").stdout

    error = failed(url, "consume", "s-log", "--group", "nobody", "--wait", "0")
    assert "nobody" in error, "no --from: a missing group is not made"


def test_dead_letters_list_peek_and_redrive(url: str) -> None:
    ok(url, "queue", "create", "d-mail", "--max-deliveries", "2")
    ok(url, "publish", "d-mail", "poison", "--key", "bad")
    ok(url, "publish", "d-mail", "other", "--key", "good")

    async def fail_everything(broker: roost.Client) -> None:
        for _ in range(2):
            for delivery in await broker.receive("d-mail", max_messages=10, wait=1):
                error = "boom: bad input" if delivery.key == b"bad" else "timeout"
                await delivery.nack(delay=0, error=error)

    with_client(url, fail_everything)
    # A nack that dead-letters returns before the dead-letter copy is durable, and only durable
    # records are counted and shown: wait for the broker's flush, a few ms.
    for _ in range(500):
        listed = ok(url, "dlq", "list", "d-mail")
        if listed["dead_letters"] == 2:
            break
    assert (listed["dead_letter_topic"], listed["dead_letters"]) == ("d-mail.dlq", 2)
    assert "d-mail.dlq" in roost_cli(url, "dlq", "list", "d-mail").stdout

    peeked = ok(url, "dlq", "peek", "d-mail")
    assert [m["value"] for m in peeked] == ["poison", "other"]
    headers = dict(peeked[0]["headers"])
    assert headers["x-roost-last-error"] == "boom: bad input"
    assert (headers["x-roost-source-topic"], headers["x-roost-delivery-count"]) == ("d-mail", "2")
    assert [m["delivery_count"] for m in peeked] == [2, 2], "tried twice where they died"
    assert ok(url, "dlq", "peek", "d-mail", "--max", "1") == peeked[:1]
    assert "boom: bad input" in roost_cli(url, "dlq", "peek", "d-mail").stdout
    assert ok(url, "dlq", "list", "d-mail")["dead_letters"] == 2, "peeking moves nothing"
    subscriptions = with_client(url, lambda broker: broker.list_subscriptions("d-mail.dlq"))
    assert not [s for s in subscriptions if s.name.startswith("roost-peek-")]

    assert ok(url, "dlq", "redrive", "d-mail", "--error-contains", "nothing like it")["moved"] == 0
    assert ok(url, "dlq", "redrive", "d-mail", "--error-contains", "boom")["moved"] == 1
    assert ok(url, "dlq", "list", "d-mail")["dead_letters"] == 1
    assert ok(url, "dlq", "redrive", "d-mail", "--key", "good", "--rate", "50")["moved"] == 1
    assert ok(url, "dlq", "peek", "d-mail") == []
    back = ok(url, "consume", "d-mail", "--wait", "0.2")
    assert [(m["value"], m["headers"]) for m in back] == [("poison", []), ("other", [])]


def test_stats_one_shot(url: str) -> None:
    ok(url, "queue", "create", "st-q")
    ok(url, "publish", "st-q", "a", "b")
    ok(url, "consume", "st-q", "--no-ack", "--max", "1", "--wait", "0")
    stats = ok(url, "stats", "st-q")
    assert (stats["depth"], stats["backlog"], stats["dead_letter_topic"]) == (2, 2, "st-q.dlq")
    assert stats["oldest_age_ms"] >= 0
    table = roost_cli(url, "stats", "st-q", "st-q")
    assert table.exit_code == 0
    for column in ("depth", "in flight", "delayed", "oldest age", "lag", "DLQ"):
        assert column in table.stdout


def test_errors_exit_1_with_one_clear_line(url: str) -> None:
    assert failed(url, "publish", "nope", "x") == "error: unknown topic 'nope'"
    assert failed(url, "consume", "nope", "--wait", "0") == "error: unknown topic 'nope'"
    ok(url, "topic", "create", "e-plain")
    assert "no subscription" in failed(url, "consume", "e-plain", "--wait", "0")
    assert "has no subscription" in failed(url, "dlq", "list", "e-plain")
    ok(url, "topic", "create", "e-plain")  # a declare: the same settings are fine
    conflict = failed(url, "topic", "create", "e-plain", "--partitions", "2")
    assert conflict == (
        "error: topic 'e-plain' already exists with other settings: partitions is 1, not 2"
    )
    assert "invalid" in failed(url, "exchange", "declare", "e-bad name", "direct")
    assert "cannot reach the broker" in failed("roost://127.0.0.1:1", "topic", "list")
    assert "roost://" in failed("http://localhost:7420", "topic", "list")

    usage = roost_cli(url, "publish", "e-plain", "x", "--dedup-id", "i", input="")
    assert usage.exit_code == 0, "one message with a dedup id is fine"
    usage = roost_cli(url, "publish", "e-plain", "x", "y", "--dedup-id", "i")
    assert usage.exit_code == 2 and "--dedup-id" in usage.stderr
    usage = roost_cli(url, "publish", "--routing-key", "k")
    assert usage.exit_code == 2


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("queue", "create", "n1", "--visibility-timeout", "inf"),
         "inf: a finite number of seconds, from 0 to 43200"),
        (("queue", "create", "n2", "--delay", "nan"), "nan: a finite number of seconds"),
        (("queue", "create", "n3", "--max-deliveries", "99999999999999999999"), "1<=x<=1000"),
        (("publish", "q", "v", "--delay", "1e20"), "1e20: a finite number of seconds"),
        (("publish", "q", "v", "--delay", "31536001"), "from 0 to 31536000"),  # 365 days
        (("queue", "create", "n5", "--delay", "86401"), "from 0 to 86400"),  # a queue's: 24 h
        (("stats", "q", "--watch", "nan"), "nan: a finite number of seconds, from 0.1"),
        (("dlq", "redrive", "q", "--rate", "0"), "0: a finite number of messages a second"),
        (("topic", "create", "n4", "--partitions", "5000"), "1<=x<=4096"),
    ],
)  # fmt: skip
def test_numbers_are_checked_before_anything_is_sent(args: tuple[str, ...], said: str) -> None:
    """A usage error (exit 2) naming the option, even with no broker to reach."""
    result = roost_cli("roost://127.0.0.1:1", *args)
    assert result.exit_code == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
