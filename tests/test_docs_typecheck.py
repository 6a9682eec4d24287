"""The examples a newcomer copies type-check as their own code would: every Python snippet of
the README, docs/concepts.md and docs/testing.md passes ``mypy --strict`` against the package
(issue 16, item 2). A public name typed ``Any``, a blocking client built from ``__getattr__``
or an answer typed too loosely to use shows up here as an error in the example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/concepts.md", "docs/testing.md"]


def test_the_package_says_it_is_typed() -> None:
    assert (ROOT / "src" / "roost" / "py.typed").is_file()


def test_the_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for doc in DOCS:
        snippets = re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.DOTALL)
        assert snippets, doc
        for number, snippet in enumerate(snippets):
            path = tmp_path / f"{Path(doc).stem.lower()}_{number}.py"
            path.write_text(snippet)
            files.append(str(path.name))
    checked = subprocess.run(
        # The package's own modules are checked by the project's mypy run; here only what
        # the examples do with them counts (silent: its internals' imports are not judged).
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports", "silent",
         "--cache-dir", str(tmp_path / ".cache"), *files],
        check=False, cwd=tmp_path, env={"MYPYPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
