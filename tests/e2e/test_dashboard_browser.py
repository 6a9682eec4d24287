"""The dashboard in a real browser, against a real ``roost serve`` whose data directory has a
user: the page sends the browser to the login page, which logs in; then publishing through
the client moves the depth and the chart without a reload, a dead letter shows in the
dead-letter browser with why it died, the redrive button (a state change: JSON and the CSRF
token) empties it, and logging out ends the session.

Nothing sleeps: every wait is Playwright's auto-waiting for a DOM condition (``expect``).
With ``ROOST_SCREENSHOTS=<dir>`` the test also saves the overview and the queue page there,
to look at after a failure (the README's come from ``dashboard_screenshots.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

import roost
from roost.core.model import Message
from tests.e2e import browser
from tests.e2e.browser import add_user, browser_page, log_in, require_chromium
from tests.e2e.test_serve import Server

REASON = "smtp 550: mailbox unavailable"
JOBS = 'tr[data-key="jobs/jobs"]'
USER, PASSWORD = "ada", "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    require_chromium()
    add_user(tmp_path / "data", USER, PASSWORD)
    server = Server(tmp_path / "data")
    yield server
    if server.process.poll() is None:
        server.stop()


async def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("ROOST_SCREENSHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_watch_a_queue_dead_letter_a_message_and_redrive_it(server: Server) -> None:
    async def body() -> None:
        async with (
            roost.connect(server.url, username=USER, password=PASSWORD) as broker,
            browser_page() as page,
        ):
            await broker.create_queue("jobs", max_deliveries=2)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await log_in(page, server.admin_url, USER, PASSWORD)
            # From here on not even a console error: the login page's own probe of /session
            # (answered 401 before the login) is the one the browser reports as expected.
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            depth = page.locator(f'{JOBS} td[data-field="depth"]')
            await expect(depth).to_have_text("0")
            await expect(page.locator("#status")).to_have_attribute("data-state", "live")
            await page.evaluate("window.stillTheSamePage = true")

            for i in range(3):
                await broker.publish("jobs", b"job %d" % i)
            await expect(depth).to_have_text("3")
            await expect(page.locator(f'{JOBS} td[data-field="dead_letters"]')).to_have_text("0")

            await page.click(f"{JOBS} a")
            await expect(page.locator("h1")).to_contain_text("jobs")
            chart = page.locator('[data-chart="depth"]')
            await expect(chart).to_have_attribute("data-last", "3")
            drawn = await chart.locator("canvas").evaluate("canvas => canvas.toDataURL()")
            for i in range(3, 5):
                await broker.publish("jobs", b"job %d" % i)
            await broker.publish("jobs", b"poison")
            await expect(chart).to_have_attribute("data-last", "6")
            assert await chart.locator("canvas").evaluate("c => c.toDataURL()") != drawn
            await expect(page.locator('.tile [data-field="depth"]')).to_have_text("6")

            await dead_letter_the_poison(broker)
            dead = page.locator('.tile [data-field="dead_letters"]')
            await expect(dead).to_have_text("1")
            letters = page.locator('[data-section="dead-letters"] tr[data-offset]')
            await expect(letters).to_have_count(1)
            await expect(letters.locator('[data-field="reason"]')).to_have_text(REASON)
            await expect(letters).to_contain_text("poison")
            await expect(page.locator('.tile [data-field="depth"]')).to_have_text("5")
            await screenshot(page, "dashboard-queue.png")

            await redrive_asks_first_and_filters(page, letters)
            await expect(page.locator('[data-section="dead-letters"] [data-empty]')).to_be_visible()
            await expect(dead).to_have_text("0")
            await expect(page.locator('.tile [data-field="depth"]')).to_have_text("6")
            assert (await broker.stats("jobs")).dead_letters == 0

            await page.click("header .brand")
            await expect(depth).to_have_text("6")
            await roosts_own_subscriptions_are_not_listed(page)
            await screenshot(page, "dashboard-overview.png")
            await a_consumer_group_s_lag_per_partition(broker, page)
            assert await page.evaluate("window.stillTheSamePage") is True, "no reload"
            assert errors == [], "the page's scripts ran without an error"

            await page.click("#logout")
            await expect(page).to_have_url(re.compile(r"/login$"))
            await page.goto(server.admin_url + "/")
            await expect(page).to_have_url(re.compile(r"/login$"))  # the session ended

    asyncio.run(body())


async def redrive_asks_first_and_filters(page: Page, letters: Locator) -> None:
    """The redrive button asks first (cancel moves nothing), and its filter is applied."""
    await expect(page.locator('[data-field="dead-letters-shown"]')).to_have_text("1\u20131 of 1")
    await expect(page.locator('[data-action="dead-letters-next"]')).to_be_hidden()  # one page
    await expect(page.locator('[data-action="dead-letters-previous"]')).to_be_hidden()
    await page.click('[data-action="redrive"]')  # asks first, and offers the filter
    form = page.locator('[data-section="redrive-form"]')
    await expect(form).to_be_visible()
    await expect(form.locator('[data-field="redrive-question"]')).to_have_text(
        "Move 1 dead letters (or those matching) back to jobs, at most 100 a second?"
    )
    await page.click('[data-action="redrive-cancel"]')
    await expect(form).to_be_hidden()
    await expect(letters).to_have_count(1)  # cancelled: nothing moved
    await page.click('[data-action="redrive"]')
    await form.locator('[data-field="redrive-error"]').fill("no such error")
    await page.click('[data-action="redrive-confirm"]')
    await expect(page.locator('[data-field="redrive-note"]')).to_have_text(
        "moved 0 back to jobs"
    )  # the filter matched nothing
    await expect(letters).to_have_count(1)
    await page.click('[data-action="redrive"]')
    await form.locator('[data-field="redrive-error"]').fill("mailbox")
    await page.click('[data-action="redrive-confirm"]')
    await expect(page.locator('[data-field="redrive-note"]')).to_have_text("moved 1 back to jobs")


async def roosts_own_subscriptions_are_not_listed(page: Page) -> None:
    """The redrive's own subscription on jobs.dlq is Roost's, not a queue to list."""
    await expect(page.locator('tr[data-key="jobs.dlq/roost-redrive"]')).to_have_count(0)
    await expect(page.locator("p[data-empty]")).to_be_hidden()


async def a_consumer_group_s_lag_per_partition(broker: roost.Client, page: Page) -> None:
    await broker.create_topic("orders", partitions=2)
    await broker.create_subscription("orders", "analytics", mode="stream", start="earliest")
    for i in range(5):
        await broker.publish("orders", b"order %d" % i, partition=i % 2)
    await page.click('tr[data-key="orders"] a')
    group = page.locator('[data-group="analytics"]')
    await expect(group.locator('tr[data-partition="0"] [data-field="lag"]')).to_have_text("3")
    await expect(group.locator('tr[data-partition="1"] [data-field="lag"]')).to_have_text("2")
    member = await broker.join("orders", "analytics", client="test")
    fetched: list[Message] = []
    while len(fetched) < 5:
        fetched += await member.fetch(max_records=10)
    await member.commit()
    await expect(group.locator('[data-field="lag"]')).to_have_text(["0", "0"])
    await expect(group).to_contain_text(member.member_id)
    await member.leave()


async def dead_letter_the_poison(broker: roost.Client) -> None:
    """Fail ``poison`` twice (max_deliveries=2); every other job goes back with one delivery."""
    held = await broker.receive("jobs", max_messages=10, wait=1)
    [poison] = [m for m in held if m.value == b"poison"]
    await poison.nack(delay=0, error=REASON)
    [again] = await broker.receive("jobs", max_messages=10, wait=1)
    assert (again.value, again.delivery_count) == (b"poison", 2)
    await again.nack(delay=0, error=REASON)  # the last delivery: dead-lettered
    for message in held:
        if message is not poison:
            await message.nack(delay=0)


def test_without_chromium_ci_fails_and_a_developer_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install"):
        require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-chromium is missing"):
        require_chromium()
