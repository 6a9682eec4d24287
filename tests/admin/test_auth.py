"""The admin listener's gate (auth.py) end to end through the real app: who may ask, from
where, with what; tokens, basic auth and cookie sessions with their CSRF token; what stays
open. The clock is driven and a wrong password's pause is recorded, never slept."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from starlette.applications import Starlette

from roost.admin.app import ENDPOINTS
from roost.admin.config import AdminConfig
from roost.admin.endpoints import route
from roost.clock import ManualClock
from roost.server.access import TRUSTED, Grant
from roost.server.host import Host
from tests.admin.auth_support import JSON_HEADERS, PASSWORD, Served, error_code, serve

TOPICS = "/api/v1/topics"
QUEUE = {"name": "jobs", "durability": "never"}
FOREIGN_ORIGINS = [
    "http://evil.example", "https://localhost.evil.example", "null", "http://localhost:8080",
    "http://localhost@evil.example", "localhost",
]  # fmt: skip
#: What a form or a fetch without a preflight may send, a near miss, and nothing at all.
NOT_JSON = [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonx", None,
]  # fmt: skip


# -- no users ---------------------------------------------------------------------------------


def test_with_no_users_a_loopback_listener_serves_everyone_as_anonymous(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        created = await s.http.post("/api/v1/queues", json=QUEUE)
        assert created.status_code == 201, created.text
        assert (await s.http.post("/api/v1/queues/jobs/purge", headers=JSON_HEADERS)).json() == {
            "purged": 0
        }
        me = await s.http.get("/session")
        assert me.json() == {"user": "anonymous", "csrf_token": None}
        assert (await s.http.get("/")).status_code == 200, "the dashboard, no login"

    serve(data_dir, clock, body)


@pytest.mark.parametrize("allow_anonymous", [False, True])
def test_with_no_users_elsewhere_only_allow_anonymous_serves(
    data_dir: str, clock: ManualClock, allow_anonymous: bool
) -> None:
    async def body(s: Served) -> None:
        answer = await s.http.get(TOPICS)
        if allow_anonymous:
            assert answer.status_code == 200
        else:
            assert (answer.status_code, error_code(answer)) == (401, "not_authenticated")
            assert "no users are defined" in answer.json()["error"]["message"]
        assert (await s.http.get("/healthz")).status_code == 200

    config = AdminConfig(listen="0.0.0.0", allow_anonymous=allow_anonymous)
    serve(data_dir, clock, body, config)


# -- once a user exists -----------------------------------------------------------------------


def test_once_a_user_exists_every_request_but_health_authenticates(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        for path in (TOPICS, "/api/v1/queues/nope", "/openapi.json", "/nowhere", "/session"):
            refused = await s.http.get(path)
            assert (refused.status_code, error_code(refused)) == (401, "not_authenticated"), path
            assert refused.headers["www-authenticate"] == 'Bearer realm="roost"'
            assert refused.headers["cache-control"] == "no-store"
        purge = await s.http.post("/api/v1/queues/jobs/purge", headers=JSON_HEADERS)
        assert purge.status_code == 401
        assert (await s.http.get("/healthz")).json() == {"status": "ok"}
        assert (await s.http.get("/readyz")).json() == {"status": "ready"}
        page = await s.http.get("/")
        assert (page.status_code, page.headers["location"]) == (303, "/login")
        login_page = await s.http.get("/login")
        assert login_page.status_code == 200 and "<form" in login_page.text
        assert (await s.http.get("/dashboard/static/login.js")).status_code == 200

    serve(data_dir, clock, body)


def test_bearer_tokens_and_basic_auth(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        token = s.token("ada")
        assert (await s.http.get(TOPICS, headers=token)).json() == []
        created = await s.http.post(TOPICS, json={"name": "t"}, headers=token)
        assert created.status_code == 201
        assert (await s.http.get(TOPICS, auth=("ada", PASSWORD))).status_code == 200
        assert s.pauses == []
        me = await s.http.get("/session", headers=token)
        assert me.json() == {"user": "ada", "csrf_token": None}, "no cookie, no CSRF token"

        for headers in (
            {"authorization": "Bearer rst_0123_nope"},
            {"authorization": "Bearer " + token["authorization"][7:] + "x"},
            {"authorization": "Basic !!!"},
            {"authorization": "Basic YWRh"},  # "ada", no colon
            {"authorization": "Digest username=ada"},
        ):
            refused = await s.http.get(TOPICS, headers=headers)
            assert (refused.status_code, error_code(refused)) == (401, "not_authenticated")
        assert s.pauses == [], "nothing to slow down: no password was wrong"
        wrong = await s.http.get(TOPICS, auth=("ada", "not the password"))
        assert wrong.status_code == 401
        assert s.pauses == [1.0], "a wrong password waits failed_login_delay_ms"
        s.host.identities.revoke_token(s.host.identities.list_tokens("ada")[0].id)
        assert (await s.http.get(TOPICS, headers=token)).status_code == 401, "revoked"

    serve(data_dir, clock, body, AdminConfig(failed_login_delay_ms=1_000))


def test_each_request_is_authorised_at_the_door_per_resource(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("mo", Grant("monitor"))
        s.add_user("pub", Grant.parse("publish", "topic:orders"))
        s.add_user("maker", Grant.parse("manage", "topic:t.*"))
        s.add_user("nobody")
        made = await s.http.post(TOPICS, json={"name": "t.1"}, headers=s.token("maker"))
        assert made.status_code == 201
        await s.http.post(TOPICS, json={"name": "orders"}, headers=s.token("maker"))
        for user in ("mo", "pub", "nobody"):
            changed = await s.http.post(TOPICS, json={"name": "t.2"}, headers=s.token(user))
            assert (changed.status_code, error_code(changed)) == (403, "not_authorised"), user
        listed = {
            user: [t["name"] for t in (await s.http.get(TOPICS, headers=s.token(user))).json()]
            for user in ("mo", "pub", "maker", "nobody")
        }
        assert listed == {"mo": ["t.1"], "pub": [], "maker": ["t.1"], "nobody": []}
        other = await s.http.get(TOPICS + "/t.1", headers=s.token("pub"))
        assert (other.status_code, error_code(other)) == (403, "not_authorised")
        assert (await s.http.get("/healthz", headers=s.token("nobody"))).status_code == 200

    serve(data_dir, clock, body)


# -- Host and Origin --------------------------------------------------------------------------


def test_a_host_the_broker_does_not_answer_to_is_refused(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        for host in ("evil.example", "evil.example:80", "localhost:8080", "127.0.0.2", "[::2]",
                     "localhost:x", "[::1", ""):  # fmt: skip
            refused = await s.http.get("/healthz", headers={"host": host})
            assert (refused.status_code, error_code(refused)) == (403, "host_not_allowed"), host
        for host in ("localhost", "LOCALHOST:80", "127.0.0.1", "[::1]:80", "proxy.example:443",
                     "roost.example", "roost.example:1234"):  # fmt: skip
            assert (await s.http.get(TOPICS, headers={"host": host})).status_code == 200, host
        assert (await s.http.get("/healthz", headers={"host": "proxy.example"})).status_code == 403

    config = AdminConfig(hosts=("roost.example", "proxy.example:443"))
    serve(data_dir, clock, body, config)


def test_on_a_wildcard_address_the_ip_the_request_came_in_on_is_its_host(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        assert (await s.http.get(TOPICS)).status_code == 200  # Host: 10.0.0.5:7480
        for host in ("10.0.0.6:7480", "10.0.0.5:7481", "0.0.0.0:7480", "rebound.example:7480"):
            refused = await s.http.get(TOPICS, headers={"host": host})
            assert (refused.status_code, error_code(refused)) == (403, "host_not_allowed"), host

    config = AdminConfig(listen="0.0.0.0", allow_anonymous=True)
    serve(data_dir, clock, body, config, base_url="http://10.0.0.5:7480")


def test_a_foreign_origin_is_refused(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        purge = "/api/v1/queues/jobs/purge"
        await s.http.post("/api/v1/queues", json=QUEUE)
        for origin in FOREIGN_ORIGINS:
            headers = {"origin": origin, **JSON_HEADERS}
            refused = await s.http.post(purge, headers=headers)
            assert (refused.status_code, error_code(refused)) == (403, "origin_not_allowed")
            assert (await s.http.get(TOPICS, headers={"origin": origin})).status_code == 403
        # The attack as reported: anonymous, text/plain, from another site.
        attack = {"origin": "http://evil.example", "content-type": "text/plain"}
        assert (await s.http.delete("/api/v1/queues/jobs", headers=attack)).status_code == 403
        for origin in ("http://localhost", "http://127.0.0.1:80", "https://localhost:80"):
            allowed = await s.http.post(purge, headers={"origin": origin, **JSON_HEADERS})
            assert allowed.status_code == 200, origin
        assert "jobs" in s.host._broker.list_topics()

    serve(data_dir, clock, body)


# -- state-changing requests ------------------------------------------------------------------


def test_a_state_changing_request_must_be_json(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        await s.http.post("/api/v1/queues", json=QUEUE)
        purge = "/api/v1/queues/jobs/purge"
        for content_type in NOT_JSON:
            headers = {} if content_type is None else {"content-type": content_type}
            for method, path in (("POST", purge), ("DELETE", "/api/v1/queues/jobs"),
                                 ("POST", "/login")):  # fmt: skip
                refused = await s.http.request(method, path, headers=headers, content=b"{}")
                assert refused.status_code == 415, (method, path, content_type)
                assert error_code(refused) == "unsupported_media_type"
        assert "jobs" in s.host._broker.list_topics(), "nothing was deleted"
        charset = {"content-type": "Application/JSON; charset=utf-8"}
        assert (await s.http.post(purge, headers=charset)).status_code == 200

    serve(data_dir, clock, body)


# -- cookie sessions --------------------------------------------------------------------------


def test_a_cookie_session_needs_its_csrf_token_to_change_anything(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        login = await s.http.post(
            "/login", json={"username": "ada", "password": PASSWORD}, headers=JSON_HEADERS
        )
        assert login.status_code == 200 and login.headers["cache-control"] == "no-store"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("roost_session=")
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        assert "secure" not in attributes, "plain HTTP: a Secure cookie would never come back"
        csrf = login.json()["csrf_token"]
        assert login.json()["user"] == "ada" and len(csrf) >= 32
        session = {"cookie": cookie.split(";")[0]}

        assert (await s.http.get(TOPICS, headers=session)).json() == []
        assert (await s.http.get("/session", headers=session)).json() == {
            "user": "ada", "csrf_token": csrf
        }  # fmt: skip
        new_topic = {"json": {"name": "t"}}
        for sent in ({}, {"x-csrf-token": ""}, {"x-csrf-token": csrf[:-1]}):
            refused = await s.http.post(TOPICS, headers={**session, **sent}, **new_topic)  # type: ignore[arg-type]
            assert (refused.status_code, error_code(refused)) == (403, "csrf_token_mismatch")
        ok = await s.http.post(TOPICS, headers={**session, "x-csrf-token": csrf}, **new_topic)  # type: ignore[arg-type]
        assert ok.status_code == 201
        # A bearer token beside a cookie: the token is who asks, and it needs no CSRF token.
        both = {**session, **s.token("ada"), **JSON_HEADERS}
        assert (await s.http.delete(f"{TOPICS}/t", headers=both)).status_code == 204

        assert (
            await s.http.post("/logout", headers={**session, **JSON_HEADERS})
        ).status_code == 403
        out = await s.http.post(
            "/logout", headers={**session, **JSON_HEADERS, "x-csrf-token": csrf}
        )
        assert out.status_code == 204
        assert "max-age=0" in out.headers["set-cookie"].lower()
        after = await s.http.get(TOPICS, headers=session)
        assert (after.status_code, error_code(after)) == (401, "not_authenticated")
        assert "max-age=0" in after.headers["set-cookie"].lower(), "the stale cookie goes"
        page = await s.http.get("/", headers=session)
        assert (page.status_code, page.headers["location"]) == (303, "/login")

    serve(data_dir, clock, body)


def test_a_session_expires_when_idle_and_at_its_maximum_age(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        idle, _ = await s.login("ada")
        clock.advance(999)
        assert (await s.http.get(TOPICS, headers=idle)).status_code == 200
        clock.advance(1_000)
        assert (await s.http.get(TOPICS, headers=idle)).status_code == 401, "idle too long"

        busy, _ = await s.login("ada")
        for _ in range(4):
            clock.advance(900)
            assert (await s.http.get(TOPICS, headers=busy)).status_code == 200, "kept alive"
        clock.advance(500)  # 4.1 s after the login: beyond session_max_ms
        assert (await s.http.get(TOPICS, headers=busy)).status_code == 401

    config = AdminConfig(session_idle_ms=1_000, session_max_ms=4_000, failed_login_delay_ms=0)
    serve(data_dir, clock, body, config)


def test_over_tls_the_cookie_is_secure_and_host_prefixed(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        login = await s.http.post(
            "/login", json={"username": "ada", "password": PASSWORD}, headers=JSON_HEADERS
        )
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("__Host-roost_session=") and "; Secure" in cookie
        value = cookie.split(";")[0].split("=", 1)[1]
        assert (
            await s.http.get(TOPICS, headers={"cookie": f"__Host-roost_session={value}"})
        ).status_code == 200
        plain = await s.http.get(TOPICS, headers={"cookie": f"roost_session={value}"})
        assert plain.status_code == 401, "over TLS only the __Host- cookie counts"

    serve(data_dir, clock, body, base_url="https://localhost")


def test_logging_in_again_ends_the_session_the_browser_had(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        first, _ = await s.login("ada")
        again = await s.http.post(
            "/login",
            json={"username": "ada", "password": PASSWORD},
            headers={**first, **JSON_HEADERS},
        )
        assert again.status_code == 200
        assert again.headers["set-cookie"].split(";")[0] != first["cookie"]
        assert (await s.http.get(TOPICS, headers=first)).status_code == 401

    serve(data_dir, clock, body)


def test_deleting_a_user_or_their_grant_takes_effect_on_their_next_request(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("mo", Grant("monitor"))
        s.host.door(TRUSTED).create_topic("t")
        session, _ = await s.login("mo")
        assert (await s.http.get(TOPICS + "/t", headers=session)).status_code == 200
        s.host.identities.revoke("mo", Grant("monitor"))
        assert (await s.http.get(TOPICS + "/t", headers=session)).status_code == 403
        assert (await s.http.get(TOPICS, headers=session)).json() == []  # sees nothing now
        s.host.identities.delete_user("mo")
        s.add_user("ada", admin=True)  # users still exist: no anonymous fallback
        assert (await s.http.get(TOPICS, headers=session)).status_code == 401

    serve(data_dir, clock, body)


def test_a_wrong_login_is_refused_logged_without_the_password_and_slowed(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        for name, password in (("ada", "hunter2-wrong"), ("nobody", "hunter2-unknown")):
            refused = await s.http.post(
                "/login", json={"username": name, "password": password}, headers=JSON_HEADERS
            )
            assert (refused.status_code, error_code(refused)) == (401, "not_authenticated")
            assert "set-cookie" not in refused.headers
        assert s.pauses == [0.25, 0.25]
        for bad in (b"not json", b'{"username": "ada"}', b'{"username": 1, "password": "x"}'):
            answer = await s.http.post("/login", content=bad, headers=JSON_HEADERS)
            assert (answer.status_code, error_code(answer)) == (400, "invalid_request")
        huge = await s.http.post("/login", content=b" " * 20_000, headers=JSON_HEADERS)
        assert huge.status_code == 413

    with caplog.at_level(logging.WARNING, "roost.admin"):
        serve(data_dir, clock, body, AdminConfig(failed_login_delay_ms=250))
    assert "wrong password for user 'ada'" in caplog.text
    assert "'nobody'" in caplog.text
    assert "hunter2" not in caplog.text


# -- /metrics and the dashboard's feed --------------------------------------------------------


@pytest.mark.parametrize("metrics_auth", [False, True])
def test_metrics_are_open_unless_metrics_auth(
    data_dir: str, clock: ManualClock, metrics_auth: bool
) -> None:
    async def body(s: Served) -> None:
        s.add_user("mo", Grant("monitor"))
        s.add_user("pub", Grant.parse("publish", "topic:orders"))
        anonymous = await s.http.get("/metrics")
        assert anonymous.status_code == (401 if metrics_auth else 200)
        assert (await s.http.get("/metrics", headers=s.token("mo"))).status_code == 200
        publisher = await s.http.get("/metrics", headers=s.token("pub"))
        assert publisher.status_code == (403 if metrics_auth else 200)
        if metrics_auth:
            assert error_code(publisher) == "not_authorised"
        else:
            assert "roost_flush_rounds_total" in anonymous.text

    serve(data_dir, clock, body, AdminConfig(metrics_auth=metrics_auth))


def test_the_dashboard_feed_needs_monitor(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        s.add_user("pub", Grant.parse("publish", "topic:orders"))
        assert (await s.http.get("/dashboard/events")).status_code == 401
        refused = await s.http.get("/dashboard/events", headers=s.token("pub"))
        assert (refused.status_code, error_code(refused)) == (403, "not_authorised")

    serve(data_dir, clock, body)


def test_no_answer_may_be_framed_by_another_site(data_dir: str, clock: ManualClock) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        for path, headers in (("/", {}), (TOPICS, s.token("ada")), ("/login", {}),
                              ("/healthz", {"host": "evil.example"})):  # fmt: skip
            answer = await s.http.get(path, headers=headers)
            assert answer.headers["x-frame-options"] == "DENY", path
            policy = answer.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
            assert answer.headers["x-content-type-options"] == "nosniff"

    serve(data_dir, clock, body)


def test_a_route_served_without_the_gate_fails_closed(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        host = await Host.start(data_dir, clock)
        try:
            host.door(TRUSTED).create_topic("t")
            app = Starlette(routes=[route(endpoint, host) for endpoint in ENDPOINTS])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                assert (await http.get(TOPICS)).json() == [], "it sees nothing"
                for refused in [await http.get(TOPICS + "/t"),
                                await http.post(TOPICS, json={"name": "u"}),
                                await http.delete(TOPICS + "/t")]:  # fmt: skip
                    assert (refused.status_code, error_code(refused)) == (403, "not_authorised")
                assert (await http.get("/healthz")).status_code == 200, "public needs nobody"
        finally:
            await host.aclose()

    asyncio.run(main())


def test_a_session_is_not_inherited_by_a_user_made_again_under_its_name(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        s.add_user("mo", Grant("monitor"))
        session, _ = await s.login("mo")
        assert (await s.http.get(TOPICS, headers=session)).status_code == 200
        s.host.identities.delete_user("mo")
        s.add_user("mo", admin=True)  # someone else now, with more rights
        refused = await s.http.get(TOPICS, headers=session)
        assert (refused.status_code, error_code(refused)) == (401, "not_authenticated")
        assert (await s.http.get(TOPICS, headers=session)).status_code == 401, "it has ended"

    serve(data_dir, clock, body)


def test_an_address_that_guessed_too_often_is_refused_unchecked(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(s: Served) -> None:
        s.add_user("ada", admin=True)
        s.host.failed_logins.limit = 2
        for _ in range(2):
            wrong = await s.http.get(TOPICS, auth=("ada", "not the password"))
            assert wrong.status_code == 401
        refused = await s.http.get(TOPICS, auth=("ada", PASSWORD))
        assert refused.status_code == 401
        assert "too many failed logins" in refused.json()["error"]["message"]
        login = await s.http.post(
            "/login", json={"username": "ada", "password": PASSWORD}, headers=JSON_HEADERS
        )
        assert login.status_code == 401, "the login page counts the same failures"
        clock.advance(s.host.failed_logins.window_ms)
        assert (await s.http.get(TOPICS, auth=("ada", PASSWORD))).status_code == 200

    serve(data_dir, clock, body)
