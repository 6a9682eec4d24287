"""Makes the README's dashboard screenshots: a broker with some traffic, seen in headless
Chromium.

    .venv/bin/python -m tests.e2e.dashboard_screenshots docs/

writes ``dashboard-overview.png`` and ``dashboard-queue.png`` there. Not a test: it runs real
traffic for about half a minute so that the charts have a shape. The scene: a queue of emails
published in bursts faster than its worker sends them, a few of them failing for good (dead
letters); a steady keyed queue; a topic of orders read by a consumer group that lags and a
billing queue subscription.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import roost
from tests.e2e.browser import browser_page, require_chromium
from tests.e2e.test_serve import Server

SECONDS = 30


async def traffic(broker: roost.Client, seconds: int) -> None:
    analytics = await broker.join("orders", "analytics", client="reports")
    for second in range(seconds):
        burst = 30 if second % 8 < 3 else 6
        emails = [roost.Outgoing(value=b"welcome #%d" % (second * 100 + i)) for i in range(burst)]
        await broker.publish_batch("emails", emails)
        for i in range(4):
            await broker.publish("thumbnails", b"img-%d" % i, key=b"user-%d" % (i % 3))
        orders = [roost.Outgoing(value=b'{"id": %d}' % i, key=b"%d" % i) for i in range(12)]
        await broker.publish_batch("orders", orders)
        for message in await broker.receive("emails", max_messages=12, wait=0.1):
            if message.value.endswith(b"17"):  # fails every time: dead after 3 deliveries
                await message.nack(delay=0.2, error="smtp 550: mailbox unavailable")
            else:
                await message.ack()
        for message in await broker.receive("thumbnails", max_messages=4, wait=0.1):
            await message.ack()
        for message in await broker.receive("orders", "billing", max_messages=12, wait=0.1):
            await message.ack()
        await analytics.fetch(max_records=7)
        await analytics.commit()
        await asyncio.sleep(1)


async def main(out: Path) -> None:
    require_chromium()
    with tempfile.TemporaryDirectory() as data:
        server = Server(Path(data) / "data")
        try:
            async with roost.connect(server.url) as broker, browser_page() as page:
                await broker.create_queue("emails", max_deliveries=3)
                await broker.create_queue("thumbnails", fifo=True)
                await broker.create_topic("orders", partitions=3)
                await broker.create_subscription("orders", "billing", start="earliest")
                await broker.create_subscription(
                    "orders", "analytics", mode="stream", start="earliest"
                )
                await page.goto(server.admin_url + "/")
                await traffic(broker, SECONDS)
                await page.screenshot(path=str(out / "dashboard-overview.png"))
                await page.goto(server.admin_url + "/#/s/emails/emails")
                await page.wait_for_selector('[data-section="dead-letters"] tr[data-offset]')
                await page.screenshot(path=str(out / "dashboard-queue.png"), full_page=True)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
