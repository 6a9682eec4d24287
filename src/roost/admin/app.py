"""The admin ASGI app: every endpoint of the admin API over one host, plus whatever else the
broker serves on the same port.

    app = build_app(host)                                 # the JSON API, /openapi.json
    app = build_app(host, extra_routes=[Route("/metrics", scrape)])   # metrics, a dashboard

``extra_routes`` are matched after the API's own routes, so a dashboard mounted at ``/``
takes only the paths the API does not. A path nobody serves, or a method a path does not
take, answers the same JSON error body as every other error.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from roost.admin import dead_letters, exchanges, groups, health, identities, queues, topics
from roost.admin.endpoints import JSON, Endpoint, error_response, route
from roost.admin.openapi import openapi_document
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
]


def build_app(host: Host, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    document = msgspec.json.encode(openapi_document(ENDPOINTS))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type=JSON)

    routes: list[BaseRoute] = [route(endpoint, host) for endpoint in ENDPOINTS]
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    routes += extra_routes
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "invalid_request"
    response = error_response(
        exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}"
    )
    response.headers.update(exc.headers or {})
    return response
