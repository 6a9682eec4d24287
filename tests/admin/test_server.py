"""``AdminServer``: uvicorn as a task on the running loop, over real sockets."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from roost.admin.server import AdminServer
from roost.clock import ManualClock
from roost.server.host import Host


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("extra")


def test_serves_on_the_loop_with_extra_routes_and_stops(data_dir: str, clock: ManualClock) -> None:
    async def main() -> None:
        host = await Host.start(data_dir, clock)
        try:
            admin = await AdminServer.start(
                host, "127.0.0.1", 0, extra_routes=[Route("/extra", _hello)]
            )
            listen, port = admin.address
            assert port > 0
            with pytest.raises(OSError):
                await AdminServer.start(host, listen, port)  # the port is taken: at once
            async with httpx.AsyncClient(base_url=f"http://{listen}:{port}") as http:
                assert (await http.get("/readyz")).json() == {"status": "ready"}
                assert (await http.get("/extra")).text == "extra"
                assert (await http.get("/api/v1/topics")).json() == []
            await admin.aclose()
            await admin.aclose()  # twice is fine
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient() as http:
                    await http.get(f"http://{listen}:{port}/healthz")
            assert all(t.get_name() != "roost-admin" for t in asyncio.all_tasks())
        finally:
            await host.aclose()

    asyncio.run(main())
