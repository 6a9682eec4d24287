"""A short ``roost bench chaos``: a real ``roost serve`` SIGKILLed ten times under
confirmed publishes from lane processes, then drained; nothing confirmed is lost.

The documented run (docs/durability.md, "Chaos") does the same with 500 kills.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.bench.chaos import run_chaos_bench

KILLS = 10


@pytest.mark.crash
@pytest.mark.timeout(240)
def test_a_short_chaos_run_loses_nothing_and_keeps_key_order(tmp_path: Path) -> None:
    figures = run_chaos_bench(
        KILLS, lanes=8, processes=2, seed=13, interval_s=(0.2, 0.6), max_seconds=180,
        drain_timeout_s=120, directory=str(tmp_path),
    )  # fmt: skip
    assert figures["kills"] == KILLS
    assert (figures["lost"], figures["unexpected"], figures["order_violations"]) == (0, 0, 0), (
        figures["examples"]
    )
    assert figures["misrouted"] == 0
    assert all(figures["confirmed_per_workload"][w] > 0 for w in ("jobs", "orders", "log", "route"))
    assert figures["delivered"] >= figures["confirmed"], "every confirmed message, once at least"
    assert figures["lane_errors"], "the kills failed requests in flight or connections"
    assert figures["final_exit_status"] == 0, "the broker of the drain shut down cleanly"
    assert len([figures["restart_s"][k] for k in ("median", "p99", "max")]) == 3
    assert list(tmp_path.iterdir()) == [], "the bench removes its data when nothing was lost"
