"""``POST /api/v1/storage/repair`` and ``/readyz`` for a log whose write failed."""

from __future__ import annotations

import asyncio
import errno

import httpx

from roost.admin.app import build_app
from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.errors import StorageFailure
from roost.server.access import TRUSTED
from tests.admin.support import Admin
from tests.fault_fs import FaultFS, start_host


def test_readyz_names_the_failed_log_and_repair_reopens_it(
    data_dir: str, clock: ManualClock
) -> None:
    fs = FaultFS()

    async def main() -> None:
        host = await start_host(data_dir, clock, fs)
        try:
            transport = httpx.ASGITransport(app=build_app(host))
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                admin = Admin(host, http)
                host.door(TRUSTED).create_topic("t")
                await host.publish("t", [Outgoing(value=b"kept")])
                fs.arm("pwrite", errno.EIO, match="/topics/t/")
                try:
                    await host.publish("t", [Outgoing(value=b"got an error")])
                except StorageFailure:
                    pass
                else:
                    raise AssertionError("the publish should have failed")
                error = await admin.error("GET", "/readyz", 503, "storage_failure")
                assert "t/0" in error["message"]

                fs.arm("open_rw", errno.EIO, match="/topics/t/", times=-1)  # still broken
                answer = await admin.ok("POST", "/api/v1/storage/repair")
                assert answer["repaired"] == []
                [still] = answer["still_failed"]
                assert still["log"] == "t/0" and "Errno 5" in still["error"]

                fs.disarm()
                answer = await admin.ok("POST", "/api/v1/storage/repair")
                assert answer["still_failed"] == []
                [report] = answer["repaired"]
                assert report["log"] == "t/0"
                assert (report["records_cut"], report["records_lost"]) == (1, 0)
                assert report["end_offset"] == 1
                assert await admin.ok("GET", "/readyz") == {"status": "ready"}
                assert await admin.ok("POST", "/api/v1/storage/repair") == {
                    "repaired": [],
                    "still_failed": [],
                }
        finally:
            fs.disarm()
            await host.aclose()

    asyncio.run(main())
