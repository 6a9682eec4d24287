"""Power loss under the metadata journal, and under queue creation.

1. Random transactions (puts and deletes, compacted by snapshots now and then) over
   ``PowerLossFS``, the power cut at a random file operation: the store reopened holds exactly
   the transactions committed before the cut, plus perhaps the one the cut interrupted (a
   prefix of what was attempted, never a mix). A snapshot is written off the loop while
   commits go on: here its job runs after ``snapshot_lag`` more commits (0: at once), so the
   cut lands before, inside and after the snapshot's steps and the journal's replacement,
   with records committed in between.
2. Queues created (each one metadata record: topic, dead-letter topic, subscription; their
   directories unsynced) with messages published and flushed in between, the power cut at a
   random operation: after reopening, every create that returned is there, whole, and works;
   every message whose flush returned is delivered; a create the cut interrupted is wholly
   there or wholly absent.
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

NAMES = ["a", "b", "c", "d"]
_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["x", "y"]), st.sampled_from(NAMES),
              st.integers(0, 1000)),
    st.tuples(st.just("delete"), st.sampled_from(["x", "y"]), st.sampled_from(NAMES),
              st.none()),
)  # fmt: skip
_transactions = st.lists(st.lists(_op, min_size=1, max_size=4), min_size=1, max_size=25)

State = dict[str, dict[str, Any]]


def _apply(state: State, ops: list[tuple[str, str, str, int | None]]) -> State:
    after = {namespace: dict(entries) for namespace, entries in state.items()}
    for kind, namespace, name, value in ops:
        if kind == "put":
            after.setdefault(namespace, {})[name] = value
        else:
            after.get(namespace, {}).pop(name, None)
    return after


def _read(store: MetadataStore) -> State:
    state = {ns: {name: store.get(ns, name) for name in store.names(ns)} for ns in ("x", "y")}
    return {ns: entries for ns, entries in state.items() if entries}


def _nonempty(state: State) -> State:
    return {ns: entries for ns, entries in state.items() if entries}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    transactions=_transactions,
    snapshot_bytes=st.sampled_from([60, 200, 4 * 1024 * 1024]),
    snapshot_lag=st.integers(0, 3),
    cut_at=st.integers(1, 200),
    seed=st.integers(0, 2**32),
)
def test_a_power_cut_leaves_a_prefix_of_the_committed_transactions(
    transactions: list[list[tuple[str, str, str, int | None]]],
    snapshot_bytes: int,
    snapshot_lag: int,
    cut_at: int,
    seed: int,
) -> None:
    root = tempfile.mkdtemp(prefix="roost-power-metadata-")
    try:
        fs = PowerLossFS(root)
        path = os.path.join(root, "metadata.json")
        store = MetadataStore.open(fs, path)
        store.snapshot_bytes = snapshot_bytes
        jobs: list[tuple[int, SnapshotJob]] = []  # (commits left before it runs, job)
        store.run_snapshot = lambda job: jobs.append((snapshot_lag, job))
        states: list[State] = [{}]  # after each committed transaction
        interrupted: State | None = None
        fs.cut_after(cut_at)
        try:
            for ops in transactions:
                with store.transaction() as txn:
                    for kind, namespace, name, value in ops:
                        if kind == "put":
                            txn.put(namespace, name, value)
                        else:
                            txn.delete(namespace, name)
                states.append(_apply(states[-1], ops))
                jobs[:] = [(lag - 1, job) for lag, job in jobs]
                for lag, job in jobs:
                    if lag < 0:
                        job.run()  # the thread's work, between two commits
                jobs[:] = [(lag, job) for lag, job in jobs if lag >= 0]
        except PowerCut:
            interrupted = _apply(states[-1], ops)
        fs.close_all()
        fs.power_cut(random.Random(seed))

        reopened = MetadataStore.open(fs, path)
        found = _read(reopened)
        committed = len(states) - 1
        # The transactions confirmed, and perhaps the one the cut interrupted: whole.
        allowed = {committed: _nonempty(states[-1])}
        if interrupted is not None:
            allowed[committed + 1] = _nonempty(interrupted)
        assert reopened.version in allowed, (reopened.version, committed)
        assert found == allowed[reopened.version]
        # And it goes on: a commit after recovery is kept.
        with reopened.transaction() as txn:
            txn.put("x", "after", 1)
        reopened.close()
        assert MetadataStore.open(fs, path).get("x", "after") == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- queues ---------------------------------------------------------------------------------


def _create_and_publish(
    broker: Broker, engine: LocalEngine, count: int, confirmed: list[str], sent: dict[str, bytes]
) -> None:
    for i in range(count):
        name = f"q{i}"
        broker.create_queue(name)
        confirmed.append(name)
        if i % 2 == 0:
            value = b"m-%d" % i
            broker.publish(name, [Outgoing(value=value)])
            for log in engine.logs():  # what the flusher does before a publish is confirmed
                log.flush()
            sent[name] = value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut_at=st.integers(1, 400), seed=st.integers(0, 2**32))
def test_a_power_cut_while_queues_are_created_leaves_each_whole_or_absent(
    cut_at: int, seed: int
) -> None:
    root = tempfile.mkdtemp(prefix="roost-power-queues-")
    clock = ManualClock(now_ms=1_700_000_000_000)
    try:
        fs = PowerLossFS(root)
        path = os.path.join(root, "data")
        engine = LocalEngine.open(path, clock, fs)
        broker = Broker.open(engine, clock)
        confirmed: list[str] = []
        sent: dict[str, bytes] = {}
        fs.cut_after(cut_at)
        with contextlib.suppress(PowerCut):
            _create_and_publish(broker, engine, 12, confirmed, sent)
        engine.close(clean=False)
        fs.close_all()
        fs.power_cut(random.Random(seed))

        engine = LocalEngine.open(path, clock, fs)
        broker = Broker.open(engine, clock)
        queues = {spec.name for spec in broker.list_subscriptions()}
        assert set(confirmed) <= queues, f"confirmed creates lost: {set(confirmed) - queues}"
        assert len(queues - set(confirmed)) <= 1, "only the create the cut interrupted"
        assert broker.quarantined_subscriptions() == {}
        for name in queues:
            # Whole: its topic, its dead-letter topic and its subscription, and it works.
            assert engine.has_topic(name) and engine.has_topic(f"{name}.dlq")
            got = [m.value for m in broker.receive(name, name, max_messages=10)]
            # A confirmed message is there; one whose flush the cut interrupted may be.
            assert (
                got == [sent[name]] if name in sent else got in ([], [b"m-%s" % name[1:].encode()])
            )
            broker.publish(name, [Outgoing(value=b"after")])
            engine.topic(name).log(0).flush()  # readers see what is durable
            clock.advance(60_000)
            values = [m.value for m in broker.receive(name, name, max_messages=10)]
            assert b"after" in values
        # No topic is left that no queue owns (half a create).
        owned = queues | {f"{name}.dlq" for name in queues}
        assert set(engine.list_topics()) == owned
        engine.close()
    finally:
        fs.close_all()
        shutil.rmtree(root, ignore_errors=True)


# -- lazy creation: a log's files are made by its first write ------------------------------


def _create_write_or_delete(
    broker: Broker,
    engine: LocalEngine,
    count: int,
    steps: list[tuple[str, str]],
    sent: dict[str, bytes],
) -> None:
    """Create queues; publish to every third (its first write makes its files), delete every
    third other one before anything was written to it. ``steps`` records each create and
    delete that returned, and each write and delete attempted: ("create" | "delete" |
    "write" | "deleting", queue)."""
    for i in range(count):
        name = f"q{i}"
        broker.create_queue(name)
        steps.append(("create", name))
        if i % 3 == 0:
            value = b"m-%d" % i
            steps.append(("write", name))  # attempted: its files may exist from here on
            broker.publish(name, [Outgoing(value=value)])
            engine.topic(name).log(0).flush()  # what the flusher does before the confirm
            sent[name] = value
        elif i % 3 == 1:
            steps.append(("deleting", name))  # attempted: it may be gone from here on
            broker.delete_queue(name)
            steps.append(("delete", name))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut_at=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_a_power_cut_around_first_writes_and_early_deletes_loses_nothing_confirmed(
    cut_at: int, seed: int
) -> None:
    """Queues made without files, some written once, some deleted before any write; the power
    cut at a random operation. After reopening: every confirmed message is there; only logs
    that were written have directories; a queue deleted before any write is gone (unless the
    cut took its delete) and left nothing; every queue takes writes again."""
    root = tempfile.mkdtemp(prefix="roost-power-lazy-")
    clock = ManualClock(now_ms=1_700_000_000_000)
    try:
        fs = PowerLossFS(root)
        path = os.path.join(root, "data")
        engine = LocalEngine.open(path, clock, fs)
        broker = Broker.open(engine, clock)
        steps: list[tuple[str, str]] = []
        sent: dict[str, bytes] = {}
        fs.cut_after(cut_at)
        with contextlib.suppress(PowerCut):
            _create_write_or_delete(broker, engine, 9, steps, sent)
        engine.close(clean=False)
        fs.close_all()
        fs.power_cut(random.Random(seed))

        engine = LocalEngine.open(path, clock, fs)
        broker = Broker.open(engine, clock)
        created = {name for kind, name in steps if kind == "create"}
        deleted = {name for kind, name in steps if kind == "delete"}
        deleting = {name for kind, name in steps if kind == "deleting"}
        queues = {spec.name for spec in broker.list_subscriptions()}
        assert created - deleting <= queues, f"confirmed creates lost: {created - queues}"
        assert len(queues & deleted) == 0, "a confirmed delete came back"
        assert len(queues - created) <= 1, "only the create the cut interrupted"
        written = {name for kind, name in steps if kind == "write"}
        on_disk = set(os.listdir(os.path.join(path, "topics")))
        assert on_disk <= written, f"directories of logs never written: {on_disk - written}"
        assert os.listdir(os.path.join(path, "journals")) == [], "no journal was written"
        for name in sorted(queues):
            got = [m.value for m in broker.receive(name, name, max_messages=10)]
            if name in sent:
                assert got == [sent[name]], f"{name}: a confirmed message is lost"
            else:
                assert got in ([], [b"m-%s" % name[1:].encode()])
            broker.publish(name, [Outgoing(value=b"after")])
            engine.topic(name).log(0).flush()
            clock.advance(60_000)
            assert b"after" in [m.value for m in broker.receive(name, name, max_messages=10)]
        engine.close()
        engine = LocalEngine.open(path, clock, fs)  # and a clean restart finds it all again
        assert {spec.name for spec in Broker.open(engine, clock).list_subscriptions()} == queues
        engine.close()
    finally:
        fs.close_all()
        shutil.rmtree(root, ignore_errors=True)
