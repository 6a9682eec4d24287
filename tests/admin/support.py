"""An admin API client for tests: the real app over a real host, every answer checked against
the OpenAPI document the app serves (status documented, body matching its schema)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import schemathesis

from roost.admin.app import ENDPOINTS, build_app
from roost.admin.openapi import openapi_document
from roost.clock import ManualClock
from roost.server.host import Host

SCHEMA = schemathesis.openapi.from_dict(openapi_document(ENDPOINTS))
_TEMPLATES = [
    (re.compile("^" + re.sub(r"{\w+}", "[^/]+", e.path) + "$"), e.path, e.method) for e in ENDPOINTS
]


class Admin:
    def __init__(self, host: Host, http: httpx.AsyncClient) -> None:
        self.host = host
        self.http = http

    @property
    def broker(self):  # type: ignore[no-untyped-def]
        return self.host._broker

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if method not in ("GET", "HEAD"):
            # What every API client must say on a state-changing request, body or not.
            kw["headers"] = {"content-type": "application/json", **kw.get("headers", {})}
        response = await self.http.request(method, path, **kw)
        check(method, path, response)
        return response

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return await self.request("POST", path, json=body, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kw)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        kw = {"json": body} if body is not None else {}
        response = await self.request(method, path, **kw)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    async def error(
        self, method: str, path: str, status: int, code: str, **kw: Any
    ) -> dict[str, str]:
        response = await self.request(method, path, **kw)
        assert response.status_code == status, response.text
        error: dict[str, str] = response.json()["error"]
        assert error["code"] == code, error
        assert error["message"]
        return error


def check(method: str, path: str, response: httpx.Response) -> None:
    """The answer's status is documented for its operation and its body fits the schema."""
    bare = path.split("?", maxsplit=1)[0]
    matches = [t for regex, t, m in _TEMPLATES if m == method and regex.match(bare)]
    if not matches:
        assert response.status_code in (404, 405), (method, path, response.status_code)
        assert set(response.json()) == {"error"}
        return
    operation = SCHEMA[matches[0]][method]
    documented = operation.definition.raw["responses"]
    assert str(response.status_code) in documented, (method, path, response.text)
    operation.validate_response(response)


Body = Callable[[Admin], Awaitable[None]]


def run(data_dir: str, clock: ManualClock, body: Body) -> None:
    """A host at ``data_dir`` on ``clock``, the admin app over it, ``body`` against both."""

    async def main() -> None:
        host = await Host.start(data_dir, clock)
        try:
            transport = httpx.ASGITransport(app=build_app(host))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                await body(Admin(host, http))
        finally:
            await host.aclose()

    asyncio.run(main())
