"""Power loss under group-committed metadata: several records written, then one shared sync.

Random commits, each either grouped (written and applied, synced later by a job covering
every record written before it began) or synced by itself (which syncs the pending ones with
it), sync jobs run between them, snapshots now and then; the power cut at a random file
operation. The store reopened holds the state after some prefix of the commits: at least
every one known durable before the cut (a job's or a commit's own sync returned), at most
every one written (plus the one the cut interrupted), never a mix.

Then queues created in groups, one published into and flushed before its group's sync: after
the cut every queue whose sync returned is there, whole, with its message; the creates kept
are a prefix of those attempted.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.storage import LocalEngine
from roost.storage.metadata import MetadataStore
from roost.storage.metadata_snapshot import SnapshotJob
from tests.property.power_loss_fs import PowerCut, PowerLossFS

NAMES = ["a", "b", "c"]
_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NAMES), st.integers(0, 1000)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.none()),
)
_step = st.one_of(
    st.tuples(st.just("grouped"), st.lists(_op, min_size=1, max_size=3)),
    st.tuples(st.just("synced"), st.lists(_op, min_size=1, max_size=3)),
    st.tuples(st.just("sync"), st.just([])),
)
State = dict[str, Any]


def _apply(state: State, ops: list[tuple[str, str, int | None]]) -> State:
    after = dict(state)
    for kind, name, value in ops:
        if kind == "put":
            after[name] = value
        else:
            after.pop(name, None)
    return after


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(_step, min_size=1, max_size=30),
    snapshot_bytes=st.sampled_from([120, 4 * 1024 * 1024]),
    cut_at=st.integers(1, 150),
    seed=st.integers(0, 2**32),
)
def test_a_power_cut_keeps_every_synced_commit_and_a_prefix_of_the_rest(
    steps: list[tuple[str, list[tuple[str, str, int | None]]]],
    snapshot_bytes: int,
    cut_at: int,
    seed: int,
) -> None:
    root = tempfile.mkdtemp(prefix="roost-power-group-")
    try:
        fs = PowerLossFS(root)
        path = os.path.join(root, "metadata.json")
        store = MetadataStore.open(fs, path)
        store.snapshot_bytes = snapshot_bytes
        snapshots: list[SnapshotJob] = []
        store.run_snapshot = snapshots.append  # run at the next step: commits go on meanwhile
        states: list[State] = [{}]  # after each commit written
        durable = 0  # every commit up to this one is known durable
        fs.cut_after(cut_at)
        try:
            for kind, ops in steps:
                for job in snapshots:
                    job.run()
                snapshots.clear()
                if kind == "sync":
                    sync = store.start_sync()
                    if sync is not None:
                        sync.run()
                        store.finish_sync(sync)
                        assert sync.last.durable
                else:
                    states.append(_apply(states[-1], ops))  # (if the cut takes it: its bytes
                    # may be there, whole or torn)
                    if kind == "grouped":
                        with store.group_commit(), store.transaction() as txn:
                            _do(txn, ops)
                    else:
                        with store.transaction() as txn:
                            _do(txn, ops)
                durable = store.durable_version
        except PowerCut:
            pass
        fs.close_all()
        fs.power_cut(random.Random(seed))

        reopened = MetadataStore.open(fs, path)
        assert durable <= reopened.version < len(states), (durable, reopened.version)
        found = {name: reopened.get("x", name) for name in reopened.names("x")}
        assert found == states[reopened.version]
        with reopened.transaction() as txn:  # and it goes on
            txn.put("x", "after", 1)
        reopened.close()
        assert MetadataStore.open(fs, path).get("x", "after") == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _do(txn: Any, ops: list[tuple[str, str, int | None]]) -> None:
    for kind, name, value in ops:
        if kind == "put":
            txn.put("x", name, value)
        else:
            txn.delete("x", name)


# -- queues created in groups, published into before their sync -----------------------------


def _create_in_groups(
    broker: Broker,
    engine: LocalEngine,
    groups: list[int],
    confirmed: list[str],
    sent: dict[str, bytes],
    attempted: list[str],
) -> None:
    """Each group: its creates written together, a message published into the first and
    flushed while the group is still unsynced, then one sync for the group. A create counts
    as confirmed once its group's sync returned; a message once its flush and its queue's
    create both did (what ``Host.confirm`` waits for)."""
    store = engine.metadata
    number = 0
    for size in groups:
        names = [f"q{number + i}" for i in range(size)]
        number += size
        with store.group_commit():
            for name in names:
                attempted.append(name)
                broker.create_queue(name)
        value = b"m-" + names[0].encode()
        broker.publish(names[0], [Outgoing(value=value)])
        engine.topic(names[0]).log(0).flush()  # its data is durable before its topic is
        job = store.start_sync()
        assert job is not None
        job.run()
        store.finish_sync(job)
        if job.error is None:
            confirmed += names
            sent[names[0]] = value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    cut_at=st.integers(1, 300),
    seed=st.integers(0, 2**32),
)
def test_a_power_cut_under_grouped_creates_keeps_every_confirmed_queue_and_message(
    groups: list[int], cut_at: int, seed: int
) -> None:
    root = tempfile.mkdtemp(prefix="roost-power-group-queues-")
    clock = ManualClock(now_ms=1_700_000_000_000)
    try:
        fs = PowerLossFS(root)
        path = os.path.join(root, "data")
        engine = LocalEngine.open(path, clock, fs)
        broker = Broker.open(engine, clock)
        confirmed: list[str] = []
        attempted: list[str] = []
        sent: dict[str, bytes] = {}
        fs.cut_after(cut_at)
        with contextlib.suppress(PowerCut):
            _create_in_groups(broker, engine, groups, confirmed, sent, attempted)
        engine.close(clean=False)
        fs.close_all()
        fs.power_cut(random.Random(seed))

        engine = LocalEngine.open(path, clock, fs)
        broker = Broker.open(engine, clock)
        queues = {spec.name for spec in broker.list_subscriptions()}
        assert set(confirmed) <= queues, f"confirmed creates lost: {set(confirmed) - queues}"
        assert queues <= set(attempted)
        # Grouped creates are kept in order: a later one only with every earlier one.
        kept = [name in queues for name in attempted]
        assert kept == sorted(kept, reverse=True), kept
        for name in queues:
            assert engine.has_topic(f"{name}.dlq")
            got = [m.value for m in broker.receive(name, name, max_messages=10)]
            if name in sent:
                assert got == [sent[name]], f"{name}: a confirmed message is lost"
            broker.publish(name, [Outgoing(value=b"after")])
            engine.topic(name).log(0).flush()
            clock.advance(60_000)
            assert b"after" in [m.value for m in broker.receive(name, name, max_messages=10)]
        assert set(engine.list_topics()) == queues | {f"{name}.dlq" for name in queues}
        engine.close()
    finally:
        fs.close_all()
        shutil.rmtree(root, ignore_errors=True)
