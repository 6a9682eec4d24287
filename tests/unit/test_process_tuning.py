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
