"""Consumer groups: who is in a group reading a topic in ``stream`` mode, and who owns what.

    group = ConsumerGroup("billing", partitions=12, clock=clock)
    me = group.join(client="worker")                 # Membership(member_id, generation, partitions)
    me = group.heartbeat(me.member_id, me.generation)  # every session_timeout_ms / 3 or so
    group.check_owner(me.member_id, me.generation, 3)  # the broker, before accepting a commit
    group.expire()                                   # the host, at group.next_deadline_ms()

The broker assigns partitions (in Kafka a client leader does). This module owns membership,
sessions and the assignment; the broker owns committed offsets and everything persisted.

Rules:

- Sessions run on the monotonic clock: join and heartbeat set a member's deadline to
  ``now + session_timeout_ms``. A member stays in the group until ``leave`` or ``expire``
  removes it; ``expire`` removes those with ``now > deadline``. A heartbeat that arrives after
  the deadline but before ``expire`` runs still saves the member.
- A rebalance happens on every change of membership (a new member joins, one leaves or expires)
  and on ``set_partitions``; each increments ``generation`` by exactly one, and nothing else
  changes it. A rejoin under an id the group knows refreshes the session and moves nothing.
- A heartbeat never fails because of the generation: it refreshes the session and answers with
  the current ``Membership``. A member that sees a new generation stops working on partitions
  in its old list but not in the new one, before it does anything else, and starts new ones from
  their committed offsets. It learns every revoke at its next heartbeat, in the same round trip,
  and never falls out of the group while it learns (a ``StaleGeneration`` answer would cost a
  rejoin and risk the session). Until it learns, it may still read a revoked partition, but its
  commits are refused: ``check_owner`` wants the current generation (even for a partition it
  still owns: it must first learn what happened). A record may be processed twice; a stale
  commit never lands.
- Generated member ids are ``f"{client or 'member'}-{incarnation}-{n}"``: a counter, plus the
  wall-clock time the group was created in base 36, so that an id handed out after a broker
  restart does not equal one a member from before it rejoins with (unless the clock went back).

Assignment is balanced, then sticky. With P partitions and N members, ``base, extra =
divmod(P, N)``; members are taken in id order, partitions in ascending order:

1. Quotas: ``extra`` members get ``base + 1``, the rest ``base``. The +1s go first to members
   that hold more than ``base`` partitions now, so that each of them can keep one more.
2. Keep: each member keeps its lowest-numbered partitions up to its quota and releases the rest.
3. Fill: released partitions, orphans (owner gone) and new partitions go to members below quota.

It is the least movement possible: any balanced result gives ``extra`` members ``base + 1`` and
the rest ``base``, so a member keeps at most ``min(held, quota)``; step 1 puts the +1s where
they raise that bound and step 2 reaches it for every member at once. With more members than
partitions, P members own one partition each and the others idle as standbys.

Nothing here is persisted, on purpose: membership is soft state. After a restart a group starts
empty at generation 0 and rebuilds as members rejoin with their ids (a member from before the
restart gets ``UnknownMember`` on its first heartbeat and rejoins); committed offsets live in the
broker's journal and are not affected. Pure and synchronous: no I/O, time only from the Clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from roost.clock import Clock
from roost.errors import (
    InvalidConfig,
    InvalidName,
    InvalidRequest,
    NotOwner,
    StaleGeneration,
    UnknownMember,
)
from roost.storage.config import MAX_PARTITIONS, check_name

DEFAULT_SESSION_TIMEOUT_MS = 10_000
MIN_SESSION_TIMEOUT_MS = 1_000
MAX_SESSION_TIMEOUT_MS = 3_600_000
MAX_MEMBER_ID_CHARS = 255
MAX_CLIENT_CHARS = 100


class Membership(msgspec.Struct, frozen=True):
    """What a member is told by join and heartbeat: its partitions as of ``generation``."""

    member_id: str
    generation: int
    #: Ascending; empty when the group has more members than partitions.
    partitions: tuple[int, ...]
    session_timeout_ms: int


class MemberState(msgspec.Struct, frozen=True):
    """One member as an operator sees it: its partitions and how long its session has left."""

    member_id: str
    partitions: tuple[int, ...]
    #: Until ``expire`` may remove it, unless it heartbeats; 0 once overdue.
    session_expires_in_ms: int


class ConsumerGroup:
    """The members of one group and the partitions each owns. See the module docstring."""

    def __init__(
        self,
        name: str,
        partitions: int,
        clock: Clock,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
    ) -> None:
        check_name("group", name)
        _check_partitions(partitions)
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            rule = f"{MIN_SESSION_TIMEOUT_MS}..{MAX_SESSION_TIMEOUT_MS} ms"
            raise InvalidConfig("session_timeout_ms", session_timeout_ms, rule)
        self.name = name
        self.session_timeout_ms = session_timeout_ms
        self._clock = clock
        #: Owner of each partition, by number. All None exactly when there are no members.
        self._owners: list[str | None] = [None] * partitions
        #: Per partition, how many times it changed owner: a reader's position is only good
        #: while this has not moved (A -> B -> A is two handovers, not none).
        self._handovers: list[int] = [0] * partitions
        #: Member id -> session deadline (monotonic ms). The keys are the members.
        self._deadlines_ms: dict[str, int] = {}
        #: Member id -> its partitions, ascending; rebuilt from ``_owners`` by every rebalance.
        self._assignments: dict[str, tuple[int, ...]] = {}
        self._generation = 0
        self._member_counter = 0
        self._incarnation = _base36(clock.now_ms())

    @property
    def generation(self) -> int:
        """0 for a new group; +1 on every rebalance."""
        return self._generation

    @property
    def partitions(self) -> int:
        return len(self._owners)

    def join(self, member_id: str | None = None, client: str = "") -> Membership:
        """Add a member, or refresh one already in, and return its membership.

        Without ``member_id`` the member gets a new id (built from ``client``). With an id the
        group knows, the session is refreshed and nothing moves. With one it does not know (a
        member back after a broker restart or after it expired) the member joins under that id.
        A new member is a rebalance.
        """
        if member_id is None:
            member_id = self._new_member_id(client)
        else:
            _check_member_id(member_id)
        is_new = member_id not in self._deadlines_ms
        self._deadlines_ms[member_id] = self._deadline_ms()
        if is_new:
            self._rebalance()
        return self._membership(member_id)

    def heartbeat(self, member_id: str, generation: int) -> Membership:
        """Refresh the member's session; answer with its current membership.

        ``generation`` is the one the member last saw. The answer is the same whatever it is:
        when it differs from the answer's, the member must apply the new assignment (see the
        module docstring). Raises ``UnknownMember`` if the member left or expired: rejoin.
        """
        self._require_member(member_id)
        self._deadlines_ms[member_id] = self._deadline_ms()
        return self._membership(member_id)

    def leave(self, member_id: str) -> None:
        """Remove the member and rebalance. ``UnknownMember`` if it is not in the group."""
        self._require_member(member_id)
        del self._deadlines_ms[member_id]
        self._rebalance()

    def expire(self) -> list[str]:
        """Remove every member whose deadline has passed (one rebalance); return their ids."""
        now_ms = self._clock.monotonic_ms()
        expired = sorted(m for m, deadline in self._deadlines_ms.items() if now_ms > deadline)
        for member_id in expired:
            del self._deadlines_ms[member_id]
        if expired:
            self._rebalance()
        return expired

    def next_deadline_ms(self) -> int | None:
        """The earliest session deadline (monotonic ms), None without members.

        ``expire`` removes a member once the monotonic clock is past this, i.e. at deadline + 1.
        """
        return min(self._deadlines_ms.values(), default=None)

    def set_partitions(self, partitions: int) -> None:
        """The topic grew: assign the new partitions, moving as few others as balance allows.

        Partitions only grow (records in a removed partition would be lost to the group):
        fewer raises ``InvalidConfig``; the same number changes nothing.
        """
        _check_partitions(partitions)
        if partitions < len(self._owners):
            rule = f"partitions only grow; the topic has {len(self._owners)}"
            raise InvalidConfig("partitions", partitions, rule)
        if partitions > len(self._owners):
            self._owners += [None] * (partitions - len(self._owners))
            self._rebalance()

    def assignment(self, member_id: str) -> tuple[int, ...]:
        """The member's partitions, ascending. ``UnknownMember`` if it is not in the group."""
        self._require_member(member_id)
        return self._assignments[member_id]

    def handovers(self, partition: int) -> int:
        """How many times ``partition`` has changed owner."""
        self._check_partition(partition)
        return self._handovers[partition]

    def owner(self, partition: int) -> str | None:
        """The member owning ``partition``; None only when the group has no members."""
        self._check_partition(partition)
        return self._owners[partition]

    def members(self) -> list[str]:
        """Member ids, sorted."""
        return sorted(self._deadlines_ms)

    def member_states(self) -> list[MemberState]:
        """Every member with its partitions and the time left on its session, by id."""
        now_ms = self._clock.monotonic_ms()
        return [
            MemberState(m, self._assignments[m], max(0, self._deadlines_ms[m] - now_ms))
            for m in sorted(self._deadlines_ms)
        ]

    def check_owner(self, member_id: str, generation: int, partition: int) -> None:
        """Raise unless the member owns ``partition`` in the current generation.

        The broker calls this before accepting an offset commit, so that a member fenced out by
        a rebalance cannot overwrite the new owner's commits. Raises, in this order:
        ``UnknownMember`` (it left or expired: rejoin), ``StaleGeneration`` (``generation`` is
        not the current one, even if the member still owns the partition: heartbeat, apply the
        new assignment, commit again), ``InvalidRequest`` (no such partition), ``NotOwner``.
        """
        self._require_member(member_id)
        if generation != self._generation:
            raise StaleGeneration(self.name, member_id, generation, self._generation)
        self._check_partition(partition)
        if self._owners[partition] != member_id:
            raise NotOwner(self.name, member_id, partition)

    def _rebalance(self) -> None:
        members = sorted(self._deadlines_ms)
        previous = self._owners
        self._owners = assign(self._owners, members)
        self._handovers += [0] * (len(self._owners) - len(self._handovers))
        for partition, (was, now) in enumerate(zip(previous, self._owners, strict=False)):
            if was != now:
                self._handovers[partition] += 1
        assigned: dict[str, list[int]] = {member_id: [] for member_id in members}
        for partition, owner in enumerate(self._owners):
            if owner is not None:
                assigned[owner].append(partition)
        self._assignments = {m: tuple(partitions) for m, partitions in assigned.items()}
        self._generation += 1

    def _membership(self, member_id: str) -> Membership:
        partitions = self._assignments[member_id]
        return Membership(member_id, self._generation, partitions, self.session_timeout_ms)

    def _deadline_ms(self) -> int:
        return self._clock.monotonic_ms() + self.session_timeout_ms

    def _new_member_id(self, client: str) -> str:
        if len(client) > MAX_CLIENT_CHARS or not client.isprintable():
            rule = f"at most {MAX_CLIENT_CHARS} printable characters"
            raise InvalidName("client", client, rule)
        while True:  # skips ids a member chose for itself
            self._member_counter += 1
            member_id = f"{client or 'member'}-{self._incarnation}-{self._member_counter}"
            if member_id not in self._deadlines_ms:
                return member_id

    def _require_member(self, member_id: str) -> None:
        if member_id not in self._deadlines_ms:
            raise UnknownMember(self.name, member_id)

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < len(self._owners):
            raise InvalidRequest(
                f"group {self.name!r} reads partitions 0..{len(self._owners) - 1}, not {partition}"
            )


def assign(owners: Sequence[str | None], members: Sequence[str]) -> list[str | None]:
    """The balanced assignment closest to ``owners`` (the owner of each partition, by number).

    ``members`` in the order that breaks ties (the group passes them sorted). Owners not in
    ``members`` are treated as gone. Returns the new owner of each partition.
    """
    if not members:
        return [None] * len(owners)
    held: dict[str, list[int]] = {member_id: [] for member_id in members}
    orphans = []
    for partition, owner in enumerate(owners):
        if owner in held:
            held[owner].append(partition)
        else:
            orphans.append(partition)
    quotas = _quotas({m: len(partitions) for m, partitions in held.items()}, len(owners))
    result: list[str | None] = [None] * len(owners)
    for member_id, partitions in held.items():
        for partition in partitions[: quotas[member_id]]:
            result[partition] = member_id
        orphans += partitions[quotas[member_id] :]
    free = iter(sorted(orphans))
    for member_id, partitions in held.items():
        for _ in range(quotas[member_id] - min(len(partitions), quotas[member_id])):
            result[next(free)] = member_id
    return result


def _quotas(held: dict[str, int], partitions: int) -> dict[str, int]:
    """How many partitions each member gets: ``base`` or ``base + 1``, summing to ``partitions``.

    The +1s go first to members holding more than ``base`` (in ``held``'s order within each
    kind): a +1 lets such a member keep one more; for any other member it changes nothing.
    """
    base, extra = divmod(partitions, len(held))
    order = sorted(held, key=lambda member_id: held[member_id] <= base)  # stable
    return {member_id: base + (rank < extra) for rank, member_id in enumerate(order)}


def _check_partitions(partitions: int) -> None:
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidConfig("partitions", partitions, f"1..{MAX_PARTITIONS}")


def _check_member_id(member_id: str) -> None:
    if not 0 < len(member_id) <= MAX_MEMBER_ID_CHARS or not member_id.isprintable():
        rule = f"1 to {MAX_MEMBER_ID_CHARS} printable characters"
        raise InvalidName("member", member_id, rule)


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if number == 0:
            return text
