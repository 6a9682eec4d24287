"""``roost.open(path)``: the whole broker in this process, behind the client's API.

    async with roost.open("./data") as broker:
        await broker.create_queue("emails")

The ``LocalBackend`` hands each request to the same handlers the server uses, through the same
door (server/door.py), against a host running on this event loop: no sockets, no encoding,
the same behaviour. The caller owns the process, so its door is ``TRUSTED``: embedded mode
checks no grants.
"""

from __future__ import annotations

from roost.client.api import Client, Opening, StreamMember
from roost.client.subscriber import Delivery, PollingStream, PushStream
from roost.clock import Clock
from roost.core.publishing import Outgoing, Published
from roost.errors import StorageClosed
from roost.protocols.native import messages as m
from roost.protocols.native.codec import VERSIONS
from roost.server.access import TRUSTED
from roost.server.host import Host
from roost.server.native_session import HANDLERS, ack_unanswered

__all__ = ["Delivery", "EmbeddedBroker", "LocalBackend", "Outgoing", "Published", "StreamMember",
           "open"]  # fmt: skip

#: The client API over a host in this process (``roost.open``).
EmbeddedBroker = Client


class LocalBackend:
    #: In-process, client and handlers are the same code: always the newest version.
    protocol_version = max(VERSIONS)

    def __init__(self, host: Host) -> None:
        self.host = host
        self.door = host.door(TRUSTED)

    async def call(self, request: m.Request) -> m.Response:
        return await HANDLERS[type(request)](self.door, request)

    def tell(self, request: m.Ack) -> None:
        ack_unanswered(self.door, request)

    async def subscribe(self, request: m.Subscribe) -> PushStream:
        if self.host.stopping:
            raise StorageClosed("the broker")
        self.door.check_subscription(request.topic, request.subscription)  # fails now, if ever
        return PollingStream(self.call, request, lambda: self.host.stopping)

    async def aclose(self) -> None:
        await self.host.aclose()


def open(path: str, *, clock: Clock | None = None) -> Opening:
    """Run a broker in this process on the data directory at ``path``.

    ``async with roost.open(path) as broker: ...`` or ``broker = await roost.open(path)``
    (then ``await broker.aclose()``).
    """

    async def open_client() -> Client:
        return Client(LocalBackend(await Host.start(path, clock)))

    return Opening(open_client)
