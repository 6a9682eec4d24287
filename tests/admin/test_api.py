"""The admin API end to end: the real Starlette app over a real host in a temporary directory,
on a driven clock, one resource per section, its success paths and its error paths.

Every answer is also checked against the OpenAPI document (``support.check``): its status is
documented for the operation and its body fits the schema. Topics are ``durability="never"``
so published records are readable at once; dead letters are settled by ticking the core
rather than waiting for the host's timer. Nothing sleeps.
"""

from __future__ import annotations

from typing import Any

from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.errors import StorageFailure
from roost.receipt import Receipt
from tests.admin.support import Admin, run

NEVER = {"durability": "never"}


async def publish(admin: Admin, topic: str, *values: bytes, **kw: Any) -> None:
    await admin.host.publish(topic, [Outgoing(value=v, **kw) for v in values])


async def dead_letter(admin: Admin, queue: str, *values: bytes, error: str = "boom") -> None:
    """Publish ``values`` to ``queue`` (max_deliveries=1) and fail each once."""
    await publish(admin, queue, *values)
    messages = await admin.host.receive(queue, queue, max_messages=len(values))
    admin.broker.nack(queue, queue, [m.receipt for m in messages], delay_ms=0, error=error)
    admin.broker.tick()  # the dead-letter appends are confirmed (never): finish the originals


# -- health ---------------------------------------------------------------------------------


def test_health_and_readiness(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        assert await admin.ok("GET", "/healthz") == {"status": "ok"}
        assert await admin.ok("GET", "/readyz") == {"status": "ready"}

        def refuse() -> None:
            raise StorageFailure("writing to the data directory", OSError(28, "No space left"))

        admin.host.engine.probe_write = refuse  # type: ignore[method-assign]
        error = await admin.error("GET", "/readyz", 503, "storage_failure")
        assert "No space left" in error["message"]
        assert await admin.ok("GET", "/healthz") == {"status": "ok"}, "alive though not ready"

    run(data_dir, clock, body)


def test_not_ready_once_the_host_closes(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.host.aclose()
        await admin.error("GET", "/readyz", 503, "storage_closed")
        await admin.error("GET", "/api/v1/topics", 503, "storage_closed")

    run(data_dir, clock, body)


# -- topics ---------------------------------------------------------------------------------


def test_topics_create_list_describe_read_delete(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        created = await admin.ok(
            "POST",
            "/api/v1/topics",
            {
                "name": "orders",
                "config": {"partitions": 2, **NEVER},
                "policy": {"max_backlog_messages": 9},
            },
            status=201,
        )
        assert created["name"] == "orders"
        assert created["config"]["partitions"] == 2
        assert created["policy"]["max_backlog_messages"] == 9
        assert created["subscriptions"] == []
        assert [t["name"] for t in await admin.ok("GET", "/api/v1/topics")] == ["orders"]
        await publish(
            admin, "orders", b"a", "é".encode(), b"\xff", partition=1, headers=[("h", b"v")]
        )
        described = await admin.ok("GET", "/api/v1/topics/orders")
        assert [p["end_offset"] for p in described["partitions"]] == [0, 3]
        read = await admin.ok("GET", "/api/v1/topics/orders/messages?partition=1&offset=1&limit=5")
        assert [(m["offset"], m["value_text"]) for m in read] == [(1, "é"), (2, None)]
        assert read[0]["headers"] == [{"name": "h", "value": "dg==", "text": "v"}]
        assert read[0]["state"] is None
        assert await admin.ok("GET", "/api/v1/topics/orders/messages") == []
        assert await admin.ok("DELETE", "/api/v1/topics/orders", status=204) is None
        assert await admin.ok("GET", "/api/v1/topics") == []

    run(data_dir, clock, body)


def test_a_compacted_topic_over_http(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        config = {"cleanup": "compact", "tombstone_retention_ms": 60_000}
        created = await admin.ok("POST", "/api/v1/topics", {"name": "kv", "config": config},
                                 status=201)  # fmt: skip
        assert created["config"]["cleanup"] == "compact"
        described = await admin.ok("GET", "/api/v1/topics/kv")
        assert described["config"]["tombstone_retention_ms"] == 60_000
        bad = {"name": "kv2", "config": {"cleanup": "compact", "retention_ms": 1000}}
        await admin.error("POST", "/api/v1/topics", 400, "invalid_config", json=bad)

    run(data_dir, clock, body)


def test_topic_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/topics", {"name": "t", "config": NEVER}, status=201)
        await admin.error("POST", "/api/v1/topics", 409, "topic_exists", json={"name": "t"})
        await admin.error("POST", "/api/v1/topics", 400, "invalid_name", json={"name": "../x"})
        bad_config = {"name": "u", "config": {"partitions": 0}}
        await admin.error("POST", "/api/v1/topics", 400, "invalid_config", json=bad_config)
        await admin.error("POST", "/api/v1/topics", 422, "invalid_request", json={"name": 7})
        unknown_field = {"name": "u", "colour": "red"}
        await admin.error("POST", "/api/v1/topics", 422, "invalid_request", json=unknown_field)
        await admin.error("POST", "/api/v1/topics", 400, "invalid_request", content=b"{nope")
        await admin.error(
            "POST", "/api/v1/topics", 413, "invalid_request", content=b" " * (2 << 20)
        )
        await admin.error("GET", "/api/v1/topics/nope", 404, "unknown_topic")
        await admin.error("DELETE", "/api/v1/topics/nope", 404, "unknown_topic")
        await admin.error("GET", "/api/v1/topics/t/messages?partition=3", 404, "unknown_partition")
        await admin.error("GET", "/api/v1/topics/t/messages?offset=5", 400, "offset_out_of_range")
        await admin.error("GET", "/api/v1/topics/t/messages?limit=0", 422, "invalid_request")
        await admin.error("GET", "/api/v1/topics/t/messages?limit=x", 422, "invalid_request")
        await admin.error("GET", "/api/v1/nowhere", 404, "not_found")
        await admin.error("PUT", "/api/v1/topics", 405, "invalid_request")
        assert [t["name"] for t in await admin.ok("GET", "/api/v1/topics")] == ["t"]

    run(data_dir, clock, body)


# -- subscriptions --------------------------------------------------------------------------


def test_subscriptions_create_describe_peek_purge_delete(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/topics", {"name": "t", "config": NEVER}, status=201)
        await admin.ok("POST", "/api/v1/topics", {"name": "t.dlq", "config": NEVER}, status=201)
        base = "/api/v1/topics/t/subscriptions"
        spec = {"name": "work", "start": "earliest", "dead_letter": "t.dlq", "max_deliveries": 3}
        created = await admin.ok("POST", base, spec, status=201)
        assert created["spec"]["mode"] == "queue"
        assert created["stats"]["depth"] == 0
        assert created["stream"] is None
        stream = {"name": "g", "mode": "stream", "start": "earliest"}
        assert (await admin.ok("POST", base, stream, status=201))["stats"] is None
        assert [s["name"] for s in await admin.ok("GET", base)] == ["g", "work"]
        await publish(admin, "t", b"one", b"two", b"three")
        [leased] = await admin.host.receive("t", "work", max_messages=1, visibility_ms=9_000)
        peeked = await admin.ok("GET", f"{base}/work/peek?limit=2")
        assert [(m["value_text"], m["state"]) for m in peeked] == [
            ("one", "leased"),
            ("two", "pending"),
        ]
        assert peeked[0]["until_ms"] == clock.now_ms() + 9_000
        assert peeked[0]["delivery_count"] == 1
        described = await admin.ok("GET", f"{base}/work")
        assert (described["stats"]["depth"], described["stats"]["in_flight"]) == (2, 1)
        assert (await admin.ok("GET", f"{base}/g"))["stream"]["lag"] == 3
        assert [m["value_text"] for m in await admin.ok("GET", f"{base}/g/peek")] == [
            "one", "two", "three",
        ]  # fmt: skip
        assert await admin.ok("POST", f"{base}/work/purge") == {"purged": 3}
        assert admin.broker.ack("t", "work", [leased.receipt]) == [leased.receipt]
        assert await admin.ok("GET", f"{base}/work/peek") == []
        assert await admin.ok("POST", f"{base}/g/purge") == {"purged": 3}
        assert (await admin.ok("GET", f"{base}/g"))["stream"]["lag"] == 0
        assert await admin.ok("DELETE", f"{base}/work", status=204) is None
        assert [s["name"] for s in await admin.ok("GET", base)] == ["g"]

    run(data_dir, clock, body)


def test_subscription_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/topics", {"name": "t", "config": NEVER}, status=201)
        base = "/api/v1/topics/t/subscriptions"
        no_dlq = {"name": "s"}
        await admin.error("POST", base, 400, "invalid_config", json=no_dlq)
        missing_dlq = {"name": "s", "dead_letter": "gone"}
        await admin.error("POST", base, 404, "unknown_topic", json=missing_dlq)
        forever = {"name": "s", "max_deliveries": None}
        await admin.ok("POST", base, forever, status=201)
        await admin.ok("POST", base, forever, status=201)  # a declare: the same is fine
        other = {**forever, "visibility_timeout_ms": 1000}
        await admin.error("POST", base, 409, "subscription_exists", json=other)
        await admin.error("POST", base, 422, "invalid_request", json={"name": "x", "mode": "fast"})
        await admin.error(
            "POST", "/api/v1/topics/nope/subscriptions", 404, "unknown_topic", json=forever
        )
        await admin.error("GET", "/api/v1/topics/nope/subscriptions", 404, "unknown_topic")
        await admin.error("GET", f"{base}/nobody", 404, "unknown_subscription")
        await admin.error("DELETE", f"{base}/nobody", 404, "unknown_subscription")
        await admin.error("GET", f"{base}/nobody/peek", 404, "unknown_subscription")
        await admin.error("POST", f"{base}/nobody/purge", 404, "unknown_subscription")
        await admin.error("GET", f"{base}/s/peek?partition=1", 404, "unknown_partition")
        await admin.error("GET", f"{base}/s/peek?limit=1001", 422, "invalid_request")

    run(data_dir, clock, body)


# -- queues ---------------------------------------------------------------------------------


def test_queues(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        created = await admin.ok(
            "POST", "/api/v1/queues", {"name": "jobs", "fifo": True, **NEVER}, status=201
        )
        assert (created["spec"]["mode"], created["spec"]["dead_letter"]) == ("keyed", "jobs.dlq")
        topics = await admin.ok("GET", "/api/v1/topics")
        assert [t["name"] for t in topics] == ["jobs", "jobs.dlq"]
        await publish(admin, "jobs", b"a", b"b", key=b"k")
        assert [q["spec"]["name"] for q in await admin.ok("GET", "/api/v1/queues")] == ["jobs"]
        assert (await admin.ok("GET", "/api/v1/queues/jobs"))["stats"]["backlog"] == 2
        peeked = await admin.ok("GET", "/api/v1/queues/jobs/peek?limit=1")
        assert [m["key_text"] for m in peeked] == ["k"]
        assert await admin.ok("POST", "/api/v1/queues/jobs/purge") == {"purged": 2}
        assert await admin.ok("DELETE", "/api/v1/queues/jobs", status=204) is None
        assert await admin.ok("GET", "/api/v1/queues") == []
        assert [t["name"] for t in await admin.ok("GET", "/api/v1/topics")] == ["jobs.dlq"]

    run(data_dir, clock, body)


def test_queue_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/queues", {"name": "q", **NEVER}, status=201)
        await admin.error("POST", "/api/v1/queues", 409, "config_conflict", json={"name": "q"})
        no_dlq = {"name": "r", "dead_letter": None}
        await admin.error("POST", "/api/v1/queues", 400, "invalid_config", json=no_dlq)
        await admin.error("POST", "/api/v1/queues", 422, "invalid_request", json={"fifo": True})
        await admin.error("GET", "/api/v1/queues/nope", 404, "unknown_topic")
        await admin.error("DELETE", "/api/v1/queues/nope", 404, "unknown_topic")
        await admin.error("GET", "/api/v1/queues/nope/peek", 404, "unknown_topic")
        await admin.error("POST", "/api/v1/queues/nope/purge", 404, "unknown_topic")
        # The dead-letter topic is a topic, not a queue.
        await admin.error("GET", "/api/v1/queues/q.dlq", 404, "unknown_subscription")
        stream = {"name": "s", "mode": "stream"}
        await admin.ok("POST", "/api/v1/topics", {"name": "s", "config": NEVER}, status=201)
        await admin.ok("POST", "/api/v1/topics/s/subscriptions", stream, status=201)
        await admin.error("GET", "/api/v1/queues/s", 404, "unknown_subscription")
        await admin.error("DELETE", "/api/v1/queues/s", 400, "invalid_request")

    run(data_dir, clock, body)


# -- exchanges and bindings -----------------------------------------------------------------


def test_exchanges_and_bindings(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/topics", {"name": "orders", "config": NEVER}, status=201)
        exchange = {"name": "events", "kind": "topic"}
        assert await admin.ok("POST", "/api/v1/exchanges", exchange, status=201) == {
            **exchange, "alternate": None,
        }  # fmt: skip
        await admin.ok("POST", "/api/v1/exchanges", exchange, status=200)  # identical: fine
        binding = {"exchange": "events", "topic": "orders", "key": "order.*"}
        bound = await admin.ok("POST", "/api/v1/bindings", binding, status=201)
        assert bound["key"] == "order.*"
        await admin.ok("POST", "/api/v1/bindings", binding, status=200)
        described = await admin.ok("GET", "/api/v1/exchanges/events")
        assert [b["topic"] for b in described["bindings"]] == ["orders"]
        assert [e["name"] for e in await admin.ok("GET", "/api/v1/exchanges")] == ["events"]
        assert len(await admin.ok("GET", "/api/v1/bindings?exchange=events")) == 1
        assert len(await admin.ok("GET", "/api/v1/bindings")) == 1
        response = await admin.request("DELETE", "/api/v1/bindings", json=binding)
        assert response.status_code == 204
        await admin.error("DELETE", "/api/v1/bindings", 404, "not_found", json=binding)
        assert await admin.ok("GET", "/api/v1/bindings") == []
        assert await admin.ok("DELETE", "/api/v1/exchanges/events", status=204) is None
        assert await admin.ok("GET", "/api/v1/exchanges") == []

    run(data_dir, clock, body)


def test_exchange_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/exchanges", {"name": "x", "kind": "direct"}, status=201)
        other = {"name": "x", "kind": "fanout"}
        await admin.error("POST", "/api/v1/exchanges", 409, "exchange_exists", json=other)
        bad_kind = {"name": "y", "kind": "random"}
        await admin.error("POST", "/api/v1/exchanges", 422, "invalid_request", json=bad_kind)
        await admin.error("GET", "/api/v1/exchanges/nope", 404, "unknown_exchange")
        await admin.error("DELETE", "/api/v1/exchanges/nope", 404, "unknown_exchange")
        await admin.error("GET", "/api/v1/bindings?exchange=nope", 404, "unknown_exchange")
        to_nothing = {"exchange": "x", "topic": "missing"}
        await admin.error("POST", "/api/v1/bindings", 404, "unknown_topic", json=to_nothing)
        await admin.ok("POST", "/api/v1/topics", {"name": "t", "config": NEVER}, status=201)
        await admin.ok("POST", "/api/v1/exchanges", {"name": "p", "kind": "topic"}, status=201)
        bad_pattern = {"exchange": "p", "topic": "t", "key": "a.#b"}
        await admin.error("POST", "/api/v1/bindings", 400, "invalid_pattern", json=bad_pattern)
        to_unknown = {"exchange": "nope", "topic": "t"}
        await admin.error("POST", "/api/v1/bindings", 404, "unknown_exchange", json=to_unknown)
        await admin.error("DELETE", "/api/v1/bindings", 404, "unknown_exchange", json=to_unknown)
        await admin.error("DELETE", "/api/v1/bindings", 400, "invalid_request", content=b"nope")

    run(data_dir, clock, body)


# -- dead letters ---------------------------------------------------------------------------


def test_dead_letters_list_peek_and_redrive(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        queue = {"name": "mail", "max_deliveries": 1, **NEVER}
        await admin.ok("POST", "/api/v1/queues", queue, status=201)
        await dead_letter(admin, "mail", b"to-ada", b"to-bob", error="smtp 550")
        assert await admin.ok("GET", "/api/v1/dead-letters") == [
            {"topic": "mail", "subscription": "mail", "dead_letter_topic": "mail.dlq",
             "dead_letters": 2},
        ]  # fmt: skip
        dead = await admin.ok("GET", "/api/v1/topics/mail.dlq/dead-letters")
        assert [m["value_text"] for m in dead] == ["to-ada", "to-bob"]
        why = {h["name"]: h["text"] for h in dead[0]["headers"]}
        assert why["x-roost-last-error"] == "smtp 550"
        assert why["x-roost-source-topic"] == "mail"
        redrive = {"key": None, "error_contains": "550", "rate_per_s": 100_000}
        only_bob = {**redrive, "headers": {"x-roost-source-offset": "1"}}
        assert await admin.ok("POST", "/api/v1/topics/mail.dlq/redrive", only_bob) == {"moved": 1}
        left = await admin.ok("GET", "/api/v1/topics/mail.dlq/dead-letters")
        assert [m["value_text"] for m in left] == ["to-ada"]
        assert (await admin.ok("GET", "/api/v1/dead-letters"))[0]["dead_letters"] == 1
        none = {**redrive, "source_topic": "elsewhere"}
        assert await admin.ok("POST", "/api/v1/topics/mail.dlq/redrive", none) == {"moved": 0}
        assert await admin.ok("POST", "/api/v1/topics/mail.dlq/redrive", redrive) == {"moved": 1}
        assert await admin.ok("GET", "/api/v1/topics/mail.dlq/dead-letters") == []
        back = await admin.host.receive("mail", "mail", max_messages=10)
        assert sorted(m.value for m in back) == [b"to-ada", b"to-bob"]

    run(data_dir, clock, body)


def test_dead_letters_page_past_a_cursor(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        queue = {"name": "mail", "max_deliveries": 1, **NEVER}
        await admin.ok("POST", "/api/v1/queues", queue, status=201)
        await dead_letter(admin, "mail", *[b"letter %d" % n for n in range(5)], error="550")
        pages: list[list[str]] = []
        after = ""
        while True:
            query = "limit=2" + (f"&after={after}" if after else "")
            page = await admin.ok("GET", f"/api/v1/topics/mail.dlq/dead-letters?{query}")
            if not page:
                break
            pages.append([m["value_text"] for m in page])
            after = f"{page[-1]['partition']}@{page[-1]['offset']}"
        assert pages == [["letter 0", "letter 1"], ["letter 2", "letter 3"], ["letter 4"]]
        # After a redrive began (its subscription reads the topic), pages are the same.
        moved = {"headers": {"x-roost-source-offset": "0"}, "rate_per_s": 100_000}
        assert await admin.ok("POST", "/api/v1/topics/mail.dlq/redrive", moved) == {"moved": 1}
        second = await admin.ok("GET", "/api/v1/topics/mail.dlq/dead-letters?limit=2&after=0@1")
        assert [m["value_text"] for m in second] == ["letter 2", "letter 3"]
        for bad in ("1", "a@b", "0@-1"):
            await admin.error(
                "GET", f"/api/v1/topics/mail.dlq/dead-letters?after={bad}", 422, "invalid_request"
            )

    run(data_dir, clock, body)


def test_dead_letter_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/queues", {"name": "q", **NEVER}, status=201)
        path = "/api/v1/topics/q.dlq/redrive"
        await admin.error("POST", path, 422, "invalid_request", json={"rate_per_s": 0})
        infinite = b'{"rate_per_s": 1e999}'
        await admin.error("POST", path, 422, "invalid_request", content=infinite)
        await admin.error("POST", path, 422, "invalid_request", json={"colour": "red"})
        # Found by fuzzing: a body that is not UTF-8 was answered 500 internal.
        await admin.error("POST", path, 400, "invalid_request", content=b'{"key": "\xa5"}')
        await admin.error("POST", "/api/v1/topics/nope/redrive", 404, "unknown_topic", json={})
        await admin.error("GET", "/api/v1/topics/nope/dead-letters", 404, "unknown_topic")
        await admin.error(
            "GET", "/api/v1/topics/q.dlq/dead-letters?limit=0", 422, "invalid_request"
        )
        await admin.error(
            "GET", "/api/v1/topics/q.dlq/dead-letters?partition=4", 404, "unknown_partition"
        )

    run(data_dir, clock, body)


# -- consumer groups ------------------------------------------------------------------------


def test_consumer_groups_describe_and_seek(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok(
            "POST",
            "/api/v1/topics",
            {"name": "log", "config": {"partitions": 2, **NEVER}},
            status=201,
        )
        group = {"name": "g", "mode": "stream", "start": "earliest"}
        await admin.ok("POST", "/api/v1/topics/log/subscriptions", group, status=201)
        await publish(admin, "log", b"a", b"b", partition=0)
        clock.advance(5_000)
        await publish(admin, "log", b"c", partition=1)
        stream = admin.broker.stream("log", "g")
        member = stream.join("worker-1")
        stream.fetch("worker-1", member.generation)
        stream.commit("worker-1", member.generation, {0: 1})
        [described] = await admin.ok("GET", "/api/v1/topics/log/groups")
        assert described == await admin.ok("GET", "/api/v1/topics/log/groups/g")
        assert described["members"] == [
            {"member_id": "worker-1", "partitions": [0, 1], "session_expires_in_ms": 10_000}
        ]
        rows = [
            (p["committed"], p["position"], p["lag"], p["owner"]) for p in described["partitions"]
        ]
        assert rows == [(1, 2, 1, "worker-1"), (0, 1, 1, "worker-1")]
        seek = "/api/v1/topics/log/groups/g/seek"
        error = await admin.error("POST", seek, 409, "group_active", json={"to": "earliest"})
        assert "1 member" in error["message"]
        stream.leave("worker-1")
        moved = await admin.ok("POST", seek, {"to": "latest", "partitions": [0]})
        assert [p["committed"] for p in moved["partitions"]] == [2, 0]
        moved = await admin.ok("POST", seek, {"timestamp_ms": clock.now_ms()})
        assert [p["committed"] for p in moved["partitions"]] == [2, 0]
        moved = await admin.ok("POST", seek, {"to": 1})
        assert [p["committed"] for p in moved["partitions"]] == [1, 1]

    run(data_dir, clock, body)


def test_consumer_group_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/queues", {"name": "q", **NEVER}, status=201)
        await admin.error("GET", "/api/v1/topics/nope/groups", 404, "unknown_topic")
        await admin.error("GET", "/api/v1/topics/q/groups/nope", 404, "unknown_subscription")
        await admin.error("GET", "/api/v1/topics/q/groups/q", 400, "invalid_request")
        assert await admin.ok("GET", "/api/v1/topics/q/groups") == []
        group = {"name": "g", "mode": "stream"}
        await admin.ok("POST", "/api/v1/topics/q/subscriptions", group, status=201)
        seek = "/api/v1/topics/q/groups/g/seek"
        await admin.error("POST", seek, 400, "invalid_request", json={})
        both = {"to": 0, "timestamp_ms": 1}
        await admin.error("POST", seek, 400, "invalid_request", json=both)
        await admin.error("POST", seek, 400, "offset_out_of_range", json={"to": 5})
        await admin.error("POST", seek, 404, "unknown_partition", json={"to": 0, "partitions": [3]})
        await admin.error("POST", seek, 422, "invalid_request", json={"to": "soonest"})
        await admin.error(
            "POST", "/api/v1/topics/q/groups/q/seek", 400, "invalid_request", json={"to": 0}
        )

    run(data_dir, clock, body)


def test_receipts_are_untouched_by_peeking(data_dir: str, clock: ManualClock) -> None:
    """A peek between a receive and its ack changes nothing the consumer sees."""

    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/queues", {"name": "q", **NEVER}, status=201)
        await publish(admin, "q", b"x")
        [message] = await admin.host.receive("q", "q", max_messages=1)
        await admin.ok("GET", "/api/v1/queues/q/peek")
        assert admin.broker.ack("q", "q", [Receipt(0, 0, 1)]) == []
        assert message.delivery_count == 1
        assert await admin.ok("GET", "/api/v1/queues/q/peek") == []

    run(data_dir, clock, body)
