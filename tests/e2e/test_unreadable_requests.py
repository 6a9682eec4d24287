"""A request frame whose payload is no request: answered ``invalid_request`` naming the
field, on a connection that goes on serving (issue 13: these answered ``internal``, or closed
the connection, before).

Each definition request with a settings struct is sent raw, with an unknown key and with a
value of the wrong type in each of its nested maps, to a real native listener on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from roost.clock import ManualClock
from roost.protocols.native import messages as m
from roost.protocols.native.codec import NEED_DATA, Frame, Kind, NativeCodec
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native
from tests.protocols.native_support import raw_payload_frame

#: (payload, the field path the answer must name, the offending key or type).
CASES = [
    ([1, "t", {"partitions": 1, "journal": "x"}, {}], "`config`", "journal"),
    ([1, "t", {"partitions": "one"}, {}], "`config.partitions`", "int"),
    ([1, "t", {}, {"overflowing": "reject"}], "`policy`", "overflowing"),
    ([1, "t", {}, {"max_backlog_bytes": b"1"}], "`policy.max_backlog_bytes`", "int"),
    ([5, "q", {"fifo": True, "journal": 1}], "`options`", "journal"),
    ([5, "q", {"policy": {"bogus": 1}}], "`options.policy`", "bogus"),
    ([5, "q", {"policy": {"overflow": 3}}], "`options.policy.overflow`", "str"),
    ([7, {"name": "s", "topic": "t", "acked": [1]}], "`spec`", "acked"),
    ([7, {"name": "s", "topic": "t", "retry": {"kind": "fixed", "bogus": 1}}], "`spec.retry`",
     "bogus"),
    ([7, {"name": "s", "topic": "t", "retry": {"base_ms": "1s"}}], "`spec.retry.base_ms`", "int"),
    ([13, {"exchange": "x", "topic": "t", "wieght": 2}], "`binding`", "wieght"),
    ([13, {"exchange": "x", "topic": "t", "headers": {"h": 1}}], "`binding.headers[...]`",
     "bytes"),
    ([14, {"exchange": "x", "topic": "t", "bogus": 2}], "`binding`", "bogus"),
    ([14, {"exchange": "x", "topic": "t", "weight": "heavy"}], "`binding.weight`", "int"),
    ([51, "dlq", {"source": "t"}], "`where`", "source"),
    ([51, "dlq", {"headers": {"h": 5}}], "`where.headers[...]`", "bytes"),
]  # fmt: skip
OPERATION = {1: "CreateTopic", 5: "CreateQueue", 7: "CreateSubscription", 13: "Bind",
             14: "Unbind", 51: "Redrive"}  # fmt: skip


async def exchange(port: int, payloads: list[bytes]) -> list[Frame]:
    """Open a connection, send each payload as a REQUEST (correlation 1, 2, ...) and then a
    valid ListTopics, and return the answer frames, once every request has one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    codec = NativeCodec("client")
    writer.write(codec.send(Frame(Kind.HELLO, 0, m.Hello([4]))))
    wire = b"".join(raw_payload_frame(Kind.REQUEST, i + 1, p) for i, p in enumerate(payloads))
    last = len(payloads) + 1
    writer.write(wire + raw_payload_frame(Kind.REQUEST, last, msgspec.msgpack.encode([2])))
    answers: list[Frame] = []
    try:
        for _ in range(100):  # bounded: each read brings at least one byte
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, f"the broker closed the connection after {answers}"
            codec.receive_data(data)
            while (event := codec.next_event()) is not NEED_DATA:
                if event.kind in (Kind.RESPONSE, Kind.FAILURE):
                    answers.append(event)
            if len({a.correlation for a in answers}) == last:
                return answers
        raise AssertionError(f"requests left unanswered: {answers}")
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(("payload", "path", "offending"), CASES)
def test_a_bad_nested_field_is_invalid_request_naming_it_and_the_connection_goes_on(
    tmp_path: Path, payload: list[object], path: str, offending: str
) -> None:
    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            answers = await exchange(port, [msgspec.msgpack.encode(payload)])
        finally:
            await close_native(server)
            await host.aclose()
        by_id = {a.correlation: a for a in answers}
        failure = by_id[1].message
        assert isinstance(failure, m.Failure), by_id[1]
        assert failure.code == "invalid_request"
        assert failure.message.startswith(OPERATION[payload[0]])  # type: ignore[index]
        assert path in failure.message and offending in failure.message
        assert by_id[2].kind is Kind.RESPONSE  # the same connection still serves

    asyncio.run(main())


def test_many_unreadable_requests_leave_the_broker_and_its_topics_intact(tmp_path: Path) -> None:
    """Every case on one connection, between two good publishes: each answered on its own,
    nothing created by a refused request, the good messages all there."""

    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        server = await serve_native(host, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            good = msgspec.msgpack.encode(m.CreateQueue("kept", m.QueueSettings()))
            publish = msgspec.msgpack.encode(m.Publish("kept", [m.Out(b"v")]))
            bad = [msgspec.msgpack.encode(p) for p, _, _ in CASES]
            answers = await exchange(port, [good, publish, *bad, publish])
        finally:
            await close_native(server)
            await host.aclose()
        codes = {a.correlation: getattr(a.message, "code", "ok") for a in answers}
        assert codes[1] == codes[2] == codes[len(CASES) + 3] == "ok"
        assert {codes[i + 3] for i in range(len(CASES))} == {"invalid_request"}
        [topics] = [a.message for a in answers if a.correlation == len(CASES) + 4]
        assert isinstance(topics, m.Described)
        assert topics.value == ["kept", "kept.dlq"]  # no refused request created anything

    asyncio.run(main())
