"""``roost serve`` answers the HTTP admin API from its own process and loop, beside the
native protocol, and closes both on SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import roost
from tests.e2e.browser import add_user
from tests.e2e.test_serve import Server


def test_admin_api_beside_the_native_protocol(server: Server) -> None:
    async def create() -> None:
        async with roost.connect(server.url) as broker:
            await broker.create_topic("orders", partitions=2)
            await broker.publish("orders", b"hello", partition=1)

    assert server.admin_url.startswith("http://127.0.0.1:")
    asyncio.run(create())
    with httpx.Client(base_url=server.admin_url) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}
        [topic] = http.get("/api/v1/topics").json()
        assert (topic["name"], len(topic["partitions"])) == ("orders", 2)
        [message] = http.get("/api/v1/topics/orders/messages?partition=1").json()
        assert message["value_text"] == "hello"
        missing = http.get("/api/v1/topics/nope")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_topic")
        assert http.get("/openapi.json").json()["openapi"].startswith("3.")
        scrape = http.get("/metrics")
        assert scrape.headers["content-type"].startswith("text/plain")
        published = [
            line for line in scrape.text.splitlines()
            if line.startswith("roost_partition_published_total{") and 'topic="orders"' in line
        ]  # fmt: skip
        assert sorted(line.rsplit(" ", 1)[1] for line in published) == ["0.0", "1.0"]
    assert server.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.admin_url + "/healthz")


def test_the_admin_api_can_be_turned_off(tmp_path: Path) -> None:
    from roost.server.serve import settings

    assert settings(None, {"ROOST_ADMIN": "false"}, {}).admin is False
    assert settings(None, {"ROOST_ADMIN_PORT": "9"}, {"admin_port": 0}).admin_port == 0
    config = tmp_path / "roost.toml"
    config.write_text('[server]\nadmin = false\nadmin_listen = "0.0.0.0"\n')
    loaded = settings(str(config), {}, {"admin": True})
    assert (loaded.admin, loaded.admin_listen) == (True, "0.0.0.0")


def test_once_the_data_directory_has_a_user_the_admin_api_asks_who_is_asking(
    tmp_path: Path,
) -> None:
    add_user(tmp_path / "data", "ada", "correct horse battery")
    server = Server(tmp_path / "data")
    try:
        with httpx.Client(base_url=server.admin_url) as http:
            refused = http.get("/api/v1/topics")
            assert (refused.status_code, refused.headers["www-authenticate"]) == (
                401, 'Bearer realm="roost"'
            )  # fmt: skip
            assert http.get("/api/v1/topics", auth=("ada", "correct horse battery")).json() == []
            assert http.get("/healthz").status_code == 200, "probes need no credentials"
            assert http.get("/metrics").status_code == 200, "open unless metrics_auth"
            # Over a real socket the listener's own address and port are what Host must say.
            port = server.admin_url.rsplit(":", 1)[1]
            for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
                assert http.get("/healthz", headers={"host": host}).status_code == 200
            for host in ("rebound.example:" + port, "localhost:1"):
                assert http.get("/healthz", headers={"host": host}).status_code == 403
    finally:
        assert server.stop() == 0
