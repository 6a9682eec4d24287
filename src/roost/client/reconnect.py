"""A network backend that reconnects, and retries what is safe to retry.

When the connection breaks, the next call opens a new one (backing off, up to a deadline). A
call whose connection broke while it waited for its answer is retried on the new connection
only if doing it twice is harmless: reads, acks and nacks (a second ack of the same receipt is
refused, not repeated), receives and fetches (leases not answered expire and come back), and
publishes of an idempotent producer (the broker answers a repeated sequence with the first
offsets). Anything else raises ``ConnectionLost``: the caller decides, knowing it may have
happened.
A reconnect authenticates again with the same credentials; if the broker refuses them
(``NotAuthenticated``: the password changed, the token was revoked), that is raised at once,
never retried. Once closed, the backend never reconnects: a call waiting on the connection
``aclose`` breaks gets ``ConnectionClosed`` rather than a retry on a fresh connection nobody
would close.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl as _ssl

import msgspec

from roost.client.credentials import Credentials
from roost.client.liveness import Heartbeat
from roost.client.network import NetworkBackend
from roost.client.subscriber import PushStream
from roost.errors import ConnectionClosed, ConnectionLost, StorageClosed
from roost.protocols.native import messages as m
from roost.protocols.native.codec import VERSIONS

#: Requests a retry cannot make happen twice (or for which twice is harmless).
SAFE_TO_RETRY = (
    m.ListTopics, m.DescribeTopic, m.ListSubscriptions, m.ListExchanges, m.ListBindings,
    m.Stats, m.Receive, m.Ack, m.Nack, m.Extend, m.Fetch, m.FetchBatches, m.Heartbeat,
    m.Commit,
)  # fmt: skip
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


def safe_to_retry(request: m.Request) -> bool:
    if isinstance(request, m.Publish):
        return request.producer_id is not None
    return isinstance(request, SAFE_TO_RETRY)


#: What says a connection is gone and a new one may do: the client's own view of it (closed,
#: or lost to a broker gone silent: ``roost.client.liveness``), or the operating system's
#: (``TimeoutError``, an ``OSError``, for a broker that did not answer a new connection).
BROKEN = (ConnectionClosed, ConnectionLost, ConnectionError, OSError)


class ReconnectingBackend:
    def __init__(
        self,
        host: str,
        port: int,
        reconnect_timeout_s: float = 30.0,
        credentials: Credentials | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self._host = host
        self._heartbeat = heartbeat or Heartbeat()
        self._port = port
        self._ssl = ssl  # every connection, the first and each reconnect, over TLS or none
        self._timeout_s = reconnect_timeout_s
        self._credentials = credentials
        self._current: NetworkBackend | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()
        self._closed = False
        self.reconnects = 0
        self._version = min(VERSIONS)
        self._telling: set[asyncio.Future[m.Response]] = set()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        reconnect_timeout_s: float = 30.0,
        credentials: Credentials | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> ReconnectingBackend:
        backend = cls(host, port, reconnect_timeout_s, credentials, ssl=ssl, heartbeat=heartbeat)
        backend._current = await backend._open()
        return backend

    async def _open(self) -> NetworkBackend:
        return await NetworkBackend.connect(
            self._host, self._port, self._credentials, ssl=self._ssl, heartbeat=self._heartbeat
        )

    async def call(self, request: m.Request) -> m.Response:
        while True:
            connection = await self._connection()
            try:
                return await connection.call(request)
            except (*BROKEN, StorageClosed) as e:
                if self._current is connection:
                    self._current = None
                with contextlib.suppress(Exception):
                    await connection.aclose()
                if self._closed:
                    raise ConnectionClosed("the client") from e
                if not safe_to_retry(request):
                    if isinstance(e, ConnectionLost):
                        raise  # it names the request already, and why it was lost
                    raise ConnectionLost(type(request).__name__) from e

    def tell(self, request: m.Ack) -> None:
        """On the connection in use; between connections, as a call on the next one (which
        may be older and answer: the answer is dropped)."""
        if self._current is not None and self._current.alive:
            self._current.tell(request)
            return
        answered = msgspec.structs.replace(request, answer=True)
        sending = asyncio.ensure_future(self.call(answered))
        self._telling.add(sending)
        sending.add_done_callback(self._told)

    def _told(self, sending: asyncio.Future[m.Response]) -> None:
        self._telling.discard(sending)
        if not sending.cancelled():
            sending.exception()  # retrieved: a lost ack is redelivered, not reported

    async def subscribe(self, request: m.Subscribe) -> PushStream:
        """Subscribe on the current connection, or on a new one if it broke meanwhile: what
        a broken connection was pushed comes back to the subscription when its leases run
        out, so subscribing again is harmless."""
        while True:
            connection = await self._connection()
            try:
                return await connection.subscribe(request)
            except (*BROKEN, StorageClosed):
                if self._current is connection:
                    self._current = None
                with contextlib.suppress(Exception):
                    await connection.aclose()

    @property
    def blocked(self) -> str | None:
        """Why the broker is not reading publishers on the connection in use (None: it is)."""
        return None if self._current is None else self._current.blocked

    @property
    def protocol_version(self) -> int:
        """The version of the connection in use (or of the last one, between connections)."""
        if self._current is not None:
            self._version = self._current.protocol_version
        return self._version

    async def _connection(self) -> NetworkBackend:
        async with self._connecting:
            if self._closed:
                raise ConnectionClosed("the client")
            if self._current is not None and self._current.alive:
                return self._current
            if self._current is not None:
                with contextlib.suppress(Exception):
                    await self._current.aclose()
            loop = asyncio.get_running_loop()
            give_up = loop.time() + self._timeout_s
            backoff = FIRST_BACKOFF_S
            while True:
                try:
                    # NotAuthenticated is not caught: the same credentials would fail again.
                    connection = await self._open()
                except (*BROKEN, StorageClosed) as e:  # a broker still shutting down, say
                    if self._closed:
                        raise ConnectionClosed("the client") from e
                    if loop.time() + backoff > give_up:
                        raise ConnectionLost(f"reconnecting to {self._host}:{self._port}") from e
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                if self._closed:  # closed while connecting: this one would never be closed
                    await connection.aclose()
                    raise ConnectionClosed("the client")
                self._current = connection
                self.reconnects += 1
                return connection

    async def aclose(self) -> None:
        self._closed = True
        if self._current is not None:
            await self._current.aclose()
            self._current = None
