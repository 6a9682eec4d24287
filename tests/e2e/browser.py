"""A real browser for the dashboard's tests: Playwright driving Debian's Chromium, headless;
and what a test needs to log in with it (a user in the data directory, the login form).

Playwright's own browser downloads are never used: it drives the system's ``chromium``
package, which ``.ci/run`` installs. Without it the browser tests are skipped with a reason on
a developer's machine, and fail in CI (``CI=true``), where a skip would hide a missing step.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from roost.server.host import Host

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that would reach the network or the user's profile on its own.
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 900}


def require_chromium() -> None:
    """Skip (a developer's machine) or fail (CI) when there is no Chromium to drive."""
    if CHROMIUM.exists():
        return
    missing = f"{CHROMIUM} is missing: apt-get install -y chromium (as .ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(missing)
    pytest.skip(missing)


@asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    """A fresh page in a headless Chromium that is closed on the way out, whatever happens."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            yield page
        finally:
            await browser.close()


def add_user(data_dir: Path, name: str, password: str) -> None:
    """An administrator ``name`` in ``data_dir``, before a server opens it: from then on the
    admin listener asks everyone who they are."""

    async def main() -> None:
        host = await Host.start(str(data_dir))
        try:
            host.identities.add_user(name, password, admin=True)
        finally:
            await host.aclose()

    asyncio.run(main())


async def log_in(page: Page, admin_url: str, name: str, password: str) -> None:
    """Open the dashboard, which sends the browser to the login page, and log in there."""
    await page.goto(admin_url + "/")
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.fill('input[name="username"]', name)
    await page.fill('input[name="password"]', password)
    await page.click('button[type="submit"]')
    await expect(page.locator("#user")).to_have_text(name)
