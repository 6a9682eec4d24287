"""The pytest plugin users get (roost.testing, issue 16 item 6): docs/testing.md's example file
runs, as a user's own test file, in a pytest of its own, and passes; the entry point that loads
it is declared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "testing.md"


def test_the_entry_point_loads_the_plugin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"roost": "roost.testing"}


def test_the_guide_s_example_passes_as_a_user_s_test_file(tmp_path: Path) -> None:
    [example] = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    (tmp_path / "test_welcome.py").write_text(example)
    # Loaded by name whether or not this environment installed the entry point.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:roost",
         "-p", "roost.testing", "test_welcome.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
