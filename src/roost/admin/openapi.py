"""The OpenAPI 3.1 document, generated from the same ``Endpoint`` list that is served.

Schemas come from the msgspec types of each endpoint (``msgspec.json.schema_components``), so
a field added to a body is in the document at once. Every endpoint documents its success
status(es) and the errors it may answer, all with the one error body: its declared ``errors``,
404 when the path names something, 400/413/422 when it takes a body, 422 when it takes a
query, and 503 (the storage is closing or has failed) for all. Anything else it answered
would be a bug the schema tests catch.

Security (auth.py): the document declares the three ways to authenticate (``bearer``,
``basic``, the dashboard's ``cookie``) and asks for one of them everywhere but on the
``public`` endpoints (``security: []``). Every operation may answer 403 (a Host or Origin
the broker does not answer to); one that needs a credential also 401 (none, or a wrong one)
and 403 for a principal without the grant; a state-changing one also 415 (not
``application/json``) and 403 for a cookie session's missing CSRF token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from roost import __version__
from roost.admin.auth import SAFE_METHODS
from roost.admin.endpoints import JSON, Endpoint, ErrorBody
from roost.admin.sessions import COOKIE

REF = "#/components/schemas/{name}"
_PATH_PARAMETER = re.compile(r"{(\w+)}")
_REASONS = {
    200: "OK", 201: "Created", 204: "No content", 400: "Bad request", 404: "Not found",
    401: "Not authenticated: no credential, or a wrong one",
    403: "Refused: a foreign Host or Origin, a missing grant or CSRF token",
    409: "Conflict", 413: "Request body too large", 415: "Not application/json",
    422: "Invalid input",
    503: "Not ready: storage closed, failed or not writable",
}  # fmt: skip


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        types += [t for t in (endpoint.body, endpoint.response) if t is not None]
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(_key, types), schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(
            endpoint, schema_of
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Roost admin API",
            "version": __version__,
            "description": "Topics, queues, subscriptions, exchanges, dead letters, consumer "
            "groups, users, API tokens and grants of one Roost broker. Errors answer "
            '{"error": {"code", "message"}} with a stable code.',
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
        "security": [{name: []} for name in SECURITY_SCHEMES],
    }


#: How a client may authenticate: any one of these (auth.py).
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token, rst_<id>_<secret>.",
    },
    "basic": {"type": "http", "scheme": "basic", "description": "A user's name and password."},
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE,
        "description": "The dashboard's session (POST /login; __Host-" + COOKIE + " over TLS). "
        "State-changing requests also send its CSRF token as X-CSRF-Token.",
    },
}


def _key(t: Any) -> str:
    return repr(t)


def _operation(endpoint: Endpoint, schema_of: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": f"{endpoint.method.lower()}_{_slug(endpoint.path)}",
        "tags": [endpoint.tag],
        "responses": _responses(endpoint, schema_of),
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAMETER.findall(endpoint.path)
    ]
    if endpoint.query is not None:
        parameters += _query_parameters(endpoint.query)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.public:
        operation["security"] = []
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": schema_of[_key(endpoint.body)]}},
        }
    return operation


def _responses(endpoint: Endpoint, schema_of: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in (endpoint.status, *endpoint.also):
        responses[str(status)] = {"description": _REASONS.get(status, "OK")}
        if endpoint.response is not None:
            schema = schema_of[_key(endpoint.response)]
            responses[str(status)]["content"] = {JSON: {"schema": schema}}
    errors = {*endpoint.errors, 503}  # storage closed (shutting down) or failed: any of them
    errors.add(403)  # a Host or Origin this broker does not answer to
    if not endpoint.public:
        errors.add(401)
    if endpoint.method not in SAFE_METHODS:
        errors.add(415)
    if _PATH_PARAMETER.search(endpoint.path):
        errors.add(404)
    if endpoint.body is not None:
        errors |= {400, 413, 422}
    if endpoint.query is not None:
        errors.add(422)
    error_schema = schema_of[_key(ErrorBody)]
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _REASONS.get(status, "Error"),
            "content": {JSON: {"schema": error_schema}},
        }
    return responses


def _query_parameters(query: type[msgspec.Struct]) -> list[dict[str, Any]]:
    parameters = []
    for field in msgspec.structs.fields(query):
        schema = msgspec.json.schema(field.type)
        if field.default is not msgspec.NODEFAULT:
            schema["default"] = field.default
        parameters.append(
            {"name": field.encode_name, "in": "query", "required": field.required, "schema": schema}
        )
    return parameters


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")
