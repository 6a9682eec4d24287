"""The storage endpoint: repair failed logs in place (``roost repair`` calls it).

A log whose write or fsync failed refuses writes; the broker repairs it by itself once a probe
write succeeds, and this asks for it now (docs/operations.md, "Disk full and I/O errors").
"""

from __future__ import annotations

from roost.admin.endpoints import Call, Endpoint
from roost.storage.repair import RepairResult


async def repair(call: Call) -> RepairResult:
    return await call.door.repair()


ENDPOINTS = [
    Endpoint(
        "POST", "/api/v1/storage/repair",
        "Reopen every failed log in place, verified from disk and cut back to what was "
        "confirmed; answers what was repaired and what still refuses writes",
        repair, RepairResult, errors=(403,), tag="storage",
    ),
]  # fmt: skip
