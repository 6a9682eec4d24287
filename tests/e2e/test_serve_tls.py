"""``roost serve`` with TLS, a real process: both listeners speak TLS only (``roosts://``,
``https://`` for the API, ``/metrics`` and the dashboard), the CLI reaches it, and TLS
settings it cannot serve with stop it at once with one line."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import roost
from roost.cli.main import main
from tests.e2e.test_serve import Server
from tests.tls_support import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Server]:
    """TLS from the ``[tls]`` table of a config file, client certificates optional."""
    root = tmp_path_factory.mktemp("serve-tls")
    config = root / "roost.toml"
    config.write_text(
        f"[tls]\ncert_file = {json.dumps(pki.server_cert)}\n"
        f"key_file = {json.dumps(pki.server_key)}\nca_file = {json.dumps(pki.ca_file)}\n"
        'client_auth = "optional"\n'
    )
    server = Server(root / "data", args=("--config", str(config)), scheme="roosts")
    yield server
    if server.process.poll() is None:
        server.stop()


def test_the_native_protocol_over_tls(tls_server: Server, pki: Pki) -> None:
    async def body() -> None:
        async with roost.connect(tls_server.url, ca_file=pki.ca_file) as broker:
            await broker.create_queue("tls-native")
            await broker.publish("tls-native", b"hello")
            [message] = await broker.receive("tls-native", wait=5)
            assert message.value == b"hello"
            await message.ack()
        with pytest.raises(ssl.SSLCertVerificationError):
            await roost.connect(tls_server.url, reconnect=False)  # the system's trust store

    asyncio.run(body())


def test_the_admin_api_metrics_and_dashboard_over_https(tls_server: Server, pki: Pki) -> None:
    assert tls_server.admin_url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=pki.ca_file)
    with httpx.Client(base_url=tls_server.admin_url, verify=trust, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert isinstance(http.get("/api/v1/topics").json(), list)
        assert http.get("/metrics").text.startswith("# HELP")
        page = http.get("/")
        assert page.headers["content-type"].startswith("text/html")
        with http.stream("GET", "/dashboard/events") as events:
            first = next(line for line in events.iter_lines() if line.startswith("data:"))
            assert "topics" in json.loads(first.removeprefix("data:"))
    plaintext = tls_server.admin_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):  # no plaintext on the TLS port
        httpx.get(plaintext + "/healthz", timeout=10)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_server.admin_url + "/healthz", timeout=10)  # the system's trust store


def test_the_cli_over_tls(tls_server: Server, pki: Pki) -> None:
    runner = CliRunner()
    listed = runner.invoke(
        main, ["--url", tls_server.url, "--ca-file", pki.ca_file, "topic", "list", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert isinstance(json.loads(listed.stdout), list)
    cert, key = pki.client("cli")
    environment = {
        "ROOST_URL": tls_server.url,
        "ROOST_CA_FILE": pki.ca_file,
        "ROOST_CERT_FILE": cert,
        "ROOST_KEY_FILE": key,
    }
    from_env = runner.invoke(main, ["topic", "list", "--json"], env=environment)
    assert from_env.exit_code == 0, from_env.output
    untrusted = runner.invoke(main, ["--url", tls_server.url, "topic", "list"])
    assert untrusted.exit_code == 1
    [line] = untrusted.stderr.splitlines()
    assert line.startswith(f"error: cannot reach the broker at {tls_server.url}: ")
    assert "certificate verify failed" in line


def _serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", "serve", "--data", str(tmp_path / "data"),
         "--port", "0", "--admin-port", "0", *flags],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_bad_tls_settings_stop_serve_with_one_line(tmp_path: Path, pki: Pki) -> None:
    missing = str(tmp_path / "missing.pem")
    cases = [
        (("--tls-cert-file", missing), "invalid tls_cert_file="),
        (
            ("--tls-cert-file", pki.server_cert, "--tls-key-file", pki.client("x")[1]),
            "invalid tls_key_file=",
        ),
        (
            ("--tls-cert-file", pki.server_cert, "--tls-key-file", pki.server_key,
             "--tls-client-auth", "required"),
            "invalid tls_client_auth='required': client certificates need tls_ca_file",
        ),
    ]  # fmt: skip
    for flags, message in cases:
        done = _serve(tmp_path, *flags)
        assert done.returncode == 1, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith(f"error: {message}"), line
        assert not (tmp_path / "data").exists(), "refused before opening anything"


def test_the_identity_commands_over_https(tls_server: Server, pki: Pki) -> None:
    """``roost user|token|acl`` reach an https admin API, trusting --ca-file (no users yet:
    the loopback broker serves its first administrator's creation anonymously)."""
    runner = CliRunner()
    common = ["--admin-url", tls_server.admin_url, "--ca-file", pki.ca_file]
    listed = runner.invoke(main, [*common, "user", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    untrusted = runner.invoke(main, ["--admin-url", tls_server.admin_url, "user", "list"])
    assert untrusted.exit_code == 1
    assert "certificate verify failed" in untrusted.stderr
