"""Exchanges and bindings: declare, list, describe, delete; bind and unbind."""

from __future__ import annotations

from roost.admin.endpoints import Answer, Call, Endpoint
from roost.admin.schemas import BindingsQuery, ExchangeView
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import NotFound

EXCHANGES = "/api/v1/exchanges"
EXCHANGE = EXCHANGES + "/{exchange}"
BINDINGS = "/api/v1/bindings"


class UnknownBinding(NotFound):
    """Only the admin API asks to remove a binding by value and needs a 404 for it."""

    code = "not_found"

    def __init__(self, binding: BindingSpec) -> None:
        super().__init__(
            f"exchange {binding.exchange!r} has no such binding to topic {binding.topic!r}"
        )


async def list_exchanges(call: Call) -> list[ExchangeSpec]:
    return call.door.list_exchanges()


async def declare_exchange(call: Call) -> Answer:
    spec: ExchangeSpec = call.body
    existed = any(e.name == spec.name for e in call.door.list_exchanges())
    declared = call.door.declare_exchange(spec)
    return Answer(200 if existed else 201, declared)


async def describe_exchange(call: Call) -> ExchangeView:
    name = call.path["exchange"]
    spec, bindings = call.door.describe_exchange(name)
    return ExchangeView(spec.name, spec.kind, spec.alternate, bindings)


async def delete_exchange(call: Call) -> None:
    call.door.delete_exchange(call.path["exchange"])


async def list_bindings(call: Call) -> list[BindingSpec]:
    query: BindingsQuery = call.query
    return call.door.list_bindings(query.exchange)


async def bind(call: Call) -> Answer:
    spec: BindingSpec = call.body
    added = call.door.bind(spec)
    return Answer(201 if added else 200, spec)


async def unbind(call: Call) -> None:
    spec: BindingSpec = call.body
    if not call.door.unbind(spec):
        raise UnknownBinding(spec)


ENDPOINTS = [
    Endpoint(
        "GET", EXCHANGES, "List exchanges", list_exchanges, list[ExchangeSpec], tag="exchanges"
    ),
    Endpoint(
        "POST", EXCHANGES, "Declare an exchange (an identical one already there: 200)",
        declare_exchange, ExchangeSpec, 201, ExchangeSpec, errors=(400, 409), tag="exchanges",
        also=(200,),
    ),
    Endpoint(
        "GET", EXCHANGE, "Describe an exchange and its bindings", describe_exchange,
        ExchangeView, errors=(404,), tag="exchanges",
    ),
    Endpoint(
        "DELETE", EXCHANGE, "Delete an exchange and its bindings", delete_exchange, None, 204,
        errors=(404,), tag="exchanges",
    ),
    Endpoint(
        "GET", BINDINGS, "List bindings", list_bindings, list[BindingSpec], query=BindingsQuery,
        errors=(404,), tag="exchanges",
    ),
    Endpoint(
        "POST", BINDINGS, "Bind an exchange to a topic (already bound: 200)", bind, BindingSpec,
        201, BindingSpec, errors=(400, 404), tag="exchanges", also=(200,),
    ),
    Endpoint(
        "DELETE", BINDINGS, "Remove a binding, given as the body", unbind, None, 204,
        BindingSpec, errors=(400, 404), tag="exchanges",
    ),
]  # fmt: skip
