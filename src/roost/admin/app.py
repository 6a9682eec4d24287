"""The admin ASGI app: every endpoint of the admin API over one host, plus whatever else the
broker serves on the same port, behind one gate.

    app = build_app(host)                                 # the JSON API, /openapi.json
    app = build_app(host, extra_routes=[Route("/metrics", scrape)])   # metrics, a dashboard
    app = build_app(host, config=AdminConfig.from_settings(settings))

Every request passes ``auth.Guard`` first (Host, Origin, content type, who, CSRF) and is
served with the principal it established; ``/login``, ``/logout`` and ``/session`` (login.py)
are served beside the API. ``config`` defaults to a loopback listener's: with no users
defined everyone is the anonymous administrator, as before there were users.

``extra_routes`` are matched after the API's own routes, so a dashboard mounted at ``/``
takes only the paths the API does not. A path nobody serves, or a method a path does not
take, answers the same JSON error body as every other error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roost.admin import (
    dead_letters,
    exchanges,
    groups,
    health,
    identities,
    queues,
    storage,
    topics,
)
from roost.admin.auth import Guard, Pause
from roost.admin.config import AdminConfig
from roost.admin.endpoints import JSON, Endpoint, error_response, route
from roost.admin.login import Login
from roost.admin.openapi import openapi_document
from roost.admin.sessions import Sessions
from roost.server.host import Host

#: Every endpoint of the admin API, in the order the OpenAPI document lists them.
ENDPOINTS: list[Endpoint] = [
    *health.ENDPOINTS,
    *topics.ENDPOINTS,
    *queues.ENDPOINTS,
    *exchanges.ENDPOINTS,
    *dead_letters.ENDPOINTS,
    *groups.ENDPOINTS,
    *identities.ENDPOINTS,
    *storage.ENDPOINTS,
]


def build_app(
    host: Host,
    extra_routes: Sequence[BaseRoute] = (),
    config: AdminConfig | None = None,
    pause: Pause = asyncio.sleep,
) -> Starlette:
    """The admin app over ``host`` (``config``: a loopback listener's defaults); ``pause`` is
    how a failed password check waits (tests pass one that records instead of sleeping)."""
    config = config or AdminConfig()
    document = msgspec.json.encode(openapi_document(ENDPOINTS))
    sessions = Sessions(host.clock, config.session_idle_ms, config.session_max_ms)
    login = Login(host.identities, sessions, config, pause, host.failed_logins)

    async def openapi(request: Request) -> Response:
        return Response(document, media_type=JSON)

    routes: list[BaseRoute] = [route(endpoint, host) for endpoint in ENDPOINTS]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    routes += login.routes
    routes += extra_routes
    guard = Middleware(
        Guard,
        identities=host.identities,
        sessions=sessions,
        failures=host.failed_logins,
        config=config,
        open_paths={endpoint.path for endpoint in ENDPOINTS if endpoint.public},
        pause=pause,
    )
    return Starlette(
        routes=routes, middleware=[guard], exception_handlers={HTTPException: _http_error}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_request"
    response = error_response(
        exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
    )
    response.headers.update(exc.headers or {})
    return response
