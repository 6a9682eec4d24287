"""``roost serve``'s own process settings: they take, and a missing allocator is no failure."""

from __future__ import annotations

import ctypes
import gc
import subprocess
import sys

from roost.server import process_tuning


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
