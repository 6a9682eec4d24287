"""The layer rules of docs/design.md §2, checked on every module's imports.

Walks every module with ``ast``: an import of another layer must be one the table below allows,
asyncio stays in the server and above, and only the host and its door hold the core's
``Broker``: every session (native, admin, embedded, those to come) reaches it through the door.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "roost"
#: What each layer may import besides itself and the shared modules: docs/design.md §2.
MAY_IMPORT = {
    "storage": set(),
    "core": {"storage"},
    "protocols": set(),  # sans-IO codecs and wire types: nothing of the broker's
    "server": {"protocols", "core", "storage"},
    # Embedded mode runs a host; the API hands out the core's value types (Message...).
    "client": {"protocols", "server", "core", "storage"},
    # A session over the door: value types from core and storage, calls through server.door.
    "admin": {"server", "core", "storage"},
    "cli": {"client", "admin", "server", "protocols", "core", "storage", "bench"},
    # The fault benches' floods speak the native protocol by hand (badly, on purpose).
    "bench": {"server", "storage", "client", "core", "protocols"},
    # The pytest plugin users load: fixtures over the client, as a user's code would hold it.
    "testing": {"client"},
}
#: Modules every layer may import: value types and seams with no layer of their own.
SHARED = {"errors", "clock", "receipt", "sync", "__init__"}
NO_ASYNCIO = {"protocols", "core", "storage"}
#: The only modules that may hold the core's Broker (the host owns it, the door uses it).
BROKER_HOLDERS = {"roost/server/host.py", "roost/server/door.py"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> list[tuple[Path, str, ast.Module]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent)
        found.append((path, relative.as_posix(), ast.parse(path.read_text(), str(path))))
    return found


def imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_imports_follow_the_layer_table() -> None:
    problems = []
    for _, relative, tree in modules():
        parts = Path(relative).with_suffix("").parts
        layer = layer_of(".".join(parts))
        if layer in SHARED:
            continue
        assert layer in MAY_IMPORT, f"{relative}: layer {layer!r} is missing from the table"
        for name in imports(tree):
            if name == "asyncio" or name.startswith("asyncio."):
                if layer in NO_ASYNCIO:
                    problems.append(f"{relative}: asyncio below the server layer")
                continue
            if not name.startswith("roost."):
                continue
            target = layer_of(name)
            if target in SHARED or target == layer or target in MAY_IMPORT[layer]:
                continue
            problems.append(f"{relative} imports {name}")
    assert problems == []


def test_only_the_host_and_its_door_hold_the_broker() -> None:
    problems = []
    for _, relative, tree in modules():
        if relative in BROKER_HOLDERS or relative.startswith("roost/core/"):
            continue
        problems += [f"{relative} imports the core's Broker" for name in imports(tree)
                     if name == "roost.core.broker"]  # fmt: skip
        # A client's own ``self._broker`` (a worker's client) is not the core's.
        problems += [
            f"{relative}:{node.lineno} reaches for .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr in ("_broker", "broker")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ]
    assert problems == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checks above are not vacuous: a protocol importing the core is found."""
    tree = ast.parse("from roost.core.model import Message\nimport asyncio\n")
    found = [name for name in imports(tree) if name.startswith("roost.")]
    assert [layer_of(name) for name in found] == ["core"]
    assert "core" not in MAY_IMPORT["protocols"]
