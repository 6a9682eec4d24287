"""Every fuzz target's seeds and every input a fuzz run once found breaking a contract
(``tests/fuzz/crashes/<target>/``), checked in this process, without fuzzing: the seeds are
valid inputs each target must take, and the crashes are regression tests for the fixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.target import MODULES, load

CRASHES = Path(__file__).parent / "crashes"
FOUND = sorted(CRASHES.glob("*/*"))


@pytest.mark.parametrize("name", list(MODULES))
def test_each_target_takes_its_seeds(name: str) -> None:
    target = load(name)
    seeds = target.seeds()
    assert seeds
    for seed in seeds:
        target.check(seed)


@pytest.mark.parametrize("path", FOUND, ids=[f"{p.parent.name}/{p.name}" for p in FOUND])
def test_an_input_that_once_broke_a_contract_keeps_it_now(path: Path) -> None:
    assert path.parent.name in MODULES, f"{path}: no target of that name"
    load(path.parent.name).check(path.read_bytes())
