"""Topics and their subscriptions: define, list, describe, delete; peek, purge, read the log."""

from __future__ import annotations

import msgspec

from roost.admin.endpoints import Call, Endpoint
from roost.admin.schemas import (
    MessageView,
    NewSubscription,
    NewTopic,
    PeekQuery,
    Purged,
    ReadQuery,
    SubscriptionView,
    TopicView,
    message_view,
    peeked_views,
)
from roost.core.model import SubscriptionSpec
from roost.core.stats import StreamStats
from roost.server.door import Door
from roost.storage import TopicInfo

TOPICS = "/api/v1/topics"
TOPIC = TOPICS + "/{topic}"
SUBSCRIPTIONS = TOPIC + "/subscriptions"
SUBSCRIPTION = SUBSCRIPTIONS + "/{name}"


def topic_view(door: Door, name: str) -> TopicView:
    info = door.describe_topic(name)
    subscriptions = [s.name for s in door.list_subscriptions(name)]
    return TopicView(info.name, info.config, door.policy(name), info.partitions, subscriptions)


def subscription_view(door: Door, topic: str, name: str) -> SubscriptionView:
    stats = door.stats(topic, name)
    [spec] = [s for s in door.list_subscriptions(topic) if s.name == name]
    if isinstance(stats, StreamStats):
        return SubscriptionView(spec, None, stats)
    return SubscriptionView(spec, stats, None)


async def list_topics(call: Call) -> list[TopicInfo]:
    return [call.door.describe_topic(name) for name in call.door.list_topics()]


async def create_topic(call: Call) -> TopicView:
    body: NewTopic = call.body
    call.door.create_topic(body.name, body.config, body.policy)
    return topic_view(call.door, body.name)


async def describe_topic(call: Call) -> TopicView:
    return topic_view(call.door, call.path["topic"])


async def delete_topic(call: Call) -> None:
    call.door.delete_topic(call.path["topic"])


async def read_messages(call: Call) -> list[MessageView]:
    query: ReadQuery = call.query
    messages = call.door.read(call.path["topic"], query.partition, query.offset, query.limit)
    return [message_view(message) for message in messages]


async def list_subscriptions(call: Call) -> list[SubscriptionSpec]:
    call.door.describe_topic(call.path["topic"])  # 404 for an unknown topic, not []
    return call.door.list_subscriptions(call.path["topic"])


async def create_subscription(call: Call) -> SubscriptionView:
    body: NewSubscription = call.body
    fields = {**msgspec.structs.asdict(body), "topic": call.path["topic"]}
    spec = call.door.create_subscription(SubscriptionSpec(**fields))
    return subscription_view(call.door, spec.topic, spec.name)


async def describe_subscription(call: Call) -> SubscriptionView:
    return subscription_view(call.door, call.path["topic"], call.path["name"])


async def delete_subscription(call: Call) -> None:
    call.door.delete_subscription(call.path["topic"], call.path["name"])


async def peek(call: Call) -> list[MessageView]:
    query: PeekQuery = call.query
    return peeked_views(
        call.door.peek(call.path["topic"], call.path["name"], query.limit, query.partition)
    )


async def purge(call: Call) -> Purged:
    topic = call.path["topic"]
    return Purged(call.door.purge(topic, call.path["name"]))


ENDPOINTS = [
    Endpoint("GET", TOPICS, "List topics", list_topics, list[TopicInfo], tag="topics"),
    Endpoint(
        "POST", TOPICS, "Create a topic", create_topic, TopicView, 201, NewTopic,
        errors=(400, 409), tag="topics",
    ),
    Endpoint(
        "GET", TOPIC, "Describe a topic", describe_topic, TopicView, errors=(404,), tag="topics"
    ),
    Endpoint(
        "DELETE", TOPIC, "Delete a topic and its subscriptions", delete_topic, None, 204,
        errors=(400, 404), tag="topics",
    ),
    Endpoint(
        "GET", TOPIC + "/messages", "Read a partition's records without consuming them",
        read_messages, list[MessageView], query=ReadQuery, errors=(400, 404), tag="topics",
    ),
    Endpoint(
        "GET", SUBSCRIPTIONS, "List a topic's subscriptions", list_subscriptions,
        list[SubscriptionSpec], errors=(404,), tag="subscriptions",
    ),
    Endpoint(
        "POST", SUBSCRIPTIONS, "Create a subscription", create_subscription, SubscriptionView,
        201, NewSubscription, errors=(400, 404, 409), tag="subscriptions",
    ),
    Endpoint(
        "GET", SUBSCRIPTION, "Describe a subscription: its settings and stats",
        describe_subscription, SubscriptionView, errors=(404,), tag="subscriptions",
    ),
    Endpoint(
        "DELETE", SUBSCRIPTION, "Delete a subscription", delete_subscription, None, 204,
        errors=(404,), tag="subscriptions",
    ),
    Endpoint(
        "GET", SUBSCRIPTION + "/peek", "Peek at what a subscription holds, without consuming",
        peek, list[MessageView], query=PeekQuery, errors=(400, 404), tag="subscriptions",
    ),
    Endpoint(
        "POST", SUBSCRIPTION + "/purge", "Purge every confirmed message of a subscription",
        purge, Purged, errors=(404,), tag="subscriptions",
    ),
]  # fmt: skip
