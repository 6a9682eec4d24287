"""How an admin endpoint is declared, and the one function that serves every one of them.

An ``Endpoint`` is data: method, path, the msgspec types of its query, body and answer, its
success status and the error statuses it may answer. ``app.py`` turns each into a Starlette
route through ``route``; ``openapi.py`` turns the same list into the OpenAPI document, so the
document cannot drift from what is served.

Rules kept here so handlers need not remember them:

- Handlers take a ``Call`` (the door of the request's principal, the path parameters, the
  decoded body and query) and return a msgspec-encodable value, or None for an empty answer.
  They reach the broker only through ``call.door`` (server/door.py), as the native session
  does, so every call is authorised there: a refusal answers 403 ``not_authorised``.
- Who the principal is, the gate in front of the routes (auth.py) says, in the ASGI scope's
  ``PRINCIPAL`` entry (``access.ANONYMOUS`` when no users are defined and the listener may
  serve anonymously). A request that reaches ``route`` without one is served as
  ``UNAUTHENTICATED``, who may do nothing but the open commands (health): it fails closed.
- Bad input never reaches a handler as anything but a typed value: a body that is not JSON is
  400, one that does not fit the type (or a query that does not) is 422, a body over
  ``MAX_BODY_BYTES`` is 413.
- Every error answers ``{"error": {"code": ..., "message": ...}}``: a ``RoostError`` with its
  stable code and the status of ``STATUS_BY_ERROR``; anything else is a bug, logged with its
  traceback and answered 500 ``internal``, and the broker goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roost.errors import (
    AlreadyExists,
    BacklogFull,
    Conflict,
    InvalidRequest,
    NotAuthenticated,
    NotAuthorised,
    NotFound,
    Quarantined,
    RoostError,
    StorageFailure,
    Unroutable,
)
from roost.server.access import NOBODY, Principal
from roost.server.door import Door
from roost.server.host import Host

log = logging.getLogger("roost.admin")

#: Largest request body accepted; admin requests are small definitions.
MAX_BODY_BYTES = 1024 * 1024
JSON = "application/json"
#: Where the auth layer leaves the principal of a request in its ASGI scope.
PRINCIPAL = "roost.principal"
#: Who an open path (``/healthz``) is served as: nobody, who may do nothing.
UNAUTHENTICATED = NOBODY

#: HTTP status per error class, most specific first; the first the error is an instance of.
STATUS_BY_ERROR: tuple[tuple[type[RoostError], int], ...] = (
    (NotAuthenticated, 401),
    (NotAuthorised, 403),
    (NotFound, 404),
    (AlreadyExists, 409),
    (Conflict, 409),
    (InvalidRequest, 400),
    (NotAuthenticated, 401),
    (NotAuthorised, 403),
    (Unroutable, 422),
    (BacklogFull, 503),
    (StorageFailure, 503),
    (Quarantined, 503),
)


class ErrorDetail(msgspec.Struct, frozen=True):
    #: A stable code from roost.errors (``unknown_topic``, ``topic_exists``, ...).
    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


#: The ASGI scope key under which the authentication layer leaves the request's principal.
PRINCIPAL = "roost.principal"


@dataclass(frozen=True)
class Call:
    """One request, decoded: what a handler gets."""

    door: Door
    path: Mapping[str, str]
    body: Any
    query: Any

    @property
    def principal(self) -> Principal:
        """Who is asking, as the gate established it (the door's principal)."""
        return self.door.principal


Handler = Callable[[Call], Awaitable[Any]]


class Endpoint(NamedTuple):
    method: str
    #: A Starlette path; ``{name}`` parameters are strings.
    path: str
    summary: str
    handler: Handler
    #: The type of a successful answer's body; None: no body.
    response: Any = None
    status: int = 200
    #: The request body's type (a msgspec Struct); None: no body.
    body: type[msgspec.Struct] | None = None
    #: The query string's fields (a msgspec Struct with defaults); None: none.
    query: type[msgspec.Struct] | None = None
    #: Error statuses it may answer besides the body's 400/413/422 and the query's 422.
    errors: tuple[int, ...] = ()
    tag: str = "admin"
    #: Other success statuses with the same body (a binding that already existed: 200).
    also: tuple[int, ...] = ()
    #: Served to anyone, credentials or not (health checks: probes carry none).
    public: bool = False


class Answer(NamedTuple):
    """A handler's result when its status is not the endpoint's usual one."""

    status: int
    body: Any


def status_of(error: RoostError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = ErrorBody(ErrorDetail(code, message))
    return Response(msgspec.json.encode(body), status, headers, media_type=JSON)


def principal_of(scope: Mapping[str, Any]) -> Principal:
    """The principal the auth layer put in ``scope``; ``UNAUTHENTICATED`` if none did."""
    found = scope.get(PRINCIPAL)
    return found if isinstance(found, Principal) else UNAUTHENTICATED


def route(endpoint: Endpoint, host: Host) -> Route:
    """The Starlette route serving ``endpoint`` over ``host``."""

    async def serve(request: Request) -> Response:
        try:
            principal = principal_of(request.scope)
            body = await _body(endpoint, request)
            call = Call(host.door(principal), request.path_params, body, _query(endpoint, request))
            result = await endpoint.handler(call)
        except _BadInput as e:
            return error_response(e.status, "invalid_request", e.message)
        except RoostError as e:
            return error_response(status_of(e), e.code, str(e))
        except Exception:
            log.exception("admin %s %s failed", request.method, request.url.path)
            return error_response(500, "internal", "internal error: see the broker's log")
        status = endpoint.status
        if isinstance(result, Answer):
            status, result = result
        if endpoint.response is None:
            return Response(status_code=status)
        return Response(msgspec.json.encode(result), status, media_type=JSON)

    return Route(endpoint.path, serve, methods=[endpoint.method], name=endpoint.summary)


class _BadInput(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _body(endpoint: Endpoint, request: Request) -> Any:
    if endpoint.body is None:
        return None
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise _BadInput(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        return msgspec.json.decode(data, type=endpoint.body)
    except msgspec.ValidationError as e:
        raise _BadInput(422, f"request body: {e}") from None
    except msgspec.DecodeError as e:
        raise _BadInput(400, f"request body is not JSON: {e}") from None


def _query(endpoint: Endpoint, request: Request) -> Any:
    if endpoint.query is None:
        return None
    try:
        return msgspec.convert(dict(request.query_params), endpoint.query, strict=False)
    except msgspec.ValidationError as e:
        raise _BadInput(422, f"query: {e}") from None
