"""Run fuzz targets with atheris (libFuzzer for Python), coverage-guided.

    python -m tests.fuzz.run --list
    python -m tests.fuzz.run native_server --seconds 600         # one target for 10 minutes
    python -m tests.fuzz.run all --seconds 600                   # 600 s split over every target
    python -m tests.fuzz.run native_server --runs 3000 --seed 1  # a short deterministic pass
    python -m tests.fuzz.run native_server --replay FILE...      # one input each, no fuzzing

Each target runs in a process of its own (libFuzzer ends the process when it is done). Its
corpus lives in ``<work>/corpus/<target>`` and grows across runs; it is seeded from the
target's ``seeds()`` (the project's own encoders). An input that breaks the contract is saved
as ``<work>/crashes/<target>/crash-<sha1>`` and the run fails; to keep it as a regression
test, copy it to ``tests/fuzz/crashes/<target>/`` (test_fuzz_corpus.py replays every file
there). roost's modules are instrumented for coverage as the target imports them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz.target import MODULES, SCRATCH_VARIABLE, load

DEFAULT_WORK = Path(".fuzz")
#: The largest input the fuzzer makes: frames, batches and files of a few KiB reach every
#: branch; larger ones only slow each run down.
MAX_LEN = 8192


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run")
    parser.add_argument("target", nargs="?", help="a target's name, or 'all'")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--seconds", type=int, help="fuzz this long (split over 'all')")
    parser.add_argument("--runs", type=int, help="fuzz this many inputs (per target)")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's seed (0: random)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="corpus and crashes")
    parser.add_argument("--replay", nargs="+", type=Path, help="check these inputs, no fuzzing")
    args = parser.parse_args(argv)
    if args.list:
        for name in MODULES:
            print(f"{name}: {load(name).what}")
        return 0
    if args.target is None:
        parser.error("name a target, or 'all'")
    if args.replay:
        return replay(args.target, args.replay)
    names = list(MODULES) if args.target == "all" else [args.target]
    if any(name not in MODULES for name in names):
        parser.error(f"unknown target {args.target!r}; --list lists them")
    seconds = None if args.seconds is None else max(1, args.seconds // len(names))
    failed = [name for name in names if fuzz(name, seconds, args.runs, args.seed, args.work)]
    if failed:
        print(f"contract broken in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def fuzz(name: str, seconds: int | None, runs: int | None, seed: int, work: Path) -> int:
    """Run one target in a process of its own; its exit status (0: no finding)."""
    command = [sys.executable, "-m", "tests.fuzz.run_one", name, str(work), str(seed)]
    command += [str(seconds or 0), str(runs or 0)]
    print(f"== {name}", flush=True)
    with tempfile.TemporaryDirectory(prefix="roost-fuzz-") as scratch:
        env = {**os.environ, SCRATCH_VARIABLE: scratch}
        return subprocess.run(command, env=env, check=False).returncode


def replay(name: str, paths: list[Path]) -> int:
    target = load(name)
    for path in paths:
        print(f"{path}: ", end="", flush=True)
        target.check(path.read_bytes())
        print("ok")
    return 0


def write_seeds(name: str, corpus: Path) -> None:
    """The target's seeds into its corpus, named by content (so reruns add nothing)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in load(name).seeds():
        path = corpus / f"seed-{hashlib.sha1(seed).hexdigest()}"
        if not path.exists():
            path.write_bytes(seed)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
