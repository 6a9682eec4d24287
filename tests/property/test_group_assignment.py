"""Consumer groups against a model (roost.core.groups), driven by hypothesis.

The machine joins (new ids, known ids, ids that left), leaves, heartbeats (with current and stale
generations), moves a ManualClock, expires and grows the topic. The model is the set of members
with their session deadlines. After every step:

- membership and expiry match the model; ``next_deadline_ms`` is the earliest model deadline;
- balanced: every partition has exactly one owner, a member, when there are members (none when
  there are not), and partition counts differ by at most one;
- ``assignment`` and ``owner`` agree; ``check_owner`` accepts exactly the owners;
- the generation grows by one on a change of membership or partition count, else stays;
- sticky: the partitions that changed owner are exactly ``minimum_moves``, a bound derived here
  from balance alone, not from the algorithm in the module.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from roost.clock import ManualClock
from roost.core.groups import ConsumerGroup
from roost.errors import NotOwner, StaleGeneration, UnknownMember

MAX_MEMBERS = 12


def minimum_moves(before: list[str | None], members: list[str], partitions: int) -> int:
    """The fewest previously owned partitions that must change owner to reach any balanced result.

    Balanced with N members means ``extra = partitions % N`` members own ``base + 1`` and the
    others ``base``. A member holding ``h`` partitions keeps at most ``min(h, its count)``, so
    at most ``min(h, base)`` each, plus one more for at most ``extra`` members with ``h > base``.
    """
    owned = sum(owner is not None for owner in before)
    if not members:
        return owned
    held = Counter(owner for owner in before if owner in members)
    base, extra = divmod(partitions, len(members))
    more = sum(held[m] > base for m in members)
    return owned - sum(min(held[m], base) for m in members) - min(extra, more)


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.group = ConsumerGroup("g", 1, self.clock)
        #: The model: member id -> session deadline (monotonic ms).
        self.deadlines: dict[str, int] = {}
        #: Ids that left or expired, to rejoin with.
        self.gone: list[str] = []
        self.generation = 0
        self.before: list[str | None] = []

    @initialize(
        partitions=st.integers(1, 24),
        timeout_ms=st.sampled_from([1_000, 5_000, 10_000]),
    )
    def create(self, partitions: int, timeout_ms: int) -> None:
        self.group = ConsumerGroup("g", partitions, self.clock, session_timeout_ms=timeout_ms)

    # -- steps --------------------------------------------------------------------------------

    @precondition(lambda self: len(self.deadlines) < MAX_MEMBERS)
    @rule(client=st.sampled_from(["", "w", "worker"]))
    def join_new(self, client: str) -> None:
        self.start()
        membership = self.group.join(client=client)
        assert membership.member_id not in self.deadlines
        assert membership.member_id not in self.gone
        self.deadlines[membership.member_id] = self.deadline_ms()
        self.finish(changed=True)

    @precondition(lambda self: self.deadlines)
    @rule(data=st.data())
    def rejoin_known(self, data: st.DataObject) -> None:
        member_id = data.draw(st.sampled_from(sorted(self.deadlines)))
        self.start()
        membership = self.group.join(member_id=member_id)
        assert membership.member_id == member_id
        self.deadlines[member_id] = self.deadline_ms()
        self.finish(changed=False)

    @precondition(lambda self: self.gone and len(self.deadlines) < MAX_MEMBERS)
    @rule(data=st.data())
    def rejoin_gone(self, data: st.DataObject) -> None:
        member_id = data.draw(st.sampled_from(self.gone))
        self.start()
        assert self.group.join(member_id=member_id).member_id == member_id
        self.gone.remove(member_id)
        self.deadlines[member_id] = self.deadline_ms()
        self.finish(changed=True)

    @precondition(lambda self: self.deadlines)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        member_id = data.draw(st.sampled_from(sorted(self.deadlines)))
        self.start()
        self.group.leave(member_id)
        del self.deadlines[member_id]
        self.gone.append(member_id)
        self.finish(changed=True)

    @precondition(lambda self: self.deadlines)
    @rule(data=st.data(), lag=st.integers(0, 3))
    def heartbeat(self, data: st.DataObject, lag: int) -> None:
        member_id = data.draw(st.sampled_from(sorted(self.deadlines)))
        self.start()
        membership = self.group.heartbeat(member_id, max(0, self.generation - lag))
        assert membership.generation == self.generation
        assert membership.partitions == self.group.assignment(member_id)
        self.deadlines[member_id] = self.deadline_ms()
        self.finish(changed=False)

    @rule()
    def heartbeat_unknown(self) -> None:
        member_id = self.gone[0] if self.gone else "never-joined"
        try:
            self.group.heartbeat(member_id, self.generation)
        except UnknownMember:
            return
        raise AssertionError("an unknown member's heartbeat was accepted")

    @rule(ms=st.sampled_from([0, 1, 500, 999, 1_000, 1_001, 4_000, 10_000, 10_001]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule()
    def expire(self) -> None:
        now_ms = self.clock.monotonic_ms()
        due = sorted(m for m, deadline in self.deadlines.items() if now_ms > deadline)
        self.start()
        assert self.group.expire() == due
        for member_id in due:
            del self.deadlines[member_id]
        self.gone += due
        self.finish(changed=bool(due))

    @rule(more=st.integers(0, 6))
    def set_partitions(self, more: int) -> None:
        self.start()
        self.group.set_partitions(self.group.partitions + more)
        self.finish(changed=more > 0)

    @precondition(lambda self: self.deadlines)
    @rule(data=st.data())
    def check_owner(self, data: st.DataObject) -> None:
        member_id = data.draw(st.sampled_from(sorted(self.deadlines)))
        partition = data.draw(st.integers(0, self.group.partitions - 1))
        try:
            self.group.check_owner(member_id, self.generation, partition)
        except NotOwner:
            assert self.group.owner(partition) != member_id
        else:
            assert self.group.owner(partition) == member_id
        if self.generation > 0:
            try:
                self.group.check_owner(member_id, self.generation - 1, partition)
            except StaleGeneration:
                pass
            else:
                raise AssertionError("a stale generation passed check_owner")

    # -- checking a step ----------------------------------------------------------------------

    def deadline_ms(self) -> int:
        return self.clock.monotonic_ms() + self.group.session_timeout_ms

    def owners(self) -> list[str | None]:
        return [self.group.owner(p) for p in range(self.group.partitions)]

    def start(self) -> None:
        self.before = self.owners()

    def finish(self, *, changed: bool) -> None:
        self.generation += changed
        assert self.group.generation == self.generation
        after = self.owners()
        moves = sum(old is not None and old != after[p] for p, old in enumerate(self.before))
        assert moves == minimum_moves(self.before, sorted(self.deadlines), len(after))

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def members_match_the_model(self) -> None:
        assert self.group.members() == sorted(self.deadlines)
        assert self.group.next_deadline_ms() == min(self.deadlines.values(), default=None)

    @invariant()
    def balanced_and_owned_exactly_once(self) -> None:
        owners = self.owners()
        if not self.deadlines:
            assert owners == [None] * self.group.partitions
            return
        assert all(owner in self.deadlines for owner in owners)
        per_member = {m: self.group.assignment(m) for m in self.deadlines}
        assert sorted(p for parts in per_member.values() for p in parts) == list(range(len(owners)))
        assert all(owners[p] == m for m, parts in per_member.items() for p in parts)
        assert all(list(parts) == sorted(parts) for parts in per_member.values())
        sizes = [len(parts) for parts in per_member.values()]
        assert max(sizes) - min(sizes) <= 1


GroupMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, print_blob=True
)
test_group_assignment = GroupMachine.TestCase
