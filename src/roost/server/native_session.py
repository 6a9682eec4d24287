"""What each native request does to the host, and what it answers.

One handler per request type, in a table; each turns the wire struct into core arguments,
awaits the host, and turns the result into a response struct. Protocol details (frames,
correlation ids) stay in the connection; core types stay out of the wire structs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from roost.core.model import Message, SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing, Published, PublishedRange, PublishOutcome
from roost.core.redrive import RedriveFilter
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import InvalidConfig, InvalidRequest, RoostError
from roost.protocols.native import messages as m
from roost.server.host import Host
from roost.storage import TopicConfig

log = logging.getLogger("roost.native")
Handler = Callable[[Host, Any], Awaitable[m.Response]]
#: create_queue options a client may pass (the Broker's keyword arguments).
QUEUE_OPTIONS = frozenset({
    "fifo", "partitions", "visibility_timeout_ms", "max_deliveries", "dead_letter", "delay_ms",
    "durability", "retention_ms", "policy",
})  # fmt: skip


def described(value: object) -> m.Described:
    return m.Described(msgspec.to_builtins(value))


def delivered(message: Message) -> m.Delivered:
    return m.Delivered(
        message.partition, message.offset, message.timestamp_ms, message.key, message.value,
        list(message.headers), message.delivery_count,
    )  # fmt: skip


def runs(published: Sequence[Published]) -> m.PublishedAt:
    """Consecutive offsets of one topic and partition, folded into one run each."""
    if isinstance(published, PublishedRange):  # a plain publish: one run already
        run = (published.topic, published.partition, published.base_offset, published.length)
        return m.PublishedAt([run] if published.length else [])
    folded: list[tuple[str, int, int, int]] = []
    for p in published:
        if folded:
            topic, partition, first, count = folded[-1]
            if (topic, partition, first + count) == (p.topic, p.partition, p.offset):
                folded[-1] = (topic, partition, first, count + 1)
                continue
        folded.append((p.topic, p.partition, p.offset, 1))
    return m.PublishedAt(folded)


def outgoing(message: m.Out) -> Outgoing:
    return Outgoing(
        value=message.value, key=message.key, headers=message.headers,
        partition=message.partition, deliver_at_ms=message.deliver_at_ms,
        delay_ms=message.delay_ms, dedup_id=message.dedup_id,
    )  # fmt: skip


async def create_topic(host: Host, req: m.CreateTopic) -> m.Response:
    config = msgspec.convert(req.config, TopicConfig)
    policy = msgspec.convert(req.policy, TopicPolicy)
    return described(host.broker.create_topic(req.name, config, policy))


async def create_queue(host: Host, req: m.CreateQueue) -> m.Response:
    unknown = set(req.options) - QUEUE_OPTIONS
    if unknown:
        raise InvalidConfig("queue options", sorted(unknown), f"known: {sorted(QUEUE_OPTIONS)}")
    options = dict(req.options)
    if "policy" in options:
        options["policy"] = msgspec.convert(options["policy"], TopicPolicy)
    return described(host.broker.create_queue(req.name, **options))  # type: ignore[arg-type]


async def create_subscription(host: Host, req: m.CreateSubscription) -> m.Response:
    spec = msgspec.convert(req.spec, SubscriptionSpec)
    return described(host.broker.create_subscription(spec))


async def publish(host: Host, req: m.Publish) -> m.Response:
    messages = [outgoing(message) for message in req.messages]
    return runs(await host.publish(req.topic, messages, req.producer_id, req.sequence))


def publish_now(host: Host, req: m.Publish) -> PublishOutcome | None:
    """``Host.publish_now`` of a ``Publish``: appended in this turn, or None (nothing done)."""
    messages = [outgoing(message) for message in req.messages]
    return host.publish_now(req.topic, messages, req.producer_id, req.sequence)


async def confirm(host: Host, outcome: PublishOutcome, topic: str) -> m.Response:
    return runs(await host.confirm(outcome, {topic}))


async def publish_to_exchange(host: Host, req: m.PublishToExchange) -> m.Response:
    messages = [outgoing(message) for message in req.messages]
    return runs(await host.publish_to_exchange(req.exchange, req.routing_key, messages))


#: One answer holds at most this many messages: its size (and the broker's memory while it is
#: built) stays bounded whatever a client asks for. Pushed deliveries have their own bound.
MAX_RECEIVE_MESSAGES = 1_000
MAX_FETCH_RECORDS = 10_000


def _at_most(asked: int, limit: int, name: str, what: str) -> None:
    if asked > limit:
        raise InvalidRequest(f"{name}={asked} exceeds the limit of {limit} per {what}")


async def receive(host: Host, req: m.Receive) -> m.Response:
    _at_most(req.max_messages, MAX_RECEIVE_MESSAGES, "max_messages", "receive")
    messages = await host.receive(
        req.topic, req.subscription, req.max_messages, req.wait_ms / 1000, req.visibility_ms
    )
    return m.Messages([delivered(message) for message in messages])


async def ack(host: Host, req: m.Ack) -> m.Response:
    result = host.broker.ack(req.topic, req.subscription, req.receipts)
    host.settled(req.topic)
    return m.Refused(result)


def ack_unanswered(host: Host, req: m.Ack) -> None:
    """An ``Ack`` that expects no answer (version 3), settled now. What it cannot settle (a
    lease that ran out, a subscription gone) is logged at debug level: those messages come
    again when their leases run out, as after a lost ack."""
    try:
        host.broker.ack(req.topic, req.subscription, req.receipts)
    except RoostError as e:
        log.debug("unanswered ack on %s/%s: %s", req.topic, req.subscription, e)
        return
    host.settled(req.topic)


async def nack(host: Host, req: m.Nack) -> m.Response:
    result = host.broker.nack(req.topic, req.subscription, req.receipts, req.delay_ms, req.error)
    host.wake_timer()
    return m.Refused(result)


async def extend(host: Host, req: m.Extend) -> m.Response:
    result = host.broker.extend(req.topic, req.subscription, req.receipts, req.visibility_ms)
    return m.Refused(result)


def membership(value: Any) -> m.Membership:
    return m.Membership(
        value.member_id, value.generation, list(value.partitions), value.session_timeout_ms
    )


async def join(host: Host, req: m.Join) -> m.Response:
    return membership(host.broker.stream(req.topic, req.group).join(req.member_id, req.client))


async def heartbeat(host: Host, req: m.Heartbeat) -> m.Response:
    stream = host.broker.stream(req.topic, req.group)
    return membership(stream.heartbeat(req.member_id, req.generation))


async def fetch(host: Host, req: m.Fetch) -> m.Response:
    _at_most(req.max_records, MAX_FETCH_RECORDS, "max_records", "fetch")
    records = await host.fetch(
        req.topic, req.group, req.member_id, req.generation, req.max_records, req.wait_ms / 1000
    )
    current = host.broker.stream(req.topic, req.group).heartbeat(req.member_id, req.generation)
    return m.Records([delivered(record) for record in records], membership(current))


async def fetch_batches(host: Host, req: m.FetchBatches) -> m.Response:
    fetched = await host.fetch_batches(
        req.topic, req.group, req.member_id, req.generation, req.max_records, req.wait_ms / 1000
    )
    current = host.broker.stream(req.topic, req.group).heartbeat(req.member_id, req.generation)
    return m.Batches(
        [m.Fetched(f.partition, f.first_offset, f.next_offset, f.data) for f in fetched],
        membership(current),
    )


async def commit(host: Host, req: m.Commit) -> m.Response:
    host.broker.stream(req.topic, req.group).commit(req.member_id, req.generation, req.offsets)
    host.settled(req.topic)
    return m.Done()


async def seek(host: Host, req: m.Seek) -> m.Response:
    stream = host.broker.stream(req.topic, req.group)
    offset = stream.seek(req.member_id, req.generation, req.partition, req.to)  # type: ignore[arg-type]
    return m.Position(offset)


async def seek_to_time(host: Host, req: m.SeekToTime) -> m.Response:
    stream = host.broker.stream(req.topic, req.group)
    return m.Position(
        stream.seek_to_timestamp(req.member_id, req.generation, req.partition, req.timestamp_ms)
    )


async def redrive(host: Host, req: m.Redrive) -> m.Response:
    where = msgspec.convert(req.where, RedriveFilter)
    return m.Moved(await host.redrive(req.dead_letter_topic, where, req.rate_per_s, req.to))


def _done(call: Callable[[Host, Any], object]) -> Handler:
    async def handler(host: Host, req: Any) -> m.Response:
        call(host, req)
        return m.Done()

    return handler


def _deleting(call: Callable[[Host, Any], object], topic_of: Callable[[Any], str]) -> Handler:
    """A delete; then the long polls on its topic wake, to fail with the error that names
    what is gone instead of waiting out their time."""

    async def handler(host: Host, req: Any) -> m.Response:
        call(host, req)
        host.wake_readers(topic_of(req))
        return m.Done()

    return handler


def _describe(call: Callable[[Host, Any], object]) -> Handler:
    async def handler(host: Host, req: Any) -> m.Response:
        return described(call(host, req))

    return handler


HANDLERS: dict[type, Handler] = {
    m.CreateTopic: create_topic,
    m.ListTopics: _describe(lambda h, r: h.broker.list_topics()),
    m.DescribeTopic: _describe(lambda h, r: h.broker.describe_topic(r.name)),
    m.DeleteTopic: _deleting(lambda h, r: h.broker.delete_topic(r.name), lambda r: r.name),
    m.CreateQueue: create_queue,
    m.DeleteQueue: _deleting(lambda h, r: h.broker.delete_queue(r.name), lambda r: r.name),
    m.CreateSubscription: create_subscription,
    m.ListSubscriptions: _describe(lambda h, r: h.broker.list_subscriptions(r.topic)),
    m.DeleteSubscription: _deleting(
        lambda h, r: h.broker.delete_subscription(r.topic, r.name), lambda r: r.topic
    ),
    m.DeclareExchange: _describe(
        lambda h, r: h.broker.declare_exchange(ExchangeSpec(r.name, r.kind, r.alternate))
    ),
    m.DeleteExchange: _done(lambda h, r: h.broker.delete_exchange(r.name)),
    m.ListExchanges: _describe(lambda h, r: h.broker.list_exchanges()),
    m.Bind: _describe(lambda h, r: h.broker.bind(msgspec.convert(r.binding, BindingSpec))),
    m.Unbind: _describe(lambda h, r: h.broker.unbind(msgspec.convert(r.binding, BindingSpec))),
    m.ListBindings: _describe(lambda h, r: h.broker.list_bindings(r.exchange)),
    m.Publish: publish,
    m.PublishToExchange: publish_to_exchange,
    m.Receive: receive,
    m.Ack: ack,
    m.Nack: nack,
    m.Extend: extend,
    m.Join: join,
    m.Heartbeat: heartbeat,
    m.Leave: _done(lambda h, r: h.broker.stream(r.topic, r.group).leave(r.member_id)),
    m.Fetch: fetch,
    m.FetchBatches: fetch_batches,
    m.Commit: commit,
    m.Seek: seek,
    m.SeekToTime: seek_to_time,
    m.Stats: _describe(lambda h, r: h.broker.stats(r.topic, r.subscription)),
    m.Redrive: redrive,
}
