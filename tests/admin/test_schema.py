"""schemathesis against the admin API's own OpenAPI document: for inputs generated from the
document (valid and invalid), the app never answers 500, answers only documented statuses
and content types, and every body matches its schema.

The app runs over a real host on one event loop owned by this module (no threads): each
generated request is sent through httpx's ASGI transport on that loop. The host holds a
queue, a dead letter, an exchange, a binding and a consumer group, and the document's path
parameters are plain strings, so most generated names are unknown (404) — the success paths'
bodies are checked against the same schema by every request in test_api.py. Examples per
operation are few, to keep the suite fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks

from roost.admin.app import ENDPOINTS, build_app
from roost.admin.openapi import openapi_document
from roost.clock import ManualClock
from roost.core.model import SubscriptionSpec
from roost.core.publishing import Outgoing
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.server.host import Host
from tests.admin.support import SCHEMA

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


class Served(NamedTuple):
    loop: asyncio.AbstractEventLoop
    http: httpx.AsyncClient

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        request = self.http.request(
            kwargs["method"],
            kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params"),
            json=kwargs.get("json"),
            content=kwargs.get("data"),
        )
        return self.loop.run_until_complete(request)


async def _seed(host: Host) -> None:
    broker = host._broker
    broker.create_queue("q", durability="never", max_deliveries=1)
    await host.publish("q", [Outgoing(value=b"x", key=b"k"), Outgoing(value=b"\xff")])
    [first, _] = await host.receive("q", "q", max_messages=2)
    broker.nack("q", "q", [first.receipt], delay_ms=0, error="boom")
    broker.tick()
    broker.create_subscription(SubscriptionSpec(name="g", topic="q", mode="stream"))
    broker.declare_exchange(ExchangeSpec("x", "topic"))
    broker.bind(BindingSpec("x", "q", key="a.*"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = Path(tmp_path_factory.mktemp("admin-schema")) / "data"
    loop = asyncio.new_event_loop()
    host = loop.run_until_complete(Host.start(str(data_dir), ManualClock()))
    loop.run_until_complete(_seed(host))
    transport = httpx.ASGITransport(app=build_app(host))
    http = httpx.AsyncClient(transport=transport, base_url="http://localhost")
    try:
        yield Served(loop, http)
    finally:
        loop.run_until_complete(http.aclose())
        loop.run_until_complete(host.aclose())
        loop.close()


@SCHEMA.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_answer_matches_the_document(case: Any, served: Served) -> None:
    response = served.send(case.as_transport_kwargs(base_url="http://localhost"))
    case.validate_response(response, checks=CHECKS)


def test_the_document_declares_how_to_authenticate() -> None:
    document = openapi_document(ENDPOINTS)
    schemes = document["components"]["securitySchemes"]
    assert (schemes["bearer"]["scheme"], schemes["basic"]["scheme"]) == ("bearer", "basic")
    assert (schemes["cookie"]["in"], schemes["cookie"]["name"]) == ("cookie", "roost_session")
    assert document["security"] == [{"bearer": []}, {"basic": []}, {"cookie": []}]
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        responses = set(operation["responses"])
        assert "403" in responses, "any request may come with a foreign Host or Origin"
        if endpoint.public:
            assert operation["security"] == [] and "401" not in responses
        else:
            assert "security" not in operation and "401" in responses
        assert ("415" in responses) == (endpoint.method != "GET"), endpoint.path
    assert {e.path for e in ENDPOINTS if e.public} == {"/healthz", "/readyz"}
