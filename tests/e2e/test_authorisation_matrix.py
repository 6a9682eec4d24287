"""Every operation, over the native protocol and over HTTP: refused without its grant, done
with it. The grants come from the door's own table (``COMMANDS``), not from this file.

For each native request type and each admin endpoint, on a fresh broker:

1. an administrator's request is recorded to learn which door commands it runs;
2. a user with no grant at all is refused (``NotAuthorised`` / 403 ``not_authorised``), unless
   the request lists (then it is answered, showing nothing);
3. a user holding exactly the grants those commands declare (on the names this file uses)
   gets the same success as the administrator.

The tables below must name every request type and every endpoint: a new operation added
without an example here fails the first test, and one added without a check fails step 2.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import roost
from roost.admin.app import ENDPOINTS, build_app
from roost.admin.config import AdminConfig
from roost.client.network import NetworkBackend
from roost.clock import ManualClock
from roost.core.model import SubscriptionSpec
from roost.core.redrive import RedriveFilter
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import NotAuthorised, RoostError
from roost.protocols.native import messages as m
from roost.server.access import TRUSTED, Grant, Principal
from roost.server.door import COMMANDS, Door
from roost.server.host import Host
from roost.server.native_server import close_native, serve_native
from tests.unit.test_door import as_grants

PASSWORD = "a long password"
OUT = [m.Out(b"v")]
#: One request per native request type, on the names ``_setup`` makes (as the door's own
#: matrix in tests/unit/test_door.py uses): topic t with stream group g, queue q, exchange x.
NATIVE: dict[type[m.Request], m.Request] = {
    m.CreateTopic: m.CreateTopic("t2"),
    m.ListTopics: m.ListTopics(),
    m.DescribeTopic: m.DescribeTopic("t"),
    m.DeleteTopic: m.DeleteTopic("t"),
    m.CreateQueue: m.CreateQueue("q2"),
    m.DeleteQueue: m.DeleteQueue("q"),
    m.CreateSubscription: m.CreateSubscription(
        m.SubscriptionSettings(name="s2", topic="t", mode="stream")
    ),
    m.ListSubscriptions: m.ListSubscriptions(),
    m.DeleteSubscription: m.DeleteSubscription("t", "g"),
    m.DeclareExchange: m.DeclareExchange("x2", "direct"),
    m.DeleteExchange: m.DeleteExchange("x"),
    m.ListExchanges: m.ListExchanges(),
    m.Bind: m.Bind(m.Binding(exchange="x", topic="t", key="k")),
    m.Unbind: m.Unbind(m.Binding(exchange="x", topic="t", key="k")),
    m.ListBindings: m.ListBindings(),
    m.Publish: m.Publish("t", OUT),
    m.PublishToExchange: m.PublishToExchange("x", "k", OUT),
    m.Receive: m.Receive("q", "q"),
    m.Ack: m.Ack("q", "q", []),
    m.Nack: m.Nack("q", "q", []),
    m.Extend: m.Extend("q", "q", [], 1_000),
    m.Subscribe: m.Subscribe("q", "q", 10),
    m.Join: m.Join("t", "g"),
    m.Heartbeat: m.Heartbeat("t", "g", "m", 1),
    m.Leave: m.Leave("t", "g", "m"),
    m.Fetch: m.Fetch("t", "g", "m", 1),
    m.FetchBatches: m.FetchBatches("t", "g", "m", 1),
    m.Commit: m.Commit("t", "g", "m", 1, {}),
    m.Seek: m.Seek("t", "g", "m", 1, 0, "earliest"),
    m.SeekToTime: m.SeekToTime("t", "g", "m", 1, 0, 0),
    m.Stats: m.Stats("q", "q"),
    m.Redrive: m.Redrive("q.dlq"),
    m.Peek: m.Peek("q", "q"),
    m.Purge: m.Purge("q", "q"),
    m.StartRedrive: m.StartRedrive("q.dlq"),
    m.ListRedrives: m.ListRedrives(),
    m.CancelRedrive: m.CancelRedrive("q.dlq", "no-such-task"),
}
#: Requests that are not operations on the broker: ending a subscribe this connection made.
CONNECTION_ONLY = {m.Unsubscribe}
T, Q = "/api/v1/topics/t", "/api/v1/queues/q"
SUB = T + "/subscriptions/g"
#: One request per admin endpoint: (method, path template) -> (path, JSON body).
HTTP: dict[tuple[str, str], tuple[str, Any]] = {
    ("GET", "/api/v1/topics"): ("/api/v1/topics", None),
    ("POST", "/api/v1/topics"): ("/api/v1/topics", {"name": "t2"}),
    ("GET", "/api/v1/topics/{topic}"): (T, None),
    ("DELETE", "/api/v1/topics/{topic}"): (T, None),
    ("GET", "/api/v1/topics/{topic}/messages"): (T + "/messages?partition=0", None),
    ("GET", "/api/v1/topics/{topic}/subscriptions"): (T + "/subscriptions", None),
    ("POST", "/api/v1/topics/{topic}/subscriptions"): (
        T + "/subscriptions", {"name": "s2", "mode": "stream"}
    ),
    ("GET", "/api/v1/topics/{topic}/subscriptions/{name}"): (SUB, None),
    ("DELETE", "/api/v1/topics/{topic}/subscriptions/{name}"): (SUB, None),
    ("GET", "/api/v1/topics/{topic}/subscriptions/{name}/peek"): (SUB + "/peek", None),
    ("POST", "/api/v1/topics/{topic}/subscriptions/{name}/purge"): (SUB + "/purge", None),
    ("GET", "/api/v1/queues"): ("/api/v1/queues", None),
    ("POST", "/api/v1/queues"): ("/api/v1/queues", {"name": "q2"}),
    ("GET", "/api/v1/queues/{name}"): (Q, None),
    ("DELETE", "/api/v1/queues/{name}"): (Q, None),
    ("GET", "/api/v1/queues/{name}/peek"): (Q + "/peek", None),
    ("POST", "/api/v1/queues/{name}/purge"): (Q + "/purge", None),
    ("GET", "/api/v1/exchanges"): ("/api/v1/exchanges", None),
    ("POST", "/api/v1/exchanges"): ("/api/v1/exchanges", {"name": "x2", "kind": "direct"}),
    ("GET", "/api/v1/exchanges/{exchange}"): ("/api/v1/exchanges/x", None),
    ("DELETE", "/api/v1/exchanges/{exchange}"): ("/api/v1/exchanges/x", None),
    ("GET", "/api/v1/bindings"): ("/api/v1/bindings", None),
    ("POST", "/api/v1/bindings"): ("/api/v1/bindings", {"exchange": "x", "topic": "t"}),
    ("DELETE", "/api/v1/bindings"): ("/api/v1/bindings", {"exchange": "x", "topic": "t"}),
    ("GET", "/api/v1/dead-letters"): ("/api/v1/dead-letters", None),
    ("GET", "/api/v1/topics/{topic}/dead-letters"): ("/api/v1/topics/q.dlq/dead-letters", None),
    ("POST", "/api/v1/topics/{topic}/redrive"): ("/api/v1/topics/q.dlq/redrive", {}),
    ("POST", "/api/v1/topics/{topic}/redrive-tasks"): ("/api/v1/topics/q.dlq/redrive-tasks", {}),
    ("GET", "/api/v1/topics/{topic}/redrive-tasks"): ("/api/v1/topics/q.dlq/redrive-tasks", None),
    ("GET", "/api/v1/redrive-tasks"): ("/api/v1/redrive-tasks", None),
    ("DELETE", "/api/v1/topics/{topic}/redrive-tasks/{task}"): (
        "/api/v1/topics/q.dlq/redrive-tasks/TASK", None
    ),
    ("GET", "/api/v1/topics/{topic}/groups"): (T + "/groups", None),
    ("GET", "/api/v1/topics/{topic}/groups/{group}"): (T + "/groups/g", None),
    ("POST", "/api/v1/topics/{topic}/groups/{group}/seek"): (
        T + "/groups/g/seek", {"to": "earliest"}
    ),
    ("GET", "/api/v1/users"): ("/api/v1/users", None),
    ("POST", "/api/v1/users"): ("/api/v1/users", {"name": "bob", "password": PASSWORD}),
    ("GET", "/api/v1/users/{user}"): ("/api/v1/users/carol", None),
    ("DELETE", "/api/v1/users/{user}"): ("/api/v1/users/carol", None),
    ("PUT", "/api/v1/users/{user}/password"): (
        "/api/v1/users/carol/password", {"password": "another long one"}
    ),
    ("GET", "/api/v1/users/{user}/grants"): ("/api/v1/users/carol/grants", None),
    ("POST", "/api/v1/users/{user}/grants"): (
        "/api/v1/users/carol/grants", {"operation": "monitor"}
    ),
    ("DELETE", "/api/v1/users/{user}/grants"): (
        "/api/v1/users/carol/grants", {"operation": "monitor"}
    ),
    ("GET", "/api/v1/tokens"): ("/api/v1/tokens", None),
    ("POST", "/api/v1/tokens"): ("/api/v1/tokens", {"user": "carol"}),
    ("DELETE", "/api/v1/tokens/{token}"): ("/api/v1/tokens/TOKEN", None),
    ("GET", "/api/v1/recovery"): ("/api/v1/recovery", None),
    ("POST", "/api/v1/storage/repair"): ("/api/v1/storage/repair", None),
}  # fmt: skip


def test_the_tables_name_every_request_and_endpoint() -> None:
    requests = set(m.AnyRequest.__args__)  # type: ignore[attr-defined]
    assert requests - CONNECTION_ONLY == set(NATIVE)
    operations = {(e.method, e.path) for e in ENDPOINTS if not e.public}
    assert operations == set(HTTP)


# -- recording which door commands a request runs ---------------------------------------


Call = tuple[str, tuple[Any, ...], dict[str, Any]]


class RecordingDoor(Door):
    """A door that notes each command called through it, with its arguments."""

    calls: list[Call]

    def __getattribute__(self, name: str) -> Any:
        found = object.__getattribute__(self, name)
        if name not in COMMANDS:
            return found
        calls = object.__getattribute__(self, "calls")

        def noted(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, args, kwargs))
            return found(*args, **kwargs)

        return noted


def record_doors(host: Host) -> list[Call]:
    """Make ``host.door`` hand out recording doors; the list of the commands they ran."""
    calls: list[Call] = []
    made = host.door

    def door(principal: Principal) -> Door:
        recording = RecordingDoor.__new__(RecordingDoor)
        recording.__dict__.update(made(principal).__dict__)
        recording.calls = calls
        return recording

    host.door = door  # type: ignore[method-assign]
    return calls


def grants_for(calls: list[Call]) -> tuple[Grant, ...]:
    """The grants the recorded commands ask for, called as they were (``Command.needs``)."""
    needs = [need for name, args, kwargs in calls for need in COMMANDS[name].needs(args, kwargs)]
    return as_grants(needs)


def lists(calls: list[Call]) -> bool:
    """The request lists: its first command filters what it shows and the rest only describe
    what that showed. It is answered, showing nothing one may not see."""
    operations = [COMMANDS[name].operation for name, _, _ in calls]
    return operations[0] == "list" and set(operations) <= {"list", "describe"}


@contextlib.asynccontextmanager
async def broker(tmp_path: Path, name: str) -> AsyncIterator[Host]:
    host = await Host.start(str(tmp_path / name), ManualClock())
    try:
        door = host.door(TRUSTED)
        door.create_topic("t")
        door.create_subscription(SubscriptionSpec(name="g", topic="t", mode="stream"))
        door.create_queue("q")
        door.declare_exchange(ExchangeSpec("x", "direct"))
        door.bind(BindingSpec("x", "t"))
        host.identities.add_user("root", PASSWORD, admin=True)
        host.identities.add_user("ada", PASSWORD)  # given what each operation needs
        host.identities.add_user("carol", PASSWORD)  # the user the user endpoints act on
        host.identities.grant("carol", Grant("monitor"))  # a grant to revoke
        host.identities.add_user("nobody", PASSWORD)
        yield host
    finally:
        await host.aclose()


def give(host: Host, user: str, grants: tuple[Grant, ...]) -> None:
    for grant in grants:
        host.identities.grant(user, grant)


# -- the native protocol ------------------------------------------------------------------


async def native_call(port: int, user: str, request: m.Request) -> object:
    """``request`` as ``user``: its answer, or the Roost error it raised."""
    async with roost.connect(
        f"roost://127.0.0.1:{port}", username=user, password=PASSWORD, reconnect=False
    ) as client:
        backend: NetworkBackend = client._backend  # type: ignore[assignment]
        try:
            if isinstance(request, m.Subscribe):
                pushed = await backend.subscribe(request)
                await pushed.close()
                return m.Done()
            return await backend.call(request)
        except RoostError as e:
            return e


async def on_native(host: Host, run: Callable[[int], Any]) -> Any:
    listener = await serve_native(host, "127.0.0.1", 0, failed_auth_delay_s=0)
    try:
        return await run(listener.sockets[0].getsockname()[1])
    finally:
        await close_native(listener)


@pytest.mark.parametrize("kind", list(NATIVE), ids=lambda kind: kind.__name__)
def test_over_the_native_protocol(tmp_path: Path, kind: type[m.Request]) -> None:
    request = NATIVE[kind]

    async def body() -> None:
        async with broker(tmp_path, "recorded") as host:
            calls = record_doors(host)
            done = await on_native(host, lambda port: native_call(port, "root", request))
            assert not isinstance(done, NotAuthorised), done
            assert calls, "the request ran no door command"
        async with broker(tmp_path, "checked") as host:
            refused = await on_native(host, lambda port: native_call(port, "nobody", request))
            if lists(calls):
                assert not isinstance(refused, RoostError), refused
                assert refused == type(refused)([]), refused  # answered, showing nothing
            else:
                assert isinstance(refused, NotAuthorised), refused
            give(host, "ada", grants_for(calls))
            granted = await on_native(host, lambda port: native_call(port, "ada", request))
            assert type(granted) is type(done), (granted, done)

    asyncio.run(body())


# -- the admin API ------------------------------------------------------------------------


async def http_call(host: Host, user: str, method: str, path: str, body: Any) -> httpx.Response:
    app = build_app(host, config=AdminConfig(failed_login_delay_ms=0))
    token = host.identities.create_token(user).secret
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    if "TOKEN" in path:  # revoke a token of carol's that exists on this broker
        path = path.replace("TOKEN", host.identities.create_token("carol").id)
    if "TASK" in path:  # cancel a redrive task running on this broker
        running = [t for t in host.redrive_tasks.list("q.dlq") if t.state == "running"]
        task = (
            running[0] if running else host.redrive_tasks.start("q.dlq", RedriveFilter(), 1, None)
        )
        path = path.replace("TASK", task.id)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as http:
        return await http.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("operation", list(HTTP), ids=lambda op: f"{op[0]} {op[1]}")
def test_over_http(tmp_path: Path, operation: tuple[str, str]) -> None:
    method = operation[0]
    path, body = HTTP[operation]

    async def run() -> None:
        async with broker(tmp_path, "recorded") as host:
            calls = record_doors(host)
            done = await http_call(host, "root", method, path, body)
            assert done.status_code < 300, done.text
            assert calls, "the endpoint ran no door command"
        async with broker(tmp_path, "checked") as host:
            refused = await http_call(host, "nobody", method, path, body)
            if lists(calls):
                assert (refused.status_code, refused.json()) == (200, []), refused.text
            else:
                assert refused.status_code == 403, refused.text
                assert refused.json()["error"]["code"] == "not_authorised"
            give(host, "ada", grants_for(calls))
            granted = await http_call(host, "ada", method, path, body)
            assert granted.status_code == done.status_code, granted.text

    asyncio.run(run())
