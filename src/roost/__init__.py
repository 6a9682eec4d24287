"""Roost: a message broker in one process — work queues, routing and replayable logs.

import roost

async with roost.open("./data") as broker:
    await broker.create_queue("emails")
    await broker.publish("emails", b"hello")
    [message] = await broker.receive("emails", wait=1)
    await message.ack()
"""

from roost import errors
from roost.client import tracing
from roost.client.api import Client, StreamMember
from roost.client.embedded import EmbeddedBroker, Outgoing, Published, open
from roost.client.network import connect
from roost.client.subscriber import Delivery
from roost.client.worker import Reject, Worker
from roost.core.inspection import Peeked
from roost.core.retry import RetryPolicy
from roost.errors import (
    AlreadyExists,
    BacklogFull,
    ConfigConflict,
    ConnectionClosed,
    ConnectionLost,
    ExchangeExists,
    InvalidConfig,
    InvalidRequest,
    LeaseExpired,
    NotAuthenticated,
    NotAuthorised,
    NotFound,
    RecordTooLarge,
    RoostError,
    StorageFailure,
    SubscriptionExists,
    TopicExists,
    Unavailable,
    UnknownExchange,
    UnknownSubscription,
    UnknownTopic,
    Unroutable,
)

__version__ = "0.1.0"

# The names an application needs, flat: ``roost.Worker``, ``roost.RetryPolicy``,
# ``roost.TopicExists``; every error class is also in ``roost.errors``.
__all__ = [
    "AlreadyExists",
    "BacklogFull",
    "Client",
    "ConfigConflict",
    "ConnectionClosed",
    "ConnectionLost",
    "Delivery",
    "EmbeddedBroker",
    "ExchangeExists",
    "InvalidConfig",
    "InvalidRequest",
    "LeaseExpired",
    "NotAuthenticated",
    "NotAuthorised",
    "NotFound",
    "Outgoing",
    "Peeked",
    "Published",
    "RecordTooLarge",
    "Reject",
    "RetryPolicy",
    "RoostError",
    "StorageFailure",
    "StreamMember",
    "SubscriptionExists",
    "TopicExists",
    "Unavailable",
    "UnknownExchange",
    "UnknownSubscription",
    "UnknownTopic",
    "Unroutable",
    "Worker",
    "connect",
    "errors",
    "open",
    "tracing",
]
