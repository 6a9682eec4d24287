"""The dashboard's live feed and its routes: one reading per tick for every browser, a feed that
runs only while someone listens, server-sent events over the real ASGI app.

The ticks are driven by the test (``Ticks``) and the host runs on a driven clock: nothing waits
for time to pass. Each stream is read a bounded number of events, then left.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest

from roost.admin.app import build_app
from roost.admin.config import AdminConfig
from roost.admin.dashboard import STATIC, Dashboard
from roost.admin.dashboard.feed import PREAMBLE, QUEUED_EVENTS, Feed
from roost.admin.metrics import host_registry
from roost.admin.server import GRACE_S, AdminServer
from roost.clock import ManualClock
from roost.core.publishing import Outgoing
from roost.core.readings import Reading, read_broker
from roost.server.access import Grant
from roost.server.host import Host
from tests.metrics_support import scrape, value

#: A safety net for a test that would otherwise hang on a bug; nothing waits this long.
PATIENCE_S = 10


class Ticks:
    """A feed's ``tick`` that returns when the test says so."""

    def __init__(self) -> None:
        self._released: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self) -> None:
        await self._released.get()

    def release(self) -> None:
        self._released.put_nowait(None)


class Browser:
    """One request for the event stream, on the ASGI app itself: what a browser's EventSource
    does, with a disconnect (``leave``) the way uvicorn reports it."""

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        path: str = "/dashboard/events",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ):
        self.start: dict[str, Any] = {}
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._left = asyncio.Event()
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost"), *headers], "server": ("localhost", 80),
            "client": ("127.0.0.1", 5000),
        }  # fmt: skip
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        await self._left.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif message.get("body"):
            await self._chunks.put(message["body"])

    async def chunk(self) -> bytes:
        return await asyncio.wait_for(self._chunks.get(), PATIENCE_S)

    async def snapshot(self) -> dict[str, Any]:
        """The next snapshot event, decoded."""
        chunk = await self.chunk()
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk
        assert chunk.count(b"\n") == 2, "one data line per event"
        snapshot: dict[str, Any] = json.loads(chunk[len(b"data: ") :])
        return snapshot

    async def leave(self) -> None:
        self._left.set()
        await asyncio.wait_for(self.task, PATIENCE_S)


def depth(snapshot: dict[str, Any], queue: str) -> int:
    [line] = [s for s in snapshot["subscriptions"] if s["stats"]["subscription"] == queue]
    found: int = line["stats"]["depth"]
    return found


def run(data_dir: str, clock: ManualClock, body: Callable[[Host], Awaitable[None]]) -> None:
    async def main() -> None:
        host = await Host.start(data_dir, clock)
        try:
            await body(host)
        finally:
            await host.aclose()

    asyncio.run(main())


# -- the feed ----------------------------------------------------------------------------------


def test_one_reading_per_tick_for_every_listener(data_dir: str, clock: ManualClock) -> None:
    async def body(host: Host) -> None:
        readings: list[Reading] = []

        def read() -> Reading:
            readings.append(read_broker(host._broker))
            return readings[-1]

        ticks = Ticks()
        feed = Feed(read, ticks)
        assert not feed.running, "nobody listens: nothing runs"
        first, second = feed.events(), feed.events()
        assert await anext(first) == PREAMBLE
        assert feed.running
        opened = await anext(first)
        assert json.loads(opened[len(b"data: ") :])["interval_ms"] is None, "no rates yet"
        assert await anext(second) == PREAMBLE
        assert await anext(second) == opened, "a listener joining gets the latest event at once"
        assert len(readings) == 1

        clock.advance(1_000)
        ticks.release()
        a, b = await anext(first), await anext(second)
        assert a == b
        assert json.loads(a[len(b"data: ") :])["interval_ms"] == 1_000
        assert len(readings) == 2, "two listeners, one reading per tick"

        await first.aclose()
        assert feed.running, "one listener left"
        await second.aclose()
        assert not feed.running, "the last one left: the feed stopped"
        await feed.aclose()

    run(data_dir, clock, body)


def test_a_slow_listener_loses_the_oldest_events(data_dir: str, clock: ManualClock) -> None:
    async def body(host: Host) -> None:
        ticks = Ticks()
        count = 0

        def read() -> Reading:
            nonlocal count
            count += 1
            clock.advance(1_000)
            return read_broker(host._broker)

        feed = Feed(read, ticks)
        slow = feed.events()
        assert await anext(slow) == PREAMBLE
        for _ in range(QUEUED_EVENTS + 5):
            ticks.release()
        while count < QUEUED_EVENTS + 6:  # the first reading, then one per tick
            await asyncio.sleep(0)  # let the feed's task run: a turn of the loop, no time
        events = [json.loads((await anext(slow))[6:]) for _ in range(QUEUED_EVENTS)]
        times = [e["at_ms"] for e in events]
        assert times == sorted(times) and times[-1] == clock.now_ms(), "the newest are kept"
        await slow.aclose()
        await feed.aclose()

    run(data_dir, clock, body)


def test_closing_ends_every_stream(data_dir: str, clock: ManualClock) -> None:
    async def body(host: Host) -> None:
        feed = Feed(lambda: read_broker(host._broker), Ticks())
        stream = feed.events()
        await anext(stream)
        await anext(stream)
        await feed.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert not feed.running
        assert [e async for e in feed.events()] == [], "a closed feed streams nothing"

    run(data_dir, clock, body)


def test_a_failing_reading_is_logged_and_ends_the_streams(
    data_dir: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(host: Host) -> None:
        calls = 0

        def read() -> Reading:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("a bug")
            return read_broker(host._broker)

        ticks = Ticks()
        feed = Feed(read, ticks)
        stream = feed.events()
        await anext(stream)
        await anext(stream)
        ticks.release()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert "could not read the broker" in caplog.text
        again = feed.events()
        await anext(again)
        assert json.loads((await anext(again))[6:])["interval_ms"] is None, "a fresh start"
        await again.aclose()
        await feed.aclose()

    with caplog.at_level(logging.ERROR, "roost.admin"):
        run(data_dir, clock, body)


# -- the routes --------------------------------------------------------------------------------


def test_the_event_stream_carries_the_numbers_of_roost_stats_and_metrics(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(host: Host) -> None:
        ticks = Ticks()
        dashboard = Dashboard(host, ticks)
        app = build_app(host, dashboard.routes)
        host._broker.create_queue("jobs", durability="never", max_deliveries=1)

        browser = Browser(app)
        assert await browser.chunk() == PREAMBLE
        headers = dict(browser.start["headers"])
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert headers[b"cache-control"] == b"no-store"
        assert depth(await browser.snapshot(), "jobs") == 0

        await host.publish("jobs", [Outgoing(value=b"x")] * 3)
        clock.advance(500)
        ticks.release()
        live = await browser.snapshot()
        [line] = live["subscriptions"]
        assert line["stats"] == msgspec.to_builtins(host._broker.stats("jobs", "jobs"))
        assert depth(live, "jobs") == host._broker.stats("jobs", "jobs").depth == 3  # type: ignore[union-attr]
        metrics = scrape(host_registry(host))
        assert value(metrics, "roost_subscription_depth", topic="jobs", subscription="jobs",
                     partition=0) == 3  # fmt: skip
        assert line["rates"]["published"] == 6.0, "3 records in 0.5 s"

        await browser.leave()
        assert not dashboard.feed.running, "the browser left: the feed stopped"
        await dashboard.aclose()

    run(data_dir, clock, body)


def test_the_page_and_its_files_are_served_from_the_package(
    data_dir: str, clock: ManualClock
) -> None:
    async def body(host: Host) -> None:
        dashboard = Dashboard(host, Ticks())
        transport = httpx.ASGITransport(app=build_app(host, dashboard.routes))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert page.text == (STATIC / "index.html").read_text()
            for path in ("app.js", "style.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
                served = await http.get("/dashboard/static/" + path)
                assert served.status_code == 200, path
                assert served.content == (STATIC / path).read_bytes()
            assert "http://" not in page.text and "https://" not in page.text, "nothing remote"
            missing = await http.get("/dashboard/static/nope.js")
            assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
            assert (await http.get("/api/v1/topics")).json() == [], "the API keeps its paths"
        await dashboard.aclose()

    run(data_dir, clock, body)


def test_closing_the_admin_server_ends_open_event_streams_cleanly(
    data_dir: str, clock: ManualClock
) -> None:
    """uvicorn waits for responses in flight; an event stream never finishes by itself, so
    the dashboard's ``aclose`` runs first and each stream ends as a complete response."""

    async def body(host: Host) -> None:
        dashboard = Dashboard(host, Ticks())
        admin = await AdminServer.start(
            host, "127.0.0.1", 0, dashboard.routes, closing=[dashboard.aclose]
        )
        listen, port = admin.address
        async with (
            httpx.AsyncClient(base_url=f"http://{listen}:{port}") as http,
            http.stream("GET", "/dashboard/events") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            chunks = stream.aiter_raw()
            assert await anext(chunks) == PREAMBLE
            assert (await anext(chunks)).startswith(b"data: {")
            # Within the grace period: uvicorn did not have to give up on the stream.
            await asyncio.wait_for(admin.aclose(), GRACE_S - 1)
            assert [chunk async for chunk in chunks] == [], "the response ended, complete"
        assert not dashboard.feed.running

    run(data_dir, clock, body)


def test_a_viewer_who_loses_monitor_loses_the_stream(data_dir: str, clock: ManualClock) -> None:
    """The gate checks ``monitor`` when the stream opens; the stream checks it again before
    each event, so a revoked grant (or a deleted user, a logout) ends a stream already open."""

    async def body(host: Host) -> None:
        host.identities.add_user("mo", "a long password")
        host.identities.grant("mo", Grant("monitor"))
        token = host.identities.create_token("mo").secret
        ticks = Ticks()
        dashboard = Dashboard(host, ticks)
        app = build_app(host, dashboard.routes, AdminConfig(failed_login_delay_ms=0))
        browser = Browser(app, headers=((b"authorization", f"Bearer {token}".encode()),))
        assert await browser.chunk() == PREAMBLE
        ticks.release()
        await browser.snapshot()
        host.identities.revoke("mo", Grant("monitor"))
        ticks.release()
        await asyncio.wait_for(browser.task, PATIENCE_S)  # the response finished by itself
        assert browser.start["status"] == 200
        await dashboard.aclose()

    run(data_dir, clock, body)
