"""Users, tokens and grants over the admin API: the real app over a real host, every answer
checked against the OpenAPI document (``support.check``), the clock driven.

Requests arrive with the bearer token of an administrator, ``boss``, made before the app
serves (once a user exists, nobody is anonymous); the refusal of everyone else is checked on
the handlers themselves, with the door a request of theirs would get.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from roost.admin import identities as endpoints
from roost.admin.endpoints import Call, status_of
from roost.clock import ManualClock
from roost.errors import NotAuthenticated, NotAuthorised
from roost.server.access import Grant, Principal
from roost.server.host import Host
from tests.admin.support import Admin, Body
from tests.admin.support import run as run_anonymous

PASSWORD = "correct horse"
DAY_MS = 86_400_000


def run(data_dir: str, clock: ManualClock, body: Body) -> None:
    """``body`` against the admin API, as the administrator ``boss`` (its bearer token)."""

    async def as_boss(admin: Admin) -> None:
        admin.host.identities.add_user("boss", PASSWORD, admin=True)
        token = admin.host.identities.create_token("boss").secret
        admin.http.headers["authorization"] = f"Bearer {token}"
        await body(admin)

    run_anonymous(data_dir, clock, as_boss)


def test_users_create_list_describe_password_delete(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        created = await admin.ok(
            "POST", "/api/v1/users", {"name": "ada", "password": PASSWORD}, status=201
        )
        assert created == {"name": "ada", "admin": False, "grants": [],
                           "created_ms": clock.now_ms()}  # fmt: skip
        root = await admin.ok(
            "POST", "/api/v1/users", {"name": "root", "password": PASSWORD, "admin": True}, 201
        )
        assert (root["admin"], root["grants"]) == (
            True, [{"operation": "admin", "kind": "broker", "pattern": ""}],
        )  # fmt: skip
        assert [u["name"] for u in await admin.ok("GET", "/api/v1/users")] == [
            "ada",
            "boss",
            "root",
        ]
        assert await admin.ok("GET", "/api/v1/users/ada") == created

        await admin.ok("PUT", "/api/v1/users/ada/password", {"password": "new password"}, 204)
        identities = admin.host.identities
        assert identities.authenticate_password("ada", "new password").name == "ada"
        with pytest.raises(NotAuthenticated):
            identities.authenticate_password("ada", PASSWORD)

        await admin.ok("DELETE", "/api/v1/users/ada", status=204)
        assert [u["name"] for u in await admin.ok("GET", "/api/v1/users")] == ["boss", "root"]

    run(data_dir, clock, body)


def test_user_errors(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/users", {"name": "ada", "password": PASSWORD}, 201)
        await admin.error("POST", "/api/v1/users", 409, "user_exists",
                          json={"name": "ada", "password": PASSWORD})  # fmt: skip
        error = await admin.error("POST", "/api/v1/users", 400, "invalid_config",
                                  json={"name": "bob", "password": "short"})  # fmt: skip
        assert "short" not in error["message"], "a password is never echoed"
        await admin.error("POST", "/api/v1/users", 400, "invalid_name",
                          json={"name": "b o b", "password": PASSWORD})  # fmt: skip
        await admin.error("POST", "/api/v1/users", 422, "invalid_request",
                          json={"name": "bob", "password": PASSWORD, "root": True})  # fmt: skip
        await admin.error("GET", "/api/v1/users/nobody", 404, "unknown_user")
        await admin.error("DELETE", "/api/v1/users/nobody", 404, "unknown_user")
        await admin.error("PUT", "/api/v1/users/nobody/password", 404, "unknown_user",
                          json={"password": PASSWORD})  # fmt: skip
        await admin.error("PUT", "/api/v1/users/ada/password", 400, "invalid_config",
                          json={"password": "short"})  # fmt: skip

    run(data_dir, clock, body)


def test_grants_list_grant_revoke(data_dir: str, clock: ManualClock) -> None:
    orders = {"operation": "publish", "kind": "topic", "pattern": "orders.*"}
    monitor = {"operation": "monitor", "kind": "broker", "pattern": ""}

    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/users", {"name": "ada", "password": PASSWORD}, 201)
        grants = "/api/v1/users/ada/grants"
        assert await admin.ok("POST", grants, orders, status=201) == [orders]
        assert await admin.ok("POST", grants, orders, status=200) == [orders], "already held"
        assert await admin.ok("POST", grants, {"operation": "monitor"}, 201) == [orders, monitor]
        assert await admin.ok("GET", grants) == [orders, monitor]
        ada = admin.host.identities.principal("ada")
        assert ada.may("publish", "topic", "orders.eu") and ada.monitor

        await admin.ok("DELETE", grants, orders, status=204)
        assert await admin.ok("GET", grants) == [monitor]
        assert not admin.host.identities.principal("ada").may("publish", "topic", "orders.eu")
        await admin.error("DELETE", grants, 404, "unknown_grant", json=orders)

        await admin.error("POST", grants, 400, "invalid_pattern",
                          json={**orders, "pattern": "orders*"})  # fmt: skip
        await admin.error("POST", grants, 400, "invalid_config",
                          json={"operation": "admin", "kind": "topic", "pattern": "x"})  # fmt: skip
        await admin.error("POST", grants, 400, "invalid_config", json={"operation": "read"})
        await admin.error("POST", grants, 422, "invalid_request", json={"op": "monitor"})
        await admin.error("GET", "/api/v1/users/nobody/grants", 404, "unknown_user")
        await admin.error("POST", "/api/v1/users/nobody/grants", 404, "unknown_user",
                          json=orders)  # fmt: skip

    run(data_dir, clock, body)


def test_tokens_create_once_list_without_secrets_revoke(data_dir: str, clock: ManualClock) -> None:
    async def body(admin: Admin) -> None:
        await admin.ok("POST", "/api/v1/users", {"name": "ada", "password": PASSWORD}, 201)
        await admin.ok("POST", "/api/v1/users", {"name": "bob", "password": PASSWORD}, 201)
        made = await admin.ok("POST", "/api/v1/tokens", {"user": "ada", "expires_in_ms": DAY_MS,
                              "description": "ci"}, status=201)  # fmt: skip
        assert made["secret"].startswith(f"rst_{made['id']}_")
        assert (made["user"], made["expires_ms"], made["description"]) == (
            "ada", clock.now_ms() + DAY_MS, "ci",
        )  # fmt: skip
        clock.advance(1)  # listed oldest first
        forever = await admin.ok("POST", "/api/v1/tokens", {"user": "bob"}, status=201)
        assert forever["expires_ms"] is None

        listed = await admin.ok("GET", "/api/v1/tokens")
        ours = [t["id"] for t in listed if t["user"] != "boss"]
        assert ours == [made["id"], forever["id"]]
        assert all("secret" not in t for t in listed)
        response = await admin.get("/api/v1/tokens")
        assert made["secret"] not in response.text
        assert [t["user"] for t in await admin.ok("GET", "/api/v1/tokens?user=bob")] == ["bob"]
        await admin.error("GET", "/api/v1/tokens?user=nobody", 404, "unknown_user")

        identities = admin.host.identities
        assert identities.authenticate_token(made["secret"]).name == "ada"
        clock.advance(DAY_MS)
        with pytest.raises(NotAuthenticated):
            identities.authenticate_token(made["secret"])

        await admin.ok("DELETE", f"/api/v1/tokens/{forever['id']}", status=204)
        with pytest.raises(NotAuthenticated):
            identities.authenticate_token(forever["secret"])
        await admin.error("DELETE", f"/api/v1/tokens/{forever['id']}", 404, "unknown_token")
        await admin.error("POST", "/api/v1/tokens", 404, "unknown_user", json={"user": "eve"})
        await admin.error("POST", "/api/v1/tokens", 422, "invalid_request",
                          json={"user": "ada", "expires_in_ms": 0})  # fmt: skip

        await admin.ok("DELETE", "/api/v1/users/ada", status=204)
        left = [t["user"] for t in await admin.ok("GET", "/api/v1/tokens")]
        assert left == ["boss"], "ada's tokens went with her"

    run(data_dir, clock, body)


@pytest.mark.parametrize(
    "who",
    [Principal("ada"), Principal("watcher", (Grant("monitor"),)),
     Principal("ops", (Grant("manage", "topic", "#"), Grant("consume", "queue", "#")))],
)  # fmt: skip
def test_only_administrators_reach_any_of_it(
    data_dir: str, clock: ManualClock, who: Principal
) -> None:
    """Every handler refuses a non-administrator (at the door) before it changes anything:
    with nothing else set up, only the admin check can answer."""
    body = SimpleNamespace(name="mallory", password=PASSWORD, admin=True, user="victim",
                           expires_in_ms=None, description="")  # fmt: skip

    async def main() -> None:
        host = await Host.start(data_dir, clock)
        try:
            host.identities.add_user("victim", PASSWORD)
            before = host.engine.metadata.version
            for endpoint in endpoints.ENDPOINTS:
                path = {"user": "victim", "token": "x"}
                call = Call(host.door(who), path, body, SimpleNamespace(user=None))
                with pytest.raises(NotAuthorised) as refused:
                    await endpoint.handler(call)
                assert status_of(refused.value) == 403, endpoint.path
                assert refused.value.operation == "admin"
            assert host.engine.metadata.version == before, "nothing changed"
            admin_call = Call(host.door(Principal("root", admin=True)), {}, None, None)
            assert [u.name for u in await endpoints.list_users(admin_call)] == ["victim"]
        finally:
            await host.aclose()

    asyncio.run(main())


def test_authentication_errors_are_401() -> None:
    assert status_of(NotAuthenticated("invalid, expired or revoked token")) == 401
