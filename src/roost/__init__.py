"""Roost: a message broker in one process — work queues, routing and replayable logs.

import roost

async with roost.open("./data") as broker:
    await broker.create_queue("emails")
    await broker.publish("emails", b"hello")
    [message] = await broker.receive("emails", wait=1)
    await message.ack()
"""

from roost.client.api import Client, StreamMember
from roost.client.embedded import EmbeddedBroker, Outgoing, Published, open
from roost.client.network import connect
from roost.client.subscriber import Delivery
from roost.errors import RoostError

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Delivery",
    "EmbeddedBroker",
    "Outgoing",
    "Published",
    "RoostError",
    "StreamMember",
    "connect",
    "open",
]
