"""The admin app behind its gate, for the auth tests: a real host on a driven clock, the
dashboard and ``/metrics`` mounted as ``roost serve`` mounts them, an httpx client that keeps
no cookies of its own (each test says which cookie it sends), and a ``pause`` that records
the waits it is asked for instead of sleeping."""

from __future__ import annotations

import asyncio
import http.cookiejar
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from roost.admin.app import build_app
from roost.admin.config import AdminConfig
from roost.admin.dashboard import Dashboard
from roost.admin.metrics import metrics_route
from roost.clock import ManualClock
from roost.server.access import Grant
from roost.server.host import Host

PASSWORD = "correct horse battery"
JSON_HEADERS = {"content-type": "application/json"}


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


@dataclass
class Served:
    host: Host
    http: httpx.AsyncClient
    clock: ManualClock
    pauses: list[float] = field(default_factory=list)

    def add_user(self, name: str, *grants: Grant, admin: bool = False) -> None:
        self.host.identities.add_user(name, PASSWORD, admin=admin)
        for grant in grants:
            self.host.identities.grant(name, grant)

    def token(self, user: str) -> dict[str, str]:
        """The Authorization header of a new token of ``user``."""
        return {"authorization": f"Bearer {self.host.identities.create_token(user).secret}"}

    async def login(self, user: str, password: str = PASSWORD) -> tuple[dict[str, str], str]:
        """Log in: (the Cookie header to send from now on, the CSRF token)."""
        response = await self.http.post(
            "/login", json={"username": user, "password": password}, headers=JSON_HEADERS
        )
        assert response.status_code == 200, response.text
        name, _, rest = response.headers["set-cookie"].partition("=")
        return {"cookie": f"{name}={rest.split(';')[0]}"}, response.json()["csrf_token"]


Body = Callable[[Served], Awaitable[None]]


def serve(
    data_dir: str,
    clock: ManualClock,
    body: Body,
    config: AdminConfig | None = None,
    base_url: str = "http://localhost",
) -> None:
    """``body`` against the admin app over a host at ``data_dir``; ``config`` defaults to a
    loopback listener's with no delay after a wrong password."""

    async def main() -> None:
        host = await Host.start(data_dir, clock)
        dashboard = Dashboard(host, tick=asyncio.Event().wait)  # no feed test here
        served_config = config or AdminConfig(failed_login_delay_ms=0)
        pauses: list[float] = []

        async def pause(seconds: float) -> None:
            pauses.append(seconds)

        app = build_app(host, [metrics_route(host), *dashboard.routes], served_config, pause=pause)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url=base_url,
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            ) as client:
                await body(Served(host, client, clock, pauses))
        finally:
            await dashboard.aclose()
            await host.aclose()

    asyncio.run(main())


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code
