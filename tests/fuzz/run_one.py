"""One fuzz target in this process (started by run.py): instrument roost, seed, fuzz.

    python -m tests.fuzz.run_one TARGET WORK SEED SECONDS RUNS    (0: no limit of that kind)

RUNS ``short`` is the target's own ``short_runs``: the pass the test suite makes.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import atheris

from tests.fuzz.target import COVERS


def instrument(prefixes: tuple[str, ...]) -> None:
    """Instrument, in place, every function and method of the modules the target is about,
    so libFuzzer is guided by which of their branches an input reached.

    Not ``atheris.instrument_imports``: it takes whole top-level packages, and all of roost
    costs seconds of start-up per target. The codecs underneath (msgspec, crc32c) are C, and
    the rest of roost and the standard library are left out: coverage there is noise.
    """
    done: set[int] = set()
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(prefixes):
            continue
        for value in list(vars(module).values()):
            for function in _functions(value, module_name):
                if id(function) not in done:
                    done.add(id(function))
                    atheris.instrument_func(function)
    if not done:
        raise SystemExit(f"nothing to instrument in {prefixes}: were they imported?")


def _functions(value: object, module_name: str) -> list[types.FunctionType]:
    if isinstance(value, types.FunctionType):
        return [value] if value.__module__ == module_name else []
    if not isinstance(value, type) or value.__module__ != module_name:
        return []
    found = []
    for member in vars(value).values():
        inner = getattr(member, "__func__", member)  # staticmethod, classmethod
        if isinstance(member, property):
            found += [f for f in (member.fget, member.fset) if isinstance(f, types.FunctionType)]
        elif isinstance(inner, types.FunctionType):
            found.append(inner)
    return found


def main() -> None:
    name, work, seed, seconds, runs = sys.argv[1:6]
    from tests.fuzz.run import MAX_LEN, write_seeds
    from tests.fuzz.target import load

    target = load(name)
    instrument(COVERS[name])
    corpus = Path(work) / "corpus" / name
    crashes = Path(work) / "crashes" / name
    crashes.mkdir(parents=True, exist_ok=True)
    write_seeds(name, corpus)
    flags = [f"-seed={seed}", f"-max_len={MAX_LEN}", f"-artifact_prefix={crashes}/",
             "-print_final_stats=1", "-timeout=20", "-rss_limit_mb=2048"]  # fmt: skip
    if int(seconds):
        flags.append(f"-max_total_time={seconds}")
    if runs == "short":
        runs = str(target.short_runs)
    if int(runs):
        flags.append(f"-runs={runs}")
    atheris.Setup([sys.argv[0], *flags, str(corpus)], target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
