"""``roost serve``'s own process settings: they take, and a missing allocator is no failure."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import weakref

from roost.clock import ManualClock
from roost.core.broker import Broker
from roost.core.publishing import Outgoing
from roost.server import process_tuning
from roost.storage import LocalEngine


def test_collector_freezes_what_is_alive_and_waits_longer_for_young_collections() -> None:
    # In a child: freezing the test process's objects would outlive this test.
    code = (
        "import gc; from roost.server.process_tuning import tune_collector as t, "
        "GC_YOUNG_THRESHOLD as y; t(); "
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count(); "
        "assert gc.get_threshold()[0] == y; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
    assert gc.get_freeze_count() == 0


def test_allocator_settings_take_on_glibc_and_are_skipped_elsewhere(monkeypatch) -> None:
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert process_tuning.tune_allocator()

    def no_libc(name: str) -> None:
        raise OSError(f"no {name}")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert not process_tuning.tune_allocator()


def test_the_open_files_limit_is_raised_to_the_hard_one_and_both_are_logged() -> None:
    # In a child: the test process keeps its own limit.
    code = (
        "import logging, resource; logging.basicConfig(level=logging.INFO); "
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)); "
        "from roost.server.process_tuning import raise_fd_limit; "
        "before, now = raise_fd_limit(); "
        "assert (before, now) == (64, resource.getrlimit(resource.RLIMIT_NOFILE)[0]), now; "
        "assert now == hard or hard == resource.RLIM_INFINITY, (now, hard); "
        "assert now > 64; print(now)"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    raised = int(done.stdout)
    assert f"open files limit {raised} (soft, was 64; hard " in done.stderr


def test_a_burst_of_definition_changes_is_frozen_once_it_ends_or_runs_long() -> None:
    freezes: list[int] = []
    version = 7
    freezer = process_tuning.DefinitionFreezer(version, lambda: freezes.append(version), 100)

    assert not freezer.poll(7)  # nothing changed: nothing done, however often it is asked
    assert not freezer.poll(7)
    version = 9
    assert not freezer.poll(9)  # changes in the last second: the burst may go on
    assert freezer.poll(9)  # a second without one: it ended
    assert freezes == [9]
    assert not freezer.poll(9)  # frozen already
    for version in range(10, 300, 60):  # a burst that never stops: every 100 versions
        freezer.poll(version)
    assert freezes == [9, 130, 250]
    assert freezer.freezes == 3


def test_recovery_runs_without_collections_and_what_it_made_is_frozen_after() -> None:
    # In a child: a test process whose objects were frozen would keep them for ever.
    code = (
        "import gc; from roost.server import process_tuning as t\n"
        "with t.collector_paused(): pass  # untuned: the process keeps its own policy\n"
        "assert gc.isenabled() and gc.get_freeze_count() == 0, 'untuned'\n"
        "assert t.freeze_survivors() == 0.0 and gc.get_freeze_count() == 0\n"
        "t.tune_collector(); frozen = gc.get_freeze_count()\n"
        "with t.collector_paused():\n"
        "    assert not gc.isenabled()\n"
        "    recovered = [[i] for i in range(20_000)]\n"
        "    cycle = []; cycle.append(cycle); del cycle  # garbage made while paused\n"
        "assert gc.isenabled()\n"
        "assert gc.get_freeze_count() >= frozen + 20_000, gc.get_freeze_count()\n"
        "assert sum(len(gc.get_objects(g)) for g in range(3)) < 100, gc.get_count()\n"
        "print(gc.get_stats()[2]['collected'])"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1  # the cycle was collected before the freeze, not frozen


def test_a_deleted_queue_is_freed_by_reference_counting_alone(
    engine: LocalEngine, clock: ManualClock
) -> None:
    """Frozen objects are never collected: what a deleted queue leaves must need no
    collection at all (no cycle), or every queue deleted after a freeze would leak."""
    broker = Broker.open(engine, clock)

    def use_a_queue(name: str) -> None:
        broker.create_queue(name, dead_letter=None, max_deliveries=None, durability="never")
        broker.publish(name, [Outgoing(value=b"x" * 100)] * 3, producer_id="p", sequence=0)
        [message, *_] = broker.receive(name, name, max_messages=2)
        broker.ack(name, name, [message.receipt])

    use_a_queue("warm-up")  # what a first queue makes once (caches, counters) is not a leak
    broker.delete_queue("warm-up")
    gc.collect()
    before = {id(o) for o in gc.get_objects()}
    gc.disable()
    try:
        use_a_queue("orders")
        made = [
            weakref.ref(o)
            for o in gc.get_objects()
            if id(o) not in before
            and type(o).__module__.startswith("roost.")
            and type(o).__weakrefoffset__
        ]
        assert {"Topic", "PartitionLog", "Segment", "Journal", "QueueSubscription"} <= {
            type(ref()).__name__ for ref in made
        }
        broker.delete_queue("orders")
        alive = sorted(type(o).__qualname__ for ref in made if (o := ref()) is not None)
    finally:
        gc.enable()
    assert alive == []
    assert not os.listdir(os.path.join(engine.path, "journals"))  # the journals' files too
