"""Imports point one way: server -> protocols -> core -> storage (../docs/design.md §2).

Walks every module's imports with ``ast`` and fails on an import that points up a layer, and
on asyncio anywhere below the server.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "roost"
#: Layers, top to bottom; a module may import its own layer and those below it.
LAYERS = ["cli", "admin", "client", "server", "protocols", "core", "storage"]
#: What each layer may import besides the layers below it.
ALSO_ALLOWED = {
    "client": {"server", "protocols"},  # embedded mode runs a host; the native codec
    "cli": {"client", "admin", "server", "protocols", "core", "storage", "bench"},
    "bench": {"server", "storage", "client", "core"},
}
SHARED = {"errors", "clock", "config", "__init__", "sync"}  # sync: a facade like __init__
NO_ASYNCIO = {"protocols", "core", "storage"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def test_imports_point_down() -> None:
    problems = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC.parent).with_suffix("")
        layer = layer_of(".".join(relative.parts))
        if layer in SHARED or (relative.parts[-1] == "__init__" and len(relative.parts) == 2):
            continue
        rank = LAYERS.index(layer) if layer in LAYERS else None
        for name in imports(path):
            if name == "asyncio" or name.startswith("asyncio."):
                if layer in NO_ASYNCIO:
                    problems.append(f"{relative}: asyncio below the server layer")
                continue
            if not name.startswith("roost."):
                continue
            target = layer_of(name)
            if target in SHARED or target == layer:
                continue
            allowed = target in ALSO_ALLOWED.get(layer, set())
            if rank is not None and target in LAYERS and LAYERS.index(target) > rank:
                allowed = True
            if not allowed:
                problems.append(f"{relative} imports {name}")
    assert problems == []
