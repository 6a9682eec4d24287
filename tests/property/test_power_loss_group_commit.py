"""Power loss under group-committed metadata: several records written, then one shared sync.

Random commits, each either grouped (written and applied, synced later by a job covering
every record written before it began) or synced by itself (which syncs the pending ones with
it), sync jobs run between them, snapshots now and then; the power cut at a random file
operation. The store reopened holds the state after some prefix of the commits: at least
every one known durable before the cut (a job's or a commit's own sync returned), at most
every one written (plus the one the cut interrupted), never a mix.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
