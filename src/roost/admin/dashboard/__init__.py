"""The web dashboard: a page at ``/``, its files, and the live feed its pages read.

    dashboard = Dashboard(host)
    app = build_app(host, extra_routes=[metrics_route(host), *dashboard.routes])
    ...
    await dashboard.aclose()            # before the HTTP server stops: ends the event streams

Routes (matched after the API's own, so they take nothing from it):

- ``GET /``: the page (``static/index.html``); the pages inside it are hash routes
  (``#/t/<topic>``, ``#/s/<topic>/<subscription>``), so moving between them reloads nothing;
- ``GET /dashboard/static/...``: its scripts, styles and the vendored chart library, read
  from the package (``src/roost/admin/static/``): nothing comes from another host;
- ``GET /dashboard/events``: server-sent events, a ``Snapshot`` (snapshot.py) per second from
  the one ``Feed`` (feed.py) all browsers share.

Everything else the pages show or do goes through the JSON API: dead letters are peeked with
``GET /api/v1/topics/{dlq}/dead-letters`` and moved back with ``POST .../redrive``.

Who may see it is the gate's business (auth.py): once users exist, ``/`` without a session
redirects to ``/login``, the feed needs ``monitor``, and only the static files are open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from roost.admin.auth import SESSION
from roost.admin.dashboard.feed import Feed
from roost.admin.endpoints import principal_of
from roost.errors import NotAuthenticated
from roost.server.access import TRUSTED
from roost.server.host import Host

#: The dashboard's files, shipped as package data (pyproject.toml).
STATIC = Path(__file__).resolve().parent.parent / "static"
#: Seconds between two snapshots of the live feed.
INTERVAL_S = 1.0


class Dashboard:
    def __init__(self, host: Host, tick: Callable[[], Awaitable[None]] | None = None) -> None:
        """``tick`` waits between two snapshots (default: ``INTERVAL_S`` of real time)."""
        # One reading for every browser: each one's right to it is checked per event.
        self._host = host
        door = host.door(TRUSTED)
        self.feed = Feed(door.readings, tick or _sleep)
        self.routes: list[BaseRoute] = [
            Route("/", _index, methods=["GET"]),
            Route("/dashboard/events", self._events, methods=["GET"]),
            Mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard"),
        ]

    async def aclose(self) -> None:
        await self.feed.aclose()

    async def _while(self, allowed: Callable[[], bool]) -> AsyncIterator[bytes]:
        """The feed's events while ``allowed()``; the stream ends the first time it is not."""
        events = self.feed.events()
        try:
            async for event in events:
                if not allowed():
                    return
                yield event
        finally:
            await events.aclose()

    async def _events(self, request: Request) -> Response:
        # The gate checked `monitor` once; a stream is long: its viewer is checked again
        # before each event (a revoked grant, a deleted user, a logout end it).
        door = self._host.door(principal_of(request.scope))
        _, session = request.scope.get(SESSION) or (None, None)

        def still_allowed() -> bool:
            if session is not None and session.ended:
                return False
            try:
                return door.current().monitor
            except NotAuthenticated:
                return False

        return StreamingResponse(
            self._while(still_allowed),
            media_type="text/event-stream",
            # Proxies must pass each event on as it comes, and nobody may cache the stream.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


async def _index(request: Request) -> Response:
    # no-cache: a browser revalidates the page, so an upgraded broker serves its new page.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _sleep() -> None:
    await asyncio.sleep(INTERVAL_S)
