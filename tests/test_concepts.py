"""docs/concepts.md's Python snippets run as written (in a scratch directory), as the README's
do: each is a whole program whose asserts say what the text claims (issue 15, item 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CONCEPTS = Path(__file__).resolve().parents[1] / "docs" / "concepts.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", CONCEPTS.read_text(), re.DOTALL)


def test_the_concepts_have_snippets() -> None:
    assert len(SNIPPETS) >= 8  # one per section that has an API to show


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet-{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs(snippet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, str(CONCEPTS), "exec"), {"__name__": "concepts"})
