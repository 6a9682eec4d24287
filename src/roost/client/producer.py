"""A batching, idempotent producer: many ``send``s become few publishes, and a retry after a
lost connection never stores a message twice.

    producer = await Producer.start(broker, "clicks", linger=0.005, max_batch=500)
    placed = await producer.send(b"...", key=b"user-7")      # resolves when durable
    await producer.aclose()                                  # flushes what is pending

How: messages are grouped per partition (the producer partitions as the broker does: the key's
CRC32C, else round robin), and a partition's batch goes out when it reaches ``max_batch``
messages or ``max_batch_bytes``, or ``linger`` seconds after its first message. Each batch
carries the producer's id and the sequence of its first message in that partition; one batch
per partition is in flight at a time, so sequences arrive in order. A batch whose answer was
lost (``ConnectionLost``, a broker restart) is sent again with the same sequence, and the
broker confirms it with the offsets it stored the first time.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence

from roost.client.api import Client
from roost.client.tracing import stamped
from roost.core.publishing import Outgoing, Published, partition_for_key
from roost.errors import ConnectionLost, InvalidConfig, RoostError

#: How long a batch keeps being retried across reconnects before its sends fail.
RETRY_FOR_S = 60.0


class _Batch:
    def __init__(self) -> None:
        self.messages: list[Outgoing] = []
        self.futures: list[asyncio.Future[Published]] = []
        self.size_bytes = 0
        self.timer: asyncio.TimerHandle | None = None


class Producer:
    def __init__(
        self,
        client: Client,
        topic: str,
        partitions: int,
        *,
        linger: float,
        max_batch: int,
        max_batch_bytes: int,
        producer_id: str | None,
    ) -> None:
        if linger < 0 or max_batch < 1 or max_batch_bytes < 1:
            raise InvalidConfig("producer", (linger, max_batch, max_batch_bytes), "positive")
        self.topic = topic
        self.producer_id = producer_id or f"p-{uuid.uuid4().hex}"
        self._client = client
        self._partitions = partitions
        self._linger = linger
        self._max_batch = max_batch
        self._max_batch_bytes = max_batch_bytes
        self._round_robin = itertools.count()
        self._next_sequence = [0] * partitions
        self._open: dict[int, _Batch] = {}
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    @classmethod
    async def start(
        cls,
        client: Client,
        topic: str,
        *,
        linger: float = 0.005,
        max_batch: int = 500,
        max_batch_bytes: int = 1024 * 1024,
        producer_id: str | None = None,
    ) -> Producer:
        """A producer for ``topic`` (which must exist: its partition count is read once)."""
        partitions = len((await client.describe_topic(topic)).partitions)
        return cls(
            client, topic, partitions, linger=linger, max_batch=max_batch,
            max_batch_bytes=max_batch_bytes, producer_id=producer_id,
        )  # fmt: skip

    async def send(
        self,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> Published:
        """Queue one message; returns where it landed once its batch is durable."""
        if self._closed:
            raise InvalidConfig("producer", self.topic, "closed")
        if partition is None:
            partition = (
                partition_for_key(key, self._partitions)
                if key is not None
                else next(self._round_robin) % self._partitions
            )
        batch = self._open.setdefault(partition, _Batch())
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        batch.messages.append(
            Outgoing(value=value, key=key, headers=stamped(tuple(headers)), partition=partition)
        )
        batch.futures.append(future)
        batch.size_bytes += len(value) + len(key or b"")
        if len(batch.messages) >= self._max_batch or batch.size_bytes >= self._max_batch_bytes:
            self._close_batch(partition)
        elif batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(
                self._linger, self._close_batch, partition
            )
        return await future

    def _close_batch(self, partition: int) -> None:
        """Take the partition's open batch and send it after the one in flight."""
        batch = self._open.pop(partition, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        sequence = self._next_sequence[partition]
        self._next_sequence[partition] += len(batch.messages)
        previous = self._sending.get(partition)
        self._sending[partition] = asyncio.ensure_future(
            self._send_after(previous, batch, sequence)
        )

    async def _send_after(
        self, previous: asyncio.Task[None] | None, batch: _Batch, sequence: int
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            placed = await self._publish(batch.messages, sequence)
        except RoostError as e:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(e)
            return
        for future, published in zip(batch.futures, placed, strict=True):
            if not future.done():
                future.set_result(published)

    async def _publish(self, messages: list[Outgoing], sequence: int) -> list[Published]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RETRY_FOR_S
        while True:
            try:
                return await self._client.publish_batch(
                    self.topic, messages, producer_id=self.producer_id, sequence=sequence
                )
            except ConnectionLost:
                if loop.time() > give_up:
                    raise
                await asyncio.sleep(0.05)  # the backend reconnects on the next call

    async def flush(self) -> None:
        """Send every open batch now and wait until all are confirmed."""
        for partition in list(self._open):
            self._close_batch(partition)
        await asyncio.gather(*self._sending.values(), return_exceptions=True)

    async def aclose(self) -> None:
        self._closed = True
        await self.flush()
