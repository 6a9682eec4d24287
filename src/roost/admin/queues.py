"""Queues: a topic plus one subscription of the same name (what ``create_queue`` makes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import MessageView, NewQueue, PeekQuery, Purged, SubscriptionView
from roost.admin.topics import peek, purge, subscription_view
from roost.errors import UnknownSubscription

QUEUES = "/api/v1/queues"
QUEUE = QUEUES + "/{name}"


def _queue(call: Call) -> Call:
    """The queue ``name`` as the subscription ``name`` of topic ``name``."""
    name = call.path["name"]
    return dataclasses.replace(call, path={"topic": name, "name": name})


async def list_queues(call: Call) -> list[SubscriptionView]:
    broker = call.host.broker
    return [
        subscription_view(broker, s.topic, s.name)
        for s in broker.list_subscriptions()
        if s.name == s.topic and s.mode != "stream"
    ]


async def create_queue(call: Call) -> SubscriptionView:
    body: NewQueue = call.body
    options: dict[str, Any] = msgspec.structs.asdict(body)
    name = options.pop("name")
    if options["policy"] is None:
        del options["policy"]  # the broker's queue policy: retention until consumed
    call.host.broker.create_queue(name, **options)
    return subscription_view(call.host.broker, name, name)


async def describe_queue(call: Call) -> SubscriptionView:
    name = call.path["name"]
    view = subscription_view(call.host.broker, name, name)
    if view.stats is None:
        raise UnknownSubscription(name, name)  # a stream of that name is not a queue
    return view


async def delete_queue(call: Call) -> None:
    call.host.broker.delete_queue(call.path["name"])


async def peek_queue(call: Call) -> list[MessageView]:
    return await peek(_queue(call))


async def purge_queue(call: Call) -> Purged:
    return await purge(_queue(call))


ENDPOINTS = [
    Endpoint(
        "GET", QUEUES, "List queues with their stats", list_queues, list[SubscriptionView],
        tag="queues",
    ),
    Endpoint(
        "POST", QUEUES, "Create a queue (and its dead-letter topic)", create_queue,
        SubscriptionView, 201, NewQueue, errors=(400, 404, 409), tag="queues",
    ),
    Endpoint(
        "GET", QUEUE, "Describe a queue", describe_queue, SubscriptionView, errors=(404,),
        tag="queues",
    ),
    Endpoint(
        "DELETE", QUEUE, "Delete a queue (its dead-letter topic stays)", delete_queue, None, 204,
        errors=(400, 404), tag="queues",
    ),
    Endpoint(
        "GET", QUEUE + "/peek", "Peek at a queue's messages, without consuming", peek_queue,
        list[MessageView], query=PeekQuery, errors=(400, 404), tag="queues",
    ),
    Endpoint(
        "POST", QUEUE + "/purge", "Purge every confirmed message of a queue", purge_queue,
        Purged, errors=(400, 404), tag="queues",
    ),
]  # fmt: skip
