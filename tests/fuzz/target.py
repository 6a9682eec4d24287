"""What a fuzz target is: a check of one input against a contract, and seeds to start from.

A target's ``check(data)`` feeds ``data`` to one codec or reader and returns quietly when the
contract holds: the input was taken, or refused with one of the documented error types. Any
other exception (or a failed assertion, such as a round trip that changed a value) is a
finding: atheris reports it and saves the input. ``seeds()`` makes valid inputs with the
project's own encoders, so the fuzzer starts from the formats rather than from noise.

Nothing here imports ``roost``: the runner instruments roost's modules as it imports a
target, and a module imported before that would not be instrumented.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

#: Where a fuzz process keeps its scratch files: set by the runner, which removes it after
#: the process (libFuzzer ends a process without running Python's atexit handlers).
SCRATCH_VARIABLE = "ROOST_FUZZ_SCRATCH"


def scratch_directory() -> str:
    """A new directory for a target's files: under the runner's scratch directory, else in
    memory-backed storage where there is one (a target in the test process, whose atexit
    handlers do run, cleans up after itself)."""
    parent = os.environ.get(SCRATCH_VARIABLE)
    if parent is None and os.path.isdir("/dev/shm"):
        parent = "/dev/shm"
    return tempfile.mkdtemp(prefix="roost-fuzz-", dir=parent)


@dataclass(frozen=True)
class Target:
    name: str
    #: What the target feeds and what it checks (shown by ``run --list`` and in the docs).
    what: str
    check: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    #: Runs of the short deterministic pass in the test suite (fewer for slow targets).
    short_runs: int = 3000


#: Each target's module (under tests.fuzz): imported only when that target is run.
MODULES = {
    "native_server": "native_targets",
    "native_handshake": "native_targets",
    "native_client": "native_targets",
    "native_requests": "session_targets",
    "storage_batch": "storage_targets",
    "storage_fetched": "storage_targets",
    "storage_index": "storage_targets",
    "storage_segment": "storage_targets",
    "journal_snapshot": "storage_targets",
    "metadata": "storage_targets",
    "state_codec": "state_targets",
    "auth_server": "auth_targets",
    "auth_client": "auth_targets",
    "admin_bodies": "edge_targets",
    "config_toml": "edge_targets",
}


_PROTOCOL = ("roost.protocols",)
#: The modules each target is about, instrumented for coverage (as prefixes of module names):
#: libFuzzer is guided by their branches. Instrumenting a module costs a few ms of start-up
#: per kilobyte of source, so a target names its own rather than all of roost.
COVERS: dict[str, tuple[str, ...]] = {
    "native_server": _PROTOCOL,
    "native_handshake": _PROTOCOL,
    "native_client": (*_PROTOCOL, "roost.client.batches", "roost.storage.batch"),
    "native_requests": ("roost.server.native_session", "roost.server.door", "roost.core"),
    "storage_batch": ("roost.storage.batch",),
    "storage_fetched": ("roost.client.batches", "roost.storage.batch"),
    "storage_index": ("roost.storage.index",),
    "storage_segment": ("roost.storage.segment", "roost.storage.index", "roost.storage.batch"),
    "journal_snapshot": ("roost.storage.journal",),
    "metadata": ("roost.storage.metadata",),
    "state_codec": ("roost.core.state_codec", "roost.core.acks", "roost.core.deliveries"),
    "auth_server": ("roost.server.native_auth", "roost.server.identities", "scramp"),
    "auth_client": ("roost.client.credentials", "scramp"),
    "admin_bodies": ("roost.admin.endpoints", "roost.admin.schemas", "roost.storage.config",
                     "roost.core.policies", "roost.core.retry", "roost.core.model"),
    "config_toml": ("roost.server.serve",),
}  # fmt: skip


def load(name: str) -> Target:
    """The target called ``name`` (importing its module, and so roost, now)."""
    module = importlib.import_module(f"tests.fuzz.{MODULES[name]}")
    target: Target = module.TARGETS[name]
    return target
