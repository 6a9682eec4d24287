"""The door: every command is authorised, from the table of commands itself.

The matrix is generated from ``COMMANDS``: for each command, a principal without the grant it
declares is refused with ``NotAuthorised`` before anything happens; one holding a grant of the
same kind on another name is refused too; one holding exactly the declared grants gets past
the door (whatever the core then says). A public method of ``Door`` that is neither a command
nor plumbing fails the suite, and so does a command without an example call below: a new
operation cannot slip in unchecked.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from roost.clock import ManualClock
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.redrive import RedriveFilter
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import NotAuthenticated, NotAuthorised, RoostError, UnknownTopic
from roost.server.access import ANONYMOUS, TRUSTED, Grant, Principal
from roost.server.door import COMMANDS, PLUMBING, Door, Need
from roost.server.host import Host

#: One call per command, against the resources ``_setup`` makes: topic ``t`` with the stream
#: group ``g``, queue ``q`` (and ``q.dlq``), exchange ``x``.
EXAMPLES: dict[str, tuple[Any, ...]] = {
    "create_topic": ("t2",),
    "delete_topic": ("t9",),
    "list_topics": (),
    "describe_topic": ("t",),
    "policy": ("t",),
    "read": ("t", 0),
    "create_subscription": (SubscriptionSpec(name="s2", topic="t", mode="stream"),),
    "create_queue": ("q2",),
    "delete_queue": ("q9",),
    "delete_subscription": ("t", "s9"),
    "list_subscriptions": (),
    "stats": ("t", "g"),
    "peek": ("t", "g"),
    "purge": ("q", "q"),
    "declare_exchange": (ExchangeSpec("x2", "direct"),),
    "delete_exchange": ("x9",),
    "list_exchanges": (),
    "describe_exchange": ("x",),
    "bind": (BindingSpec("x", "t", key="k"),),
    "unbind": (BindingSpec("x", "t", key="k"),),
    "list_bindings": (),
    "publish": ("t", [Outgoing(value=b"v")]),
    "publish_now": ("t", [Outgoing(value=b"v")]),
    "publish_to_exchange": ("x", "k", [Outgoing(value=b"v")]),
    "receive": ("q", "q"),
    "lease": ("q", "q", 1),
    "check_subscription": ("q", "q"),
    "ack": ("q", "q", []),
    "nack": ("q", "q", []),
    "extend": ("q", "q", [], 1_000),
    "join": ("t", "g"),
    "heartbeat": ("t", "g", "m", 1),
    "leave": ("t", "g", "m"),
    "fetch": ("t", "g", "m", 1),
    "fetch_batches": ("t", "g", "m", 1),
    "commit": ("t", "g", "m", 1, {}),
    "seek": ("t", "g", "m", 1, 0, "earliest"),
    "seek_to_time": ("t", "g", "m", 1, 0, 0),
    "describe_group": ("t", "g"),
    "reset_group": ("t", "g", "earliest"),
    "peek_dead_letters": ("q.dlq",),
    "redrive": ("q.dlq", RedriveFilter(source_topic="t")),
    "start_redrive": ("q.dlq", RedriveFilter(source_topic="t")),
    "list_redrives": (),
    "cancel_redrive": ("q.dlq", "no-such-task"),
    "readings": (),
    "recovery": (),
    "check_ready": (),
    "list_users": (),
    "describe_user": ("ada",),
    "add_user": ("bob", "a long password"),
    "delete_user": ("nobody",),
    "set_password": ("ada", "another long one"),
    "list_grants": ("ada",),
    "grant": ("ada", Grant("monitor")),
    "revoke": ("ada", Grant("monitor")),
    "list_tokens": (),
    "create_token": ("ada",),
    "revoke_token": ("0000",),
    "repair": (),
}
#: Grants standing in for "may read about it": ``describe`` needs any grant on the resource.
ANY_GRANT = "consume"


def test_every_public_method_is_a_command_or_plumbing() -> None:
    public = {name for name in dir(Door) if not name.startswith("_")}
    assert public - set(COMMANDS) - PLUMBING == set()
    assert set(COMMANDS) <= public
    assert set(EXAMPLES) == set(COMMANDS), "a command needs an example call in EXAMPLES"


def needed_grants(name: str, rename: Callable[[str], str] = str) -> tuple[Grant, ...]:
    """The grants ``COMMANDS[name]`` asks for when called with ``EXAMPLES[name]``."""
    return as_grants(COMMANDS[name].needs(EXAMPLES[name], {}), rename)  # as if nothing exists


def as_grants(needs: list[Need], rename: Callable[[str], str] = str) -> tuple[Grant, ...]:
    """Grants that meet ``needs`` (any grant on it, for ``describe``: ``ANY_GRANT``)."""
    found: list[Grant] = []
    for operation, kind, name in needs:
        grant = (
            Grant(operation)
            if kind == "broker"
            else Grant(ANY_GRANT if operation == "describe" else operation, kind, rename(name))
        )
        if grant not in found:
            found.append(grant)
    return tuple(found)


async def attempt(door: Door, name: str) -> object:
    result = getattr(door, name)(*EXAMPLES[name])
    if inspect.isawaitable(result):
        result = await result
    return result


async def _setup(host: Host) -> None:
    door = host.door(TRUSTED)
    door.create_topic("t")
    door.create_subscription(SubscriptionSpec(name="g", topic="t", mode="stream"))
    door.create_queue("q")
    door.declare_exchange(ExchangeSpec("x", "direct"))
    host.identities.add_user("ada", "a long password")


def run(tmp_path: Any, body: Callable[[Host], Awaitable[None]]) -> None:
    async def main() -> None:
        host = await Host.start(str(tmp_path / "data"), ManualClock())
        try:
            await _setup(host)
            await body(host)
        finally:
            await host.aclose()

    asyncio.run(main())


CHECKED = sorted(name for name, c in COMMANDS.items() if c.operation not in ("list", "open"))


@pytest.mark.parametrize("name", CHECKED)
def test_a_principal_without_the_grant_is_refused(tmp_path: Any, name: str) -> None:
    async def body(host: Host) -> None:
        renamed = needed_grants(name, lambda value: f"not-{value}")
        elsewhere = tuple(grant for grant in renamed if grant.kind != "broker")
        for grants in [()] + ([elsewhere] if COMMANDS[name].resources else []):
            door = host.door(Principal("mallory", grants))
            with pytest.raises(NotAuthorised) as refused:
                await attempt(door, name)
            assert refused.value.user == "mallory"
            assert refused.value.code == "not_authorised"
        assert host.door(TRUSTED).list_topics() == ["q", "q.dlq", "t"]  # nothing was made

    run(tmp_path, body)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_principal_with_the_grant_gets_past_the_door(tmp_path: Any, name: str) -> None:
    async def body(host: Host) -> None:
        door = host.door(Principal("ada", needed_grants(name)))
        try:
            await attempt(door, name)
        except NotAuthorised:
            raise
        except RoostError:
            pass  # the core's answer (an unknown member, say): the door let it through

    run(tmp_path, body)


def test_lists_show_only_what_the_principal_may_see(tmp_path: Any) -> None:
    async def body(host: Host) -> None:
        door = host.door(Principal("ada", (Grant("publish", "topic", "t"),)))
        assert door.list_topics() == ["t"]
        assert [s.name for s in door.list_subscriptions()] == ["g"]
        assert door.list_exchanges() == []
        watcher = host.door(Principal("watcher", (Grant("monitor"),)))
        assert watcher.list_topics() == ["q", "q.dlq", "t"]
        with pytest.raises(NotAuthorised):
            watcher.create_topic("t3")

    run(tmp_path, body)


def test_a_queue_grant_covers_its_topic_and_group(tmp_path: Any) -> None:
    async def body(host: Host) -> None:
        door = host.door(Principal("worker", (Grant("consume", "queue", "q"),)))
        assert await door.receive("q", "q") == []
        with pytest.raises(NotAuthorised):
            await door.publish("q", [Outgoing(value=b"v")])

    run(tmp_path, body)


def test_a_delete_wakes_the_long_polls_on_its_topic(tmp_path: Any) -> None:
    """Whichever session deletes (here the admin API's door), a receive waiting on the topic
    fails at once with the error naming it, instead of waiting out its 20 s."""

    async def body(host: Host) -> None:
        consumer = host.door(TRUSTED)
        waiting = asyncio.create_task(consumer.receive("q", "q", wait_s=20))
        await asyncio.sleep(0)
        assert not waiting.done()
        host.door(TRUSTED).delete_queue("q")
        with pytest.raises(UnknownTopic):
            await asyncio.wait_for(waiting, 5)

    run(tmp_path, body)


def test_a_change_to_the_user_applies_from_the_next_command(tmp_path: Any) -> None:
    """A connection's door follows its user: a revoked grant, a deleted user and, for an
    anonymous connection, the first user defined, all take effect on the next command."""

    async def body(host: Host) -> None:
        identities = host.identities
        identities.add_user("cy", "a long password")
        identities.grant("cy", Grant("consume", "queue", "q"))
        door = host.door(identities.principal("cy"))
        assert door.lease("q", "q", 1) == []
        identities.revoke("cy", Grant("consume", "queue", "q"))
        with pytest.raises(NotAuthorised):
            door.lease("q", "q", 1)
        identities.grant("cy", Grant("consume", "queue", "q"))
        assert door.lease("q", "q", 1) == []
        identities.delete_user("cy")
        with pytest.raises(NotAuthenticated):
            door.lease("q", "q", 1)

    run(tmp_path, body)


def test_an_anonymous_door_closes_once_a_user_exists(tmp_path: Any) -> None:
    async def body(host: Host) -> None:
        door = host.door(ANONYMOUS)
        assert door.list_topics() == ["q", "q.dlq", "t"]
        host.identities.add_user("bob", "a long password", admin=True)
        with pytest.raises(NotAuthenticated):
            door.list_topics()

    run(tmp_path, body)


def test_writing_somewhere_takes_publish_there(tmp_path: Any) -> None:
    """A subscription's or a queue's dead-letter topic is written to, and so is a redrive's
    destination: each takes ``publish`` on it, beyond ``manage`` on what is made."""

    async def body(host: Host) -> None:
        manager = host.door(
            Principal("ops", (Grant("manage", "topic", "#"), Grant("manage", "queue", "#")))
        )
        with pytest.raises(NotAuthorised, match=r"publish on topic 'q\.dlq'"):
            manager.create_subscription(SubscriptionSpec(name="s", topic="t", dead_letter="q.dlq"))
        with pytest.raises(NotAuthorised, match=r"publish on topic 'jobs\.dlq'"):
            manager.create_queue("jobs")
        with pytest.raises(NotAuthorised, match="publish on topic 'elsewhere'"):
            manager.create_queue("jobs", dead_letter="elsewhere")
        with pytest.raises(NotAuthorised, match="publish on topic 't'"):
            await manager.redrive("q.dlq", RedriveFilter(), to="t")
        with pytest.raises(NotAuthorised, match="admin"):  # back to whatever each letter names
            await manager.redrive("q.dlq", RedriveFilter())
        owner = host.door(Principal("owner", (Grant("manage", "queue", "jobs.#"),
                                              Grant("publish", "topic", "jobs.#"))))  # fmt: skip
        assert owner.create_queue("jobs").dead_letter == "jobs.dlq"
        # A dead-letter topic that is not there yet would be made: manage on it too.
        publisher = host.door(Principal("pub", (Grant("manage", "queue", "new"),
                                                Grant("manage", "queue", "more"),
                                                Grant("publish", "topic", "#"))))  # fmt: skip
        with pytest.raises(NotAuthorised, match=r"manage on topic 'new\.dlq'"):
            publisher.create_queue("new")
        assert publisher.create_queue("more", dead_letter="jobs.dlq").dead_letter == "jobs.dlq"

    run(tmp_path, body)


def test_an_alternate_exchange_takes_publish_on_it(tmp_path: Any) -> None:
    """What an exchange does not route goes to its alternate: declaring one takes ``publish``
    on the alternate, or whoever may publish to the first reaches the alternate's topics."""

    async def body(host: Host) -> None:
        mine = (Grant("manage", "exchange", "mine"), Grant("publish", "exchange", "mine"))
        door = host.door(Principal("ada", mine))
        with pytest.raises(NotAuthorised, match="publish on exchange 'x'"):
            door.declare_exchange(ExchangeSpec("mine", "direct", alternate="x"))
        assert door.declare_exchange(ExchangeSpec("mine", "direct")).alternate is None
        bob = (Grant("manage", "exchange", "b"), Grant("publish", "exchange", "x"))
        allowed = host.door(Principal("bob", bob))
        assert allowed.declare_exchange(ExchangeSpec("b", "direct", "x")).alternate == "x"

    run(tmp_path, body)


def test_a_user_made_again_or_given_a_new_password_is_not_who_logged_in(tmp_path: Any) -> None:
    async def body(host: Host) -> None:
        identities = host.identities
        identities.add_user("cy", "a long password")
        door = host.door(identities.principal("cy"))
        assert door.list_topics() == []
        identities.delete_user("cy")
        identities.add_user("cy", "a long password", admin=True)  # someone else, same name
        with pytest.raises(NotAuthenticated, match="changed"):
            door.list_topics()
        again = host.door(identities.principal("cy"))
        assert again.list_topics() == ["q", "q.dlq", "t"]
        identities.set_password("cy", "another long password")
        with pytest.raises(NotAuthenticated, match="changed"):
            again.list_topics()

    run(tmp_path, body)
