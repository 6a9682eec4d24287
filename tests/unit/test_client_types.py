"""A type mistake is the caller's error, said as such, before anything is sent (issue 16,
item 1): over the network it used to close the connection (``ConnectionLost: ... it may or
may not have been done``), while embedded mode said ``InvalidRequest``. Now both say the same,
from the same check, and the connection goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

import roost
from roost import Outgoing
from roost.clock import ManualClock
from roost.errors import InvalidRequest
from tests.embedded_support import run, run_over_the_network

MISTAKES = [
    (lambda b: b.publish("q", {"id": 7}), "must be bytes or str, not a dict; pass serializer="),
    (lambda b: b.publish("q", b"v", key="k"), r"\(the key is a str\)"),
    (lambda b: b.publish("q", b"v", headers={"a": "1"}), "a header must be a \\(str, bytes\\)"),
    (lambda b: b.publish("q", b"v", headers=[("a", "1")]), "a header must be a \\(str, bytes\\)"),
    (lambda b: b.publish_batch("q", [Outgoing(value=7)]), r"\(the value is a int\)"),  # type: ignore[arg-type]
    (lambda b: b.publish_to_exchange("x", "k", 7), "must be bytes or str, not a int"),
    (lambda b: b.publish("q", object(), serializer="json"), "cannot be sent as JSON"),
]


async def mistakes_are_refused_and_the_client_goes_on(broker: roost.Client) -> None:
    await broker.create_queue("q")
    await broker.declare_exchange("x", "fanout")
    await broker.bind("x", "q")
    for call, message in MISTAKES:
        with pytest.raises(InvalidRequest, match=message):
            await call(broker)
    assert (await broker.publish("q", b"fine", headers={"trace": b"t1"})).offset == 0
    assert (await broker.stats("q")).backlog == 1  # type: ignore[union-attr]
    [delivery] = await broker.receive("q")
    assert delivery.message.headers == (("trace", b"t1"),), "a mapping's items, as pairs"


def test_embedded(data_dir: str, clock: ManualClock) -> None:
    run(data_dir, clock, mistakes_are_refused_and_the_client_goes_on)


def test_over_the_network(tmp_path: Path) -> None:
    run_over_the_network(tmp_path, mistakes_are_refused_and_the_client_goes_on)


NUMBERS = [
    (lambda b: b.create_queue("n1", visibility_timeout=float("inf")),
     "visibility_timeout=inf: a finite number of seconds"),
    (lambda b: b.create_queue("n2", delay=float("nan")), "delay=nan: a finite number"),
    (lambda b: b.publish("q", b"v", delay=1e20), "delay=1e\\+20: at most"),
    (lambda b: b.receive("q", wait=-1), "wait=-1: a finite number of seconds, >= 0"),
    (lambda b: b.create_queue("n3", max_deliveries=10**20), "CreateQueue cannot be sent"),
]  # fmt: skip


async def numbers_the_wire_cannot_carry_are_refused(broker: roost.Client) -> None:
    await broker.create_queue("q")
    network = not isinstance(broker._backend, roost.client.embedded.LocalBackend)  # type: ignore[attr-defined]
    for call, message in NUMBERS:
        if "cannot be sent" in message and not network:
            continue  # embedded mode encodes nothing: the broker's own bound refuses it
        with pytest.raises(InvalidRequest, match=message):
            await call(broker)
    assert (await broker.publish("q", b"fine")).offset == 0


def test_numbers_embedded(data_dir: str, clock: ManualClock) -> None:
    run(data_dir, clock, numbers_the_wire_cannot_carry_are_refused)


def test_numbers_over_the_network(tmp_path: Path) -> None:
    run_over_the_network(tmp_path, numbers_the_wire_cannot_carry_are_refused)
