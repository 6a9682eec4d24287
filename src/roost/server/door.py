"""The door: the one command surface every session calls, and where authorisation happens.

    door = host.door(principal)            # one per connection, request or embedded client
    await door.publish("emails", [Outgoing(b"hi")])
    messages = await door.receive("emails", "emails", max_messages=10, wait_s=20)

Every operation on the broker is one method here, whatever protocol asked for it: the native
session, the admin API, embedded mode and the push path call nothing else, and the wire
protocols to come (SQS, AMQP 0-9-1, Kafka) are a codec and a session over it. So each rule is
written once:

- **Authorisation.** Each command is declared with ``@command(operation, kind=parameter)``:
  before it runs, the principal must hold ``operation`` on every resource named (``consume``
  on ``topic=...`` and ``group=...``, say), else ``NotAuthorised`` names what is missing.
  ``describe`` commands need any grant on the resource (or ``monitor``); ``list`` commands
  filter what they return to what the principal may see; ``open`` commands (health) need
  nothing. ``COMMANDS`` is the table of them all: the test suite walks it, so an operation
  added without a check fails there.
- **Effects.** What a change implies happens here, not in the session that asked: a delete
  wakes the long polls and pushes on its topic (they fail with the error naming what is gone),
  an ack or commit or purge gives blocked publishers another look at the backlog, a nack with
  a delay pokes the timer.

A principal holding ``admin`` (the embedded caller, the anonymous user of a broker without
users) passes every check at the cost of one attribute read: the hot paths stay as fast as
they were. Otherwise the door remembers each (command, names) it allowed: a set lookup after
the first time, forgotten when the principal's identity changes (``Door.current``).

Methods that are plumbing rather than commands (``watch``, ``confirm``, ``holding_wakes``...)
carry no data of their own and take only what a checked command returned.
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from roost.core.groups import Membership
from roost.core.inspection import Peeked
from roost.core.model import Message, SubscriptionSpec
from roost.core.policies import TopicPolicy
from roost.core.publishing import Outgoing, Published, PublishOutcome
from roost.core.readings import Reading, read_broker
from roost.core.recovery_status import RecoveryStatus, recovery_status
from roost.core.redrive import RedriveFilter, RedriveTask
from roost.core.routing import BindingSpec, ExchangeSpec
from roost.core.stats import GroupDescription, StreamStats, SubscriptionStats
from roost.core.streams import FetchedBatches, ResetTarget, SeekTarget
from roost.errors import (
    NotAuthenticated,
    NotAuthorised,
    UnknownExchange,
    UnknownRedriveTask,
    UnknownTopic,
)
from roost.receipt import Receipt
from roost.server.access import ANONYMOUS, Grant, Principal
from roost.server.identities import Identities, NewToken, TokenInfo, UserInfo
from roost.server.redrive_tasks import check_rate
from roost.storage import TopicConfig, TopicInfo
from roost.storage.repair import RepairResult

if TYPE_CHECKING:
    from roost.core.broker import Broker
    from roost.server.host import Host

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


#: What a command asks of a principal: (operation, resource kind, name); kind ``"broker"``
#: (name empty) for ``admin`` and ``monitor``; operation ``describe`` for "any grant on it".
Need = tuple[str, str, str]
Getter = Callable[[tuple[Any, ...], dict[str, Any]], str]


class Command(NamedTuple):
    """One operation of the surface: what it needs, on which of its arguments."""

    name: str
    #: ``publish``, ``consume``, ``manage``, ``monitor``, ``admin``; ``describe`` (any grant
    #: on the resource), ``list`` (filters its answer), ``open`` (no check).
    operation: str
    #: (resource kind, argument path): ``("topic", "spec.topic")`` reads ``spec.topic``.
    resources: tuple[tuple[str, str], ...]
    #: ``resources`` as functions of a call's arguments (made once: they run per call).
    getters: tuple[tuple[str, Getter], ...]
    #: More it needs, depending on its arguments (a dead-letter topic it will write to):
    #: called as ``also(door, **arguments)`` with the method's arguments by name.
    #: The method's, to name a call's arguments for ``also``.
    signature: inspect.Signature
    also: Callable[..., list[Need]] | None = None

    def needs(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], door: Door | None = None
    ) -> list[Need]:
        """Every grant this command asks for when called with ``args`` and ``kwargs`` through
        ``door`` (None: as if nothing it might create existed yet)."""
        if self.operation in ("list", "open"):
            return []
        found: list[Need] = (
            [(self.operation, kind, get(args, kwargs)) for kind, get in self.getters]
            if self.getters
            else [(self.operation, "broker", "")]  # admin, monitor: broker-wide
        )
        if self.also is not None:
            bound = self.signature.bind(None, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments["self"]
            found += self.also(door, **arguments)
        return found


#: Every command of the door by method name; the authorisation matrix test walks it.
COMMANDS: dict[str, Command] = {}
#: Decisions a door remembers at most: a client cycling through names cannot grow it.
MAX_REMEMBERED = 4096


def command(
    operation: str, also: Callable[..., list[Need]] | None = None, **resources: str
) -> Callable[[F], F]:
    """Declare a door method a command needing ``operation`` on each ``kind=argument``, and
    what ``also(*args, **kwargs)`` adds for a call's arguments."""

    def declare(method: F) -> F:
        name = method.__name__
        parameters = list(inspect.signature(method).parameters)[1:]
        getters = tuple((kind, _getter(parameters, path)) for kind, path in resources.items())
        signature = inspect.signature(method)
        declared = Command(name, operation, tuple(resources.items()), getters, signature, also)
        COMMANDS[name] = declared
        # The resources' positions, when each is a whole argument and nothing else counts: a
        # decision is then remembered by the door under (command, those arguments).
        plain = [parameters.index(path) for path in resources.values() if "." not in path]
        whole = plain and len(plain) == len(resources) and also is None
        pick = operator.itemgetter(*plain) if whole else None
        last = max(plain, default=-1)

        def authorise(door: Door, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if operation == "open":  # health: answered to anyone the listener lets in
                return
            principal = door.current()
            if principal.admin or operation == "list":
                return
            key = (name, pick(args)) if pick is not None and len(args) > last else None
            if key is not None and key in door._allowed:
                return
            for needed, kind, value in declared.needs(args, kwargs, door):
                if needed != "describe":
                    principal.check(needed, kind, value)
                elif not principal.sees(kind, value):
                    raise NotAuthorised(principal.name, "describe", f"{kind} {value!r}")
            if key is not None and len(door._allowed) < MAX_REMEMBERED:
                door._allowed.add(key)

        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def checked_async(door: Door, *args: Any, **kwargs: Any) -> Any:
                authorise(door, args, kwargs)
                return await method(door, *args, **kwargs)

            return checked_async  # type: ignore[return-value]

        @functools.wraps(method)
        def checked(door: Door, *args: Any, **kwargs: Any) -> Any:
            authorise(door, args, kwargs)
            return method(door, *args, **kwargs)

        return checked  # type: ignore[return-value]

    return declare


def _getter(parameters: list[str], path: str) -> Getter:
    name, _, attribute = path.partition(".")
    index = parameters.index(name)  # a typo in a declaration fails at import

    def get(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        value = args[index] if index < len(args) else kwargs[name]
        return str(getattr(value, attribute) if attribute else value)

    return get


# -- what some commands also need, from their arguments -------------------------------


def _writes_to(door: Door | None, topic: str | None) -> list[Need]:
    """The broker will write to ``topic``: ``publish`` on it, and ``manage`` when it does
    not exist yet (it will be made)."""
    if topic is None:
        return []
    if door is not None and door.exists(topic):
        return [("publish", "topic", topic)]
    return [("publish", "topic", topic), ("manage", "topic", topic)]


def _queue_dead_letter(door: Door | None, name: str, options: dict[str, Any]) -> list[Need]:
    dead_letter = options.get("dead_letter", "")
    return _writes_to(door, f"{name}.dlq" if dead_letter == "" else dead_letter)


def _redrives_to(
    door: Door | None,
    dead_letter_topic: str,
    where: RedriveFilter,
    rate_per_s: float,
    to: str | None,
) -> list[Need]:
    destination = to or where.source_topic
    if destination is None:  # back to whatever topic each letter's headers name
        return [("admin", "broker", "")]
    return [("publish", "topic", destination)]


def _routes_to(door: Door | None, spec: ExchangeSpec) -> list[Need]:
    return [] if spec.alternate is None else [("publish", "exchange", spec.alternate)]


def _dead_letter_of(door: Door | None, spec: SubscriptionSpec) -> list[Need]:
    return _writes_to(door, spec.dead_letter)


class Door:
    """The broker as one principal may use it. Cheap to make: one per session."""

    def __init__(
        self,
        host: Host,
        broker: Broker,
        principal: Principal,
        identities: Identities | None = None,
    ) -> None:
        self._host = host
        self._broker = broker
        self.principal = principal
        #: Where ``principal`` came from: a change there (a grant revoked, the user deleted,
        #: the first user added under an anonymous connection) applies from the next command.
        self._identities = identities
        self._version = identities.version if identities is not None else 0
        #: (command, its resource arguments) this principal was found to be allowed: the
        #: same command on the same names asks nothing more (forgotten on any change).
        self._allowed: set[tuple[str, Any]] = set()

    def exists(self, topic: str) -> bool:
        """Whether ``topic`` exists (what a command would make needs ``manage`` on it)."""
        try:
            self._broker.policy(topic)  # a lookup by name, not a scan of every topic
        except UnknownTopic:
            return False
        return True

    def current(self) -> Principal:
        """The principal as the identities say now; ``NotAuthenticated`` once it is gone."""
        identities = self._identities
        if identities is None or identities.version == self._version:
            return self.principal
        if self.principal is ANONYMOUS:
            if identities.any_users:
                raise NotAuthenticated("users have been defined since this connection began")
        else:
            now = identities.principal(self.principal.name)
            if now.generation != self.principal.generation:
                # Deleted and made again, or a new password: not who logged in here.
                raise NotAuthenticated("the user has changed since this connection logged in")
            self.principal = now
        self._allowed.clear()
        self._version = identities.version
        return self.principal

    # -- topics -----------------------------------------------------------------------------

    @command("manage", topic="name")
    def create_topic(
        self, name: str, config: TopicConfig | None = None, policy: TopicPolicy | None = None
    ) -> TopicInfo:
        return self._broker.create_topic(name, config, policy)

    @command("manage", topic="name")
    def delete_topic(self, name: str) -> None:
        self._broker.delete_topic(name)
        self._host.wake_readers(name)

    @command("list")
    def list_topics(self) -> list[str]:
        return [t for t in self._broker.list_topics() if self.principal.sees("topic", t)]

    @command("describe", topic="name")
    def describe_topic(self, name: str) -> TopicInfo:
        return self._broker.describe_topic(name)

    @command("describe", topic="topic")
    def policy(self, topic: str) -> TopicPolicy:
        return self._broker.policy(topic)

    @command("consume", topic="topic")
    def read(
        self, topic: str, partition: int, offset: int | None = None, max_messages: int = 10
    ) -> list[Message]:
        return self._broker.read(topic, partition, offset, max_messages)

    # -- subscriptions and queues -----------------------------------------------------------

    @command("manage", also=_dead_letter_of, topic="spec.topic")
    def create_subscription(self, spec: SubscriptionSpec) -> SubscriptionSpec:
        return self._broker.create_subscription(spec)

    @command("manage", also=_queue_dead_letter, queue="name")
    def create_queue(self, name: str, **options: Any) -> SubscriptionSpec:
        """A queue, and its dead-letter topic (``<name>.dlq`` unless ``dead_letter`` says):
        dead letters are written there, so that takes ``publish`` on it too."""
        return self._broker.create_queue(name, **options)

    async def durably(self, define: Callable[[], T]) -> T:
        """Run ``define`` (one of the create commands above) with its metadata record synced
        together with other creates' (group commit, server/definitions_sync.py); returns once
        it is durable. Plumbing: ``define`` is a checked command of this door."""
        return await self._host.definitions.durably(define)

    @command("manage", queue="name")
    def delete_queue(self, name: str) -> None:
        self._broker.delete_queue(name)
        self._host.wake_readers(name)

    @command("manage", topic="topic")
    def delete_subscription(self, topic: str, name: str) -> None:
        self._broker.delete_subscription(topic, name)
        self._host.wake_readers(topic)

    @command("list")
    def list_subscriptions(self, topic: str | None = None) -> list[SubscriptionSpec]:
        return [
            spec
            for spec in self._broker.list_subscriptions(topic)
            if self.principal.sees("topic", spec.topic)
        ]

    @command("describe", topic="topic")
    def stats(self, topic: str, subscription: str) -> SubscriptionStats | StreamStats:
        return self._broker.stats(topic, subscription)

    @command("consume", topic="topic", group="subscription")
    def peek(
        self, topic: str, subscription: str, max_messages: int = 10, partition: int | None = None
    ) -> list[Peeked]:
        return self._broker.peek(topic, subscription, max_messages, partition)

    @command("manage", topic="topic")
    def purge(self, topic: str, subscription: str) -> int:
        purged = self._broker.purge(topic, subscription)
        self._host.settled(topic)  # producers blocked on a full backlog may go on
        return purged

    # -- exchanges ----------------------------------------------------------------------------

    @command("manage", also=_routes_to, exchange="spec.name")
    def declare_exchange(self, spec: ExchangeSpec) -> ExchangeSpec:
        """An exchange; its alternate (where what it does not route goes) takes ``publish``
        on that exchange too, as RabbitMQ asks write on it: else whoever may publish here
        reaches the alternate's topics."""
        return self._broker.declare_exchange(spec)

    @command("manage", exchange="name")
    def delete_exchange(self, name: str) -> None:
        self._broker.delete_exchange(name)

    @command("list")
    def list_exchanges(self) -> list[ExchangeSpec]:
        exchanges = self._broker.list_exchanges()
        return [e for e in exchanges if self.principal.sees("exchange", e.name)]

    @command("describe", exchange="name")
    def describe_exchange(self, name: str) -> tuple[ExchangeSpec, list[BindingSpec]]:
        bindings = self._broker.list_bindings(name)  # UnknownExchange first
        for spec in self._broker.list_exchanges():
            if spec.name == name:
                return spec, bindings
        raise UnknownExchange(name)

    @command("manage", exchange="spec.exchange", topic="spec.topic")
    def bind(self, spec: BindingSpec) -> bool:
        return self._broker.bind(spec)

    @command("manage", exchange="spec.exchange", topic="spec.topic")
    def unbind(self, spec: BindingSpec) -> bool:
        return self._broker.unbind(spec)

    @command("list")
    def list_bindings(self, exchange: str | None = None) -> list[BindingSpec]:
        bindings = self._broker.list_bindings(exchange)
        return [b for b in bindings if self.principal.sees("exchange", b.exchange)]

    # -- publish ------------------------------------------------------------------------------

    @command("publish", topic="topic")
    async def publish(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> Sequence[Published]:
        """Publish and confirm; under overflow ``block``, first wait for room (bounded)."""
        return await self._host.publish(topic, messages, producer_id, sequence)

    @command("publish", topic="topic")
    def publish_now(
        self,
        topic: str,
        messages: Sequence[Outgoing],
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> PublishOutcome | None:
        """Append in this turn, or None with nothing done when the topic waits for room (see
        ``Host.publish_now``); confirm the outcome with ``confirmed_now`` or ``confirm``."""
        return self._host.publish_now(topic, messages, producer_id, sequence)

    @command("publish", exchange="exchange")
    async def publish_to_exchange(
        self, exchange: str, routing_key: str, messages: Sequence[Outgoing]
    ) -> Sequence[Published]:
        """Route and publish. The grant asked is ``publish`` on the exchange, as RabbitMQ asks
        write on the exchange only: whoever binds a topic to it lets its publishers in."""
        return await self._host.publish_to_exchange(exchange, routing_key, messages)

    def confirmed_now(
        self, outcome: PublishOutcome, topics: set[str]
    ) -> Sequence[Published] | None:
        return self._host.confirmed_now(outcome, topics)

    async def confirm(self, outcome: PublishOutcome, topics: set[str]) -> Sequence[Published]:
        return await self._host.confirm(outcome, topics)

    def blocked(self, topic: str) -> bool:
        return self._host.blocked(topic)

    # -- consume: queue and keyed subscriptions -----------------------------------------------

    @command("consume", topic="topic", group="subscription")
    async def receive(
        self,
        topic: str,
        subscription: str,
        max_messages: int = 1,
        wait_s: float = 0.0,
        visibility_ms: int | None = None,
    ) -> list[Message]:
        return await self._host.receive(topic, subscription, max_messages, wait_s, visibility_ms)

    @command("consume", topic="topic", group="subscription")
    def lease(self, topic: str, subscription: str, max_messages: int) -> list[Message]:
        """Lease what is ready now, waiting for nothing: the push path's receive."""
        return self._broker.receive(topic, subscription, max_messages)

    @command("consume", topic="topic", group="subscription")
    def check_subscription(self, topic: str, subscription: str) -> None:
        """Raise now what a consumer of ``topic``/``subscription`` would meet: an unknown name,
        a missing grant (a subscribe checks before its first push)."""
        self._broker.stats(topic, subscription)

    @command("consume", topic="topic", group="subscription")
    def ack(self, topic: str, subscription: str, receipts: Sequence[Receipt]) -> list[Receipt]:
        """Settle; returns the receipts refused (their lease had run out)."""
        refused = self._broker.ack(topic, subscription, receipts)
        self._host.settled(topic)
        return refused

    @command("consume", topic="topic", group="subscription")
    def nack(
        self,
        topic: str,
        subscription: str,
        receipts: Sequence[Receipt],
        delay_ms: int | None = None,
        error: str | None = None,
        undelivered: bool = False,
        reject: bool = False,
    ) -> list[Receipt]:
        refused = self._broker.nack(
            topic, subscription, receipts, delay_ms, error, undelivered, reject
        )
        self._host.wake_timer()
        return refused

    @command("consume", topic="topic", group="subscription")
    def extend(
        self, topic: str, subscription: str, receipts: Sequence[Receipt], visibility_ms: int
    ) -> list[Receipt]:
        refused = self._broker.extend(topic, subscription, receipts, visibility_ms)
        self._host.wake_timer()  # a lease made shorter may now end before the timer looks
        return refused

    # -- consume: stream groups ---------------------------------------------------------------

    @command("consume", topic="topic", group="group")
    def join(
        self, topic: str, group: str, member_id: str | None = None, client: str = ""
    ) -> Membership:
        return self._broker.stream(topic, group).join(member_id, client)

    @command("consume", topic="topic", group="group")
    def heartbeat(self, topic: str, group: str, member_id: str, generation: int) -> Membership:
        return self._broker.stream(topic, group).heartbeat(member_id, generation)

    @command("consume", topic="topic", group="group")
    def leave(self, topic: str, group: str, member_id: str) -> None:
        self._broker.stream(topic, group).leave(member_id)

    @command("consume", topic="topic", group="group")
    async def fetch(
        self,
        topic: str,
        group: str,
        member_id: str,
        generation: int,
        max_records: int = 500,
        wait_s: float = 0.0,
    ) -> tuple[list[Message], Membership]:
        """The member's next records, and its assignment as of them (a fetch is a heartbeat)."""
        host = self._host
        records = await host.fetch(topic, group, member_id, generation, max_records, wait_s)
        return records, self._broker.stream(topic, group).heartbeat(member_id, generation)

    @command("consume", topic="topic", group="group")
    async def fetch_batches(
        self,
        topic: str,
        group: str,
        member_id: str,
        generation: int,
        max_records: int = 500,
        wait_s: float = 0.0,
    ) -> tuple[list[FetchedBatches], Membership]:
        """``fetch`` as stored batches, undecoded."""
        host = self._host
        fetched = await host.fetch_batches(topic, group, member_id, generation, max_records, wait_s)
        return fetched, self._broker.stream(topic, group).heartbeat(member_id, generation)

    @command("consume", topic="topic", group="group")
    def commit(
        self, topic: str, group: str, member_id: str, generation: int, offsets: dict[int, int]
    ) -> None:
        self._broker.stream(topic, group).commit(member_id, generation, offsets)
        self._host.settled(topic)

    @command("consume", topic="topic", group="group")
    def seek(
        self, topic: str, group: str, member_id: str, generation: int, partition: int,
        to: SeekTarget,
    ) -> int:  # fmt: skip
        return self._broker.stream(topic, group).seek(member_id, generation, partition, to)

    @command("consume", topic="topic", group="group")
    def seek_to_time(
        self, topic: str, group: str, member_id: str, generation: int, partition: int,
        timestamp_ms: int,
    ) -> int:  # fmt: skip
        stream = self._broker.stream(topic, group)
        return stream.seek_to_timestamp(member_id, generation, partition, timestamp_ms)

    @command("describe", topic="topic")
    def describe_group(self, topic: str, group: str) -> GroupDescription:
        return self._broker.describe_group(topic, group)

    @command("manage", topic="topic", group="group")
    def reset_group(
        self, topic: str, group: str, to: ResetTarget, partitions: Sequence[int] | None = None
    ) -> dict[int, int]:
        reset = self._broker.reset_group(topic, group, to, partitions)
        self._host.settled(topic)
        return reset

    # -- dead letters -------------------------------------------------------------------------

    @command("consume", topic="dead_letter_topic")
    def peek_dead_letters(
        self,
        dead_letter_topic: str,
        max_messages: int = 10,
        partition: int | None = None,
        after: tuple[int, int] | None = None,
    ) -> list[Peeked]:
        return self._broker.peek_dead_letters(dead_letter_topic, max_messages, partition, after)

    @command("manage", also=_redrives_to, topic="dead_letter_topic")
    async def redrive(
        self,
        dead_letter_topic: str,
        where: RedriveFilter,
        rate_per_s: float = 100.0,
        to: str | None = None,
    ) -> int:
        """Move dead letters back to their sources (or ``to``), rate-limited; how many moved.
        Besides ``manage`` on the dead-letter topic it takes ``publish`` where they go: on
        ``to``, or on ``where.source_topic``; letters going back to sources of their own (any
        topic a letter names) take ``admin``."""
        self._broker.describe_topic(dead_letter_topic)  # unknown: fail before anything is made
        return await self._host.redrive(dead_letter_topic, where, rate_per_s, to)

    @command("manage", also=_redrives_to, topic="dead_letter_topic")
    def start_redrive(
        self,
        dead_letter_topic: str,
        where: RedriveFilter,
        rate_per_s: float = 100.0,
        to: str | None = None,
    ) -> RedriveTask:
        """``redrive`` in the background, as a task kept across restarts (SQS's
        StartMessageMoveTask); the same grants as ``redrive``."""
        self._broker.describe_topic(dead_letter_topic)  # unknown: fail before anything is made
        check_rate(rate_per_s)
        return self._host.redrive_tasks.start(dead_letter_topic, where, rate_per_s, to)

    @command("list")
    def list_redrives(self, dead_letter_topic: str | None = None) -> list[RedriveTask]:
        """Redrive tasks, newest first (of the dead-letter topics this principal sees)."""
        tasks = self._host.redrive_tasks.list(dead_letter_topic)
        return [t for t in tasks if self.principal.sees("topic", t.dead_letter_topic)]

    @command("manage", topic="dead_letter_topic")
    async def cancel_redrive(self, dead_letter_topic: str, task_id: str) -> RedriveTask:
        """Stop a running redrive task of ``dead_letter_topic``; what it moved stays moved."""
        task = self._host.redrive_tasks.get(task_id)
        if task.dead_letter_topic != dead_letter_topic:
            raise UnknownRedriveTask(task_id)  # named through a topic it does not belong to
        return await self._host.redrive_tasks.cancel(task_id)

    # -- users, tokens and grants (administrators) --------------------------------------------

    @command("admin")
    def list_users(self) -> list[UserInfo]:
        return self._host.identities.list_users()

    @command("admin")
    def describe_user(self, name: str) -> UserInfo:
        return self._host.identities.describe_user(name)

    @command("admin")
    def add_user(self, name: str, password: str, admin: bool = False) -> UserInfo:
        return self._host.identities.add_user(name, password, admin)

    @command("admin")
    def delete_user(self, name: str) -> None:
        self._host.identities.delete_user(name)

    @command("admin")
    def set_password(self, name: str, password: str) -> None:
        self._host.identities.set_password(name, password)

    @command("admin")
    def list_grants(self, name: str) -> list[Grant]:
        return self._host.identities.list_grants(name)

    @command("admin")
    def grant(self, name: str, grant: Grant) -> UserInfo:
        return self._host.identities.grant(name, grant)

    @command("admin")
    def revoke(self, name: str, grant: Grant) -> UserInfo:
        return self._host.identities.revoke(name, grant)

    @command("admin")
    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        identities = self._host.identities
        if user is not None:
            identities.describe_user(user)  # an unknown user is an error, not an empty list
        return identities.list_tokens(user)

    @command("admin")
    def create_token(
        self, user: str, expires_in_ms: int | None = None, description: str = ""
    ) -> NewToken:
        """A token for ``user``; ``expires_in_ms`` from now, on the broker's clock."""
        expires_ms = None if expires_in_ms is None else self._host.clock.now_ms() + expires_in_ms
        return self._host.identities.create_token(user, expires_ms, description)

    @command("admin")
    def revoke_token(self, token_id: str) -> None:
        self._host.identities.revoke_token(token_id)

    # -- watching -----------------------------------------------------------------------------

    @command("monitor")
    def readings(self) -> Reading:
        """Every topic and subscription as they are now: the metrics' and dashboard's source."""
        return read_broker(self._broker)

    @command("monitor")
    def recovery(self) -> RecoveryStatus:
        """What recovery found and did, and what is quarantined now (server/recovery_status)."""
        return recovery_status(self._broker)

    @command("admin")
    async def repair(self) -> RepairResult:
        """Reopen every failed log in place, verified from disk (``StorageWatch.repair_now``)."""
        return await self._host.storage.repair_now()

    @command("open")
    async def check_ready(self) -> None:
        """Raise unless the broker can take writes (``Host.check_ready``)."""
        await self._host.check_ready()

    def watch(self, topic: str, watcher: Callable[[], None]) -> None:
        self._host.watch(topic, watcher)

    def unwatch(self, topic: str, watcher: Callable[[], None]) -> None:
        self._host.unwatch(topic, watcher)

    def holding_wakes(self) -> AbstractContextManager[None]:
        return self._host.holding_wakes()

    @property
    def stopping(self) -> bool:
        return self._host.stopping


#: Public methods of ``Door`` that are not commands: they take only what a command returned
#: or carry no data (the boundary test checks every other public method is in ``COMMANDS``).
PLUMBING = frozenset({
    "confirmed_now", "confirm", "blocked", "watch", "unwatch", "holding_wakes", "stopping",
    "principal", "current", "exists", "durably",
})  # fmt: skip
