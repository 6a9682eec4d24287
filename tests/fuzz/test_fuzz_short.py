"""A short, deterministic pass of every fuzz target under atheris (``make fuzz`` runs them
for as long as asked): each target's seeds and a few thousand mutations with a fixed seed,
in processes of their own (libFuzzer ends its process), two at a time.

It fails where it cannot fuzz: atheris missing (CI installs it from requirements.lock), or
roost not instrumented (no coverage reported), rather than passing without having run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.fuzz.target import MODULES, SCRATCH_VARIABLE

ROOT = Path(__file__).resolve().parents[2]
SEED = 1
TIMEOUT_S = 120
#: Runs of each target unless it says fewer (Target.short_runs, read in the child).
DONE = re.compile(rb"#(\d+)\s+DONE\s+cov: (\d+)")


class Outcome(NamedTuple):
    returncode: int
    output: bytes


def run_target(name: str, work: str) -> Outcome:
    scratch = os.path.join(work, "scratch", name)  # removed with ``work``
    os.makedirs(scratch)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           SCRATCH_VARIABLE: scratch}  # fmt: skip
    command = [sys.executable, "-m", "tests.fuzz.run_one", name, work, str(SEED), "0", "short"]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                              timeout=TIMEOUT_S, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        return Outcome(-1, (e.stderr or b"") + b"\n(timed out)")
    return Outcome(done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def outcomes() -> Iterator[dict[str, Outcome]]:
    with tempfile.TemporaryDirectory(prefix="roost-fuzz-") as work, ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(run_target, name, work) for name in MODULES}
        yield {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", list(MODULES))
def test_a_short_fuzz_run_keeps_the_contract(name: str, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[name]
    tail = outcome.output[-3000:].decode(errors="replace")
    assert outcome.returncode == 0, f"{name} broke its contract or could not run:\n{tail}"
    done = DONE.search(outcome.output)
    assert done is not None, f"{name}: no final libFuzzer line:\n{tail}"
    runs, coverage = int(done.group(1)), int(done.group(2))
    assert runs >= 100, f"{name} ran only {runs} inputs"
    assert coverage > 0, f"{name}: no coverage, so roost was not instrumented:\n{tail}"
