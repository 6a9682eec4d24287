"""The OpenAPI 3.1 document, generated from the same ``Endpoint`` list that is served.

Schemas come from the msgspec types of each endpoint (``msgspec.json.schema_components``), so
a field added to a body is in the document at once. Every endpoint documents its success
status(es) and the errors it may answer, all with the one error body: its declared ``errors``,
404 when the path names something, 400/413/422 when it takes a body, 422 when it takes a
query, and 503 (the storage is closing or has failed) for all. Anything else it answered
would be a bug the schema tests catch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from roost import __version__
from roost.admin.endpoints import JSON, Endpoint, ErrorBody

REF = "#/components/schemas/{name}"
_PATH_PARAMETER = re.compile(r"{(\w+)}")
_REASONS = {
    200: "OK", 201: "Created", 204: "No content", 400: "Bad request", 401: "Not authenticated",
    403: "Not authorised", 404: "Not found",
    409: "Conflict", 413: "Request body too large", 422: "Invalid input",
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
        "components": {"schemas": components},
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
