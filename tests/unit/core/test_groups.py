"""Consumer groups (roost.core.groups): sessions, generations, fencing, sticky balance.

Time is a ManualClock; nothing sleeps. Stickiness is pinned by exact counts of partitions that
change owner in concrete scenarios; tests/property/test_group_assignment.py checks the minimum
in general.
"""

from __future__ import annotations

from collections import Counter

import pytest

from roost.clock import ManualClock
from roost.core.groups import (
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
    ConsumerGroup,
    Membership,
    assign,
)
from roost.errors import (
    InvalidConfig,
    InvalidName,
    InvalidRequest,
    NotOwner,
    StaleGeneration,
    UnknownMember,
)

TIMEOUT_MS = 10_000


def owners(group: ConsumerGroup) -> list[str | None]:
    return [group.owner(p) for p in range(group.partitions)]


def moved(before: list[str | None], after: list[str | None]) -> int:
    """Partitions that had an owner before and have another (or none) now."""
    return sum(old is not None and old != new for old, new in zip(before, after, strict=False))


def counts(group: ConsumerGroup) -> list[int]:
    return sorted(len(group.assignment(m)) for m in group.members())


def group_with(clock: ManualClock, partitions: int, members: int) -> ConsumerGroup:
    group = ConsumerGroup("billing", partitions, clock, session_timeout_ms=TIMEOUT_MS)
    for _ in range(members):
        group.join(client="w")
    return group


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("partitions", [0, -1, 4097])
def test_partitions_out_of_range_are_refused(clock: ManualClock, partitions: int) -> None:
    with pytest.raises(InvalidConfig) as caught:
        ConsumerGroup("g", partitions, clock)
    assert caught.value.field == "partitions"


@pytest.mark.parametrize("timeout_ms", [0, MIN_SESSION_TIMEOUT_MS - 1, MAX_SESSION_TIMEOUT_MS + 1])
def test_session_timeout_out_of_range_is_refused(clock: ManualClock, timeout_ms: int) -> None:
    with pytest.raises(InvalidConfig) as caught:
        ConsumerGroup("g", 1, clock, session_timeout_ms=timeout_ms)
    assert caught.value.field == "session_timeout_ms"


@pytest.mark.parametrize("timeout_ms", [MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS])
def test_session_timeout_bounds_are_accepted(clock: ManualClock, timeout_ms: int) -> None:
    assert ConsumerGroup("g", 1, clock, timeout_ms).session_timeout_ms == timeout_ms


def test_invalid_group_name_is_refused(clock: ManualClock) -> None:
    with pytest.raises(InvalidName):
        ConsumerGroup("", 1, clock)


def test_a_new_group_is_empty_at_generation_zero(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 3, clock)
    assert group.generation == 0
    assert group.members() == []
    assert owners(group) == [None, None, None]
    assert group.next_deadline_ms() is None


# -- join ---------------------------------------------------------------------------------------


def test_first_member_gets_every_partition(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 4, clock, session_timeout_ms=TIMEOUT_MS)
    me = group.join(client="worker")
    assert me == Membership(me.member_id, 1, (0, 1, 2, 3), TIMEOUT_MS)
    assert me.member_id.startswith("worker-")
    assert group.members() == [me.member_id]


def test_generated_ids_are_unique_and_deterministic(clock: ManualClock) -> None:
    ids = [ConsumerGroup("g", 2, clock).join().member_id for _ in range(2)]
    assert ids[0] == ids[1]  # same clock, same counter: same id
    group = ConsumerGroup("g", 2, clock)
    generated = {group.join().member_id for _ in range(5)} | {group.join(client="x").member_id}
    assert len(generated) == 6
    assert all(m.startswith(("member-", "x-")) for m in generated)


def test_ids_differ_between_incarnations(clock: ManualClock) -> None:
    before_restart = ConsumerGroup("g", 2, clock).join().member_id
    clock.advance(1)
    assert ConsumerGroup("g", 2, clock).join().member_id != before_restart


def test_generated_ids_skip_ids_members_chose(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 2, clock)
    probe = ConsumerGroup("g", 2, clock).join().member_id  # what the first generated id will be
    group.join(member_id=probe)
    assert group.join().member_id != probe
    assert len(group.members()) == 2


def test_rejoin_with_a_known_id_keeps_everything(clock: ManualClock) -> None:
    group = group_with(clock, 6, 2)
    first = group.members()[0]
    before, generation = owners(group), group.generation
    clock.advance(TIMEOUT_MS)
    again = group.join(member_id=first)
    assert (again.member_id, again.generation) == (first, generation)
    assert owners(group) == before
    assert group.next_deadline_ms() == TIMEOUT_MS  # the other's; first's is now 2 * TIMEOUT_MS
    (other,) = (m for m in group.members() if m != first)
    clock.advance(1)
    assert group.expire() == [other]


def test_join_with_an_unknown_id_adds_it(clock: ManualClock) -> None:
    """A member back after a broker restart (or after it expired) keeps its id."""
    group = ConsumerGroup("g", 4, clock)
    me = group.join(member_id="worker-from-before")
    assert me.member_id == "worker-from-before"
    assert me.partitions == (0, 1, 2, 3)
    assert group.generation == 1


@pytest.mark.parametrize("member_id", ["", "x" * 256, "tab\there"])
def test_invalid_member_ids_are_refused(clock: ManualClock, member_id: str) -> None:
    group = ConsumerGroup("g", 1, clock)
    with pytest.raises(InvalidName):
        group.join(member_id=member_id)
    assert group.generation == 0


def test_invalid_client_is_refused(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 1, clock)
    with pytest.raises(InvalidName):
        group.join(client="c" * 101)
    with pytest.raises(InvalidName):
        group.join(client="new\nline")


def test_more_members_than_partitions_leaves_some_idle(clock: ManualClock) -> None:
    group = group_with(clock, 3, 5)
    assert counts(group) == [0, 0, 1, 1, 1]
    idle = next(m for m in group.members() if not group.assignment(m))
    assert group.heartbeat(idle, group.generation).partitions == ()
    busy = group.owner(1)
    assert busy is not None
    before = owners(group)
    group.leave(busy)
    assert moved(before, owners(group)) == 1
    assert counts(group) == [0, 1, 1, 1]


# -- heartbeat, leave, expire -------------------------------------------------------------------


def test_heartbeat_refreshes_the_session(clock: ManualClock) -> None:
    group = group_with(clock, 2, 1)
    (me,) = group.members()
    for _ in range(5):
        clock.advance(TIMEOUT_MS - 1)
        assert group.heartbeat(me, group.generation).member_id == me
        assert group.expire() == []
    assert group.generation == 1


def test_heartbeat_after_a_rebalance_returns_the_new_assignment(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 4, clock, session_timeout_ms=TIMEOUT_MS)
    old = group.join(client="a")
    clock.advance(TIMEOUT_MS // 2)
    other = group.join(client="b")
    clock.advance(TIMEOUT_MS // 2 - 1)  # old's deadline is near: the heartbeat refreshes it anyway
    new = group.heartbeat(old.member_id, old.generation)
    assert new.generation == other.generation == 2
    assert new.partitions == (0, 1)
    assert set(old.partitions) - set(new.partitions) == {2, 3}  # what old must stop reading
    clock.advance(2)
    assert group.expire() == []


def test_heartbeat_from_an_unknown_member(clock: ManualClock) -> None:
    group = group_with(clock, 2, 1)
    with pytest.raises(UnknownMember) as caught:
        group.heartbeat("ghost", 1)
    assert (caught.value.group, caught.value.member) == ("billing", "ghost")


def test_leave_moves_exactly_the_leavers_partitions(clock: ManualClock) -> None:
    group = group_with(clock, 12, 3)
    leaver = group.members()[1]
    before, theirs = owners(group), group.assignment(leaver)
    group.leave(leaver)
    after = owners(group)
    assert moved(before, after) == len(theirs) == 4
    assert all(after[p] == before[p] for p in range(12) if p not in theirs)
    assert counts(group) == [6, 6]
    with pytest.raises(UnknownMember):
        group.leave(leaver)
    with pytest.raises(UnknownMember):
        group.assignment(leaver)


def test_the_last_member_leaving_orphans_every_partition(clock: ManualClock) -> None:
    group = group_with(clock, 3, 1)
    group.leave(group.members()[0])
    assert owners(group) == [None, None, None]
    assert group.generation == 2
    assert group.next_deadline_ms() is None


def test_expire_removes_members_strictly_after_their_deadline(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 6, clock, session_timeout_ms=TIMEOUT_MS)
    a = group.join(client="a").member_id
    clock.advance(100)
    b = group.join(client="b").member_id
    c = group.join(client="c").member_id
    assert group.next_deadline_ms() == TIMEOUT_MS
    clock.advance(TIMEOUT_MS - 100)  # now == a's deadline: still in
    assert group.expire() == []
    clock.advance(1)
    generation = group.generation
    assert group.expire() == [a]
    assert group.generation == generation + 1
    assert group.next_deadline_ms() == TIMEOUT_MS + 100
    clock.advance(100)
    assert group.expire() == sorted([b, c])  # both in one rebalance
    assert group.generation == generation + 2
    assert owners(group) == [None] * 6


def test_expire_with_nothing_due_changes_nothing(clock: ManualClock) -> None:
    group = group_with(clock, 4, 2)
    generation, before = group.generation, owners(group)
    assert group.expire() == []
    assert (group.generation, owners(group)) == (generation, before)


# -- generations and fencing --------------------------------------------------------------------


def test_generation_increments_once_per_change(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 4, clock, session_timeout_ms=TIMEOUT_MS)
    a = group.join().member_id
    b = group.join().member_id
    assert group.generation == 2
    group.join(member_id=a)
    group.heartbeat(b, 1)
    assert group.generation == 2
    group.leave(a)
    assert group.generation == 3
    group.set_partitions(4)
    assert group.generation == 3
    group.set_partitions(5)
    assert group.generation == 4
    clock.advance(TIMEOUT_MS + 1)
    group.expire()
    assert group.generation == 5


def test_check_owner_accepts_the_owner_at_the_current_generation(clock: ManualClock) -> None:
    group = group_with(clock, 4, 2)
    for member_id in group.members():
        for partition in group.assignment(member_id):
            group.check_owner(member_id, group.generation, partition)


def test_check_owner_fences_a_member_after_a_rebalance(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 4, clock, session_timeout_ms=TIMEOUT_MS)
    old = group.join(client="a")
    group.join(client="b")
    lost = (set(old.partitions) - set(group.assignment(old.member_id))).pop()
    kept = group.assignment(old.member_id)[0]
    for partition in (lost, kept):  # even the partition it kept: it must learn first
        with pytest.raises(StaleGeneration) as caught:
            group.check_owner(old.member_id, old.generation, partition)
        assert (caught.value.generation, caught.value.current_generation) == (1, 2)
    new = group.heartbeat(old.member_id, old.generation)
    group.check_owner(old.member_id, new.generation, kept)
    with pytest.raises(NotOwner, match="does not own partition"):
        group.check_owner(old.member_id, new.generation, lost)


def test_an_expired_member_cannot_commit_over_the_new_owner(clock: ManualClock) -> None:
    group = ConsumerGroup("g", 2, clock, session_timeout_ms=TIMEOUT_MS)
    zombie = group.join(client="slow")
    clock.advance(TIMEOUT_MS // 2)
    alive = group.join(client="fast")
    clock.advance(TIMEOUT_MS // 2 + 1)
    assert group.expire() == [zombie.member_id]
    assert group.assignment(alive.member_id) == (0, 1)
    with pytest.raises(UnknownMember):
        group.check_owner(zombie.member_id, zombie.generation, 0)
    group.join(member_id=zombie.member_id)  # it comes back under its id: old generation is stale
    with pytest.raises(StaleGeneration):
        group.check_owner(zombie.member_id, zombie.generation, 0)


def test_check_owner_refuses_a_partition_that_does_not_exist(clock: ManualClock) -> None:
    group = group_with(clock, 2, 1)
    (me,) = group.members()
    for partition in (-1, 2):
        with pytest.raises(InvalidRequest, match=r"partitions 0\.\.1, not"):
            group.check_owner(me, group.generation, partition)
        with pytest.raises(InvalidRequest):
            group.owner(partition)


def test_check_owner_wants_the_current_generation_not_a_later_one(clock: ManualClock) -> None:
    group = group_with(clock, 2, 1)
    (me,) = group.members()
    with pytest.raises(StaleGeneration):
        group.check_owner(me, group.generation + 1, 0)


# -- balance and stickiness ---------------------------------------------------------------------


def test_twelve_partitions_three_then_four_members_then_three(clock: ManualClock) -> None:
    group = group_with(clock, 12, 3)
    assert counts(group) == [4, 4, 4]
    before = owners(group)
    newcomer = group.join(client="late").member_id
    assert counts(group) == [3, 3, 3, 3]
    assert moved(before, owners(group)) == 3
    assert all(before[p] != newcomer for p in group.assignment(newcomer))
    before = owners(group)
    leaver = group.members()[0]
    theirs = set(group.assignment(leaver))
    group.leave(leaver)
    after = owners(group)
    assert counts(group) == [4, 4, 4]
    assert {p for p in range(12) if before[p] != after[p]} == theirs


def test_uneven_counts_move_only_the_surplus(clock: ManualClock) -> None:
    group = group_with(clock, 10, 3)
    assert counts(group) == [3, 3, 4]
    before = owners(group)
    group.join()
    assert counts(group) == [2, 2, 3, 3]
    # the member with 4 keeps 3 and the others keep 2 of 3: 1 + 1 + 0 + ... = 2 move
    assert moved(before, owners(group)) == 2


def test_growing_the_topic_moves_nothing_that_need_not_move(clock: ManualClock) -> None:
    group = group_with(clock, 12, 3)
    before = owners(group)
    group.set_partitions(15)
    after = owners(group)
    assert counts(group) == [5, 5, 5]
    assert after[:12] == before
    assert sorted(Counter(after[12:]).values()) == [1, 1, 1]


def test_growing_past_the_quota_moves_the_minimum(clock: ManualClock) -> None:
    group = group_with(clock, 2, 3)  # 1, 1, 0
    before = owners(group)
    group.set_partitions(6)
    assert counts(group) == [2, 2, 2]
    assert moved(before, owners(group)) == 0


def test_partitions_never_shrink(clock: ManualClock) -> None:
    group = group_with(clock, 4, 1)
    with pytest.raises(InvalidConfig, match="only grow"):
        group.set_partitions(3)
    with pytest.raises(InvalidConfig):
        group.set_partitions(4097)
    assert group.partitions == 4


def test_assignment_is_deterministic(clock: ManualClock) -> None:
    def run() -> list[str | None]:
        group = group_with(ManualClock(), 7, 3)
        group.leave(group.members()[0])
        group.join(client="x")
        group.set_partitions(9)
        return owners(group)

    assert run() == run()


def test_assign_treats_unknown_owners_as_gone() -> None:
    assert assign(["a", "gone", "a", None], ["a", "b"]) == ["a", "b", "a", "b"]
    assert assign(["a", "a", "a", "a"], ["a", "b"]) == ["a", "a", "b", "b"]
    assert assign(["a", "b"], []) == [None, None]
