"""What each native request does through the door, and what it answers.

One handler per request type, in a table; each turns the wire struct into the arguments of
one door command (server/door.py, where it is authorised), awaits it, and turns the result
into a response struct. Protocol details (frames, correlation ids) stay in the connection;
core types stay out of the wire structs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec

from roost.core.model import Message, SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing, Published, PublishedRange, PublishOutcome
from roost.core.redrive import RedriveFilter
from roost.core.retry import RetryPolicy
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.errors import InvalidConfig, InvalidRequest, RoostError
from roost.protocols.native import messages as m
from roost.protocols.native.unreadable import Unreadable
from roost.server.door import Door
from roost.storage import TopicConfig

log = logging.getLogger("roost.native")
Handler = Callable[[Door, Any], Awaitable[m.Response]]
T = TypeVar("T")


def described(request: m.Request, value: object) -> m.Described:
    """``value`` (a core struct, or a list of them) as the answer ``request`` has on the wire
    (``messages.ANSWERS``): fields the wire does not carry (a subscription's journal) stay
    here, and one the answer needs but the core lost fails loudly, in the tests first."""
    builtins = msgspec.to_builtins(value, builtin_types=(bytes,))
    return m.Described(msgspec.convert(builtins, m.answer_type(request, builtins)))


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


def given(settings: msgspec.Struct) -> dict[str, Any]:
    """The fields of a wire settings struct that were sent (UNSET ones take core defaults)."""
    values: dict[str, Any] = msgspec.to_builtins(settings, builtin_types=(bytes,))
    return values


def core(settings: msgspec.Struct, kind: type[T]) -> T:
    """A wire settings struct as the core's struct ``kind``: what was not sent takes the
    core's default; a value the core's type refuses is ``InvalidConfig``, never a crash."""
    try:
        return msgspec.convert(given(settings), kind)
    except msgspec.ValidationError as e:
        raise InvalidConfig(kind.__name__, "(as sent)", str(e)) from None


async def create_topic(door: Door, req: m.CreateTopic) -> m.Response:
    config = core(req.config, TopicConfig)
    policy = core(req.policy, TopicPolicy)
    return described(req, await door.durably(lambda: door.create_topic(req.name, config, policy)))


async def create_queue(door: Door, req: m.CreateQueue) -> m.Response:
    options = given(req.options)
    if "policy" in options:
        options["policy"] = core(req.options.policy, TopicPolicy)  # type: ignore[arg-type]
    if "retry" in options:
        options["retry"] = core(req.options.retry, RetryPolicy)  # type: ignore[arg-type]
    return described(req, await door.durably(lambda: door.create_queue(req.name, **options)))


async def create_subscription(door: Door, req: m.CreateSubscription) -> m.Response:
    spec = core(req.spec, SubscriptionSpec)
    return described(req, await door.durably(lambda: door.create_subscription(spec)))


async def publish(door: Door, req: m.Publish) -> m.Response:
    messages = [outgoing(message) for message in req.messages]
    return runs(await door.publish(req.topic, messages, req.producer_id, req.sequence))


def publish_now(door: Door, req: m.Publish) -> PublishOutcome | None:
    """``Host.publish_now`` of a ``Publish``: appended in this turn, or None (nothing done)."""
    messages = [outgoing(message) for message in req.messages]
    return door.publish_now(req.topic, messages, req.producer_id, req.sequence)


async def confirm(door: Door, outcome: PublishOutcome, topic: str) -> m.Response:
    return runs(await door.confirm(outcome, {topic}))


async def publish_to_exchange(door: Door, req: m.PublishToExchange) -> m.Response:
    messages = [outgoing(message) for message in req.messages]
    return runs(await door.publish_to_exchange(req.exchange, req.routing_key, messages))


#: One answer holds at most this many messages: its size (and the broker's memory while it is
#: built) stays bounded whatever a client asks for. Pushed deliveries have their own bound.
MAX_RECEIVE_MESSAGES = 1_000
MAX_FETCH_RECORDS = 10_000


def _at_most(asked: int, limit: int, name: str, what: str) -> None:
    if asked > limit:
        raise InvalidRequest(f"{name}={asked} exceeds the limit of {limit} per {what}")


async def receive(door: Door, req: m.Receive) -> m.Response:
    _at_most(req.max_messages, MAX_RECEIVE_MESSAGES, "max_messages", "receive")
    messages = await door.receive(
        req.topic, req.subscription, req.max_messages, req.wait_ms / 1000, req.visibility_ms
    )
    return m.Messages([delivered(message) for message in messages])


async def ack(door: Door, req: m.Ack) -> m.Response:
    return m.Refused(door.ack(req.topic, req.subscription, req.receipts))


def ack_unanswered(door: Door, req: m.Ack) -> None:
    """An ``Ack`` that expects no answer (version 3), settled now. What it cannot settle (a
    lease that ran out, a subscription gone, a missing grant) is logged at debug level: those
    messages come again when their leases run out, as after a lost ack."""
    try:
        door.ack(req.topic, req.subscription, req.receipts)
    except RoostError as e:
        log.debug("unanswered ack on %s/%s: %s", req.topic, req.subscription, e)


async def nack(door: Door, req: m.Nack) -> m.Response:
    refused = door.nack(req.topic, req.subscription, req.receipts, req.delay_ms, req.error,
                        req.undelivered, req.reject)  # fmt: skip
    return m.Refused(refused)


async def extend(door: Door, req: m.Extend) -> m.Response:
    return m.Refused(door.extend(req.topic, req.subscription, req.receipts, req.visibility_ms))


def membership(value: Any) -> m.Membership:
    return m.Membership(
        value.member_id, value.generation, list(value.partitions), value.session_timeout_ms
    )


async def join(door: Door, req: m.Join) -> m.Response:
    return membership(door.join(req.topic, req.group, req.member_id, req.client))


async def heartbeat(door: Door, req: m.Heartbeat) -> m.Response:
    return membership(door.heartbeat(req.topic, req.group, req.member_id, req.generation))


async def fetch(door: Door, req: m.Fetch) -> m.Response:
    _at_most(req.max_records, MAX_FETCH_RECORDS, "max_records", "fetch")
    records, current = await door.fetch(
        req.topic, req.group, req.member_id, req.generation, req.max_records, req.wait_ms / 1000
    )
    return m.Records([delivered(record) for record in records], membership(current))


async def fetch_batches(door: Door, req: m.FetchBatches) -> m.Response:
    fetched, current = await door.fetch_batches(
        req.topic, req.group, req.member_id, req.generation, req.max_records, req.wait_ms / 1000
    )
    return m.Batches(
        [m.Fetched(f.partition, f.first_offset, f.next_offset, f.data) for f in fetched],
        membership(current),
    )


async def commit(door: Door, req: m.Commit) -> m.Response:
    door.commit(req.topic, req.group, req.member_id, req.generation, req.offsets)
    return m.Done()


async def seek(door: Door, req: m.Seek) -> m.Response:
    to: Any = req.to  # an offset, "earliest" or "latest": the stream checks which
    return m.Position(
        door.seek(req.topic, req.group, req.member_id, req.generation, req.partition, to)
    )


async def seek_to_time(door: Door, req: m.SeekToTime) -> m.Response:
    return m.Position(
        door.seek_to_time(
            req.topic, req.group, req.member_id, req.generation, req.partition, req.timestamp_ms
        )
    )


async def redrive(door: Door, req: m.Redrive) -> m.Response:
    where = core(req.where, RedriveFilter)
    return m.Moved(await door.redrive(req.dead_letter_topic, where, req.rate_per_s, req.to))


async def start_redrive(door: Door, req: m.StartRedrive) -> m.Response:
    where = core(req.where, RedriveFilter)
    return described(req, door.start_redrive(req.dead_letter_topic, where, req.rate_per_s, req.to))


async def list_redrives(door: Door, req: m.ListRedrives) -> m.Response:
    return described(req, door.list_redrives(req.dead_letter_topic))


async def cancel_redrive(door: Door, req: m.CancelRedrive) -> m.Response:
    return described(req, await door.cancel_redrive(req.dead_letter_topic, req.task_id))


async def peek(door: Door, req: m.Peek) -> m.Response:
    peeked = door.peek(req.topic, req.subscription, req.max_messages, req.partition)
    return m.Peeked([m.PeekedMessage(delivered(p.message), p.state, p.until_ms) for p in peeked])


async def purge(door: Door, req: m.Purge) -> m.Response:
    return m.Purged(door.purge(req.topic, req.subscription))


async def refuse_unreadable(door: Door, req: Unreadable) -> m.Response:
    """A request frame whose payload was no request (the codec's ``Unreadable``): the
    sender's mistake, answered as such, and the connection goes on."""
    raise InvalidRequest(req.problem)


def _done(call: Callable[[Door, Any], object]) -> Handler:
    async def handler(door: Door, req: Any) -> m.Response:
        call(door, req)
        return m.Done()

    return handler


def _describe(call: Callable[[Door, Any], object]) -> Handler:
    async def handler(door: Door, req: Any) -> m.Response:
        return described(req, call(door, req))

    return handler


HANDLERS: dict[type, Handler] = {
    m.CreateTopic: create_topic,
    m.ListTopics: _describe(lambda d, r: d.list_topics()),
    m.DescribeTopic: _describe(lambda d, r: d.describe_topic(r.name)),
    m.DeleteTopic: _done(lambda d, r: d.delete_topic(r.name)),
    m.CreateQueue: create_queue,
    m.DeleteQueue: _done(lambda d, r: d.delete_queue(r.name)),
    m.CreateSubscription: create_subscription,
    m.ListSubscriptions: _describe(lambda d, r: d.list_subscriptions(r.topic)),
    m.DeleteSubscription: _done(lambda d, r: d.delete_subscription(r.topic, r.name)),
    m.DeclareExchange: _describe(
        lambda d, r: d.declare_exchange(ExchangeSpec(r.name, r.kind, r.alternate))
    ),
    m.DeleteExchange: _done(lambda d, r: d.delete_exchange(r.name)),
    m.ListExchanges: _describe(lambda d, r: d.list_exchanges()),
    m.Bind: _describe(lambda d, r: d.bind(core(r.binding, BindingSpec))),
    m.Unbind: _describe(lambda d, r: d.unbind(core(r.binding, BindingSpec))),
    m.ListBindings: _describe(lambda d, r: d.list_bindings(r.exchange)),
    m.Publish: publish,
    m.PublishToExchange: publish_to_exchange,
    m.Receive: receive,
    m.Ack: ack,
    m.Nack: nack,
    m.Extend: extend,
    m.Join: join,
    m.Heartbeat: heartbeat,
    m.Leave: _done(lambda d, r: d.leave(r.topic, r.group, r.member_id)),
    m.Fetch: fetch,
    m.FetchBatches: fetch_batches,
    m.Commit: commit,
    m.Seek: seek,
    m.SeekToTime: seek_to_time,
    m.Stats: _describe(lambda d, r: d.stats(r.topic, r.subscription)),
    m.Redrive: redrive,
    m.StartRedrive: start_redrive,
    m.ListRedrives: list_redrives,
    m.CancelRedrive: cancel_redrive,
    m.Peek: peek,
    m.Purge: purge,
    Unreadable: refuse_unreadable,
}
