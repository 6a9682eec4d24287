"""The dashboard's files ship in the wheel: pyproject's package-data covers every one of them,
and nothing in them reaches for another host (users run the broker offline)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from roost.admin.dashboard import STATIC

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "roost" / "admin"


def test_package_data_covers_every_static_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["roost.admin"]
    shipped = {path for pattern in patterns for path in PACKAGE.glob(pattern) if path.is_file()}
    files = {path for path in STATIC.rglob("*") if path.is_file()}
    assert files, "the dashboard has files"
    assert files == shipped, sorted(str(p.relative_to(PACKAGE)) for p in files ^ shipped)
    assert STATIC == PACKAGE / "static"


def test_the_app_loads_nothing_from_another_host() -> None:
    for path in STATIC.glob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"(src|href)=\"(https?:)?//", text), path
            assert not re.search(r"""(import|fetch|EventSource)\W+["'](https?:)?//""", text), path


def test_the_vendored_library_says_what_it_is() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    assert "1.6.32" in readme and "MIT" in readme
    assert "(v1.6.32)" in (STATIC / "vendor" / "uPlot.iife.min.js").read_text()[:100]
    assert "MIT License" in (STATIC / "vendor" / "LICENSE").read_text()
