"""TLS on the native listener, a broker in this process: ``roosts://`` round trips on asyncio
and uvloop, refusals (an untrusted server, plaintext on the TLS port, a missing or foreign
client certificate), a client certificate naming a user, reconnects over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

import roost
from roost import Outgoing, sync
from roost.client.reconnect import ReconnectingBackend
from roost.errors import ConnectionClosed, NotAuthenticated
from roost.server.host import Host
from roost.server.native_server import NativeListener, close_native, serve_native
from roost.server.serve import Settings
from roost.server.tls import server_context
from tests.tls_support import Pki

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Callable[[], Awaitable[Any]]], Any]]:
    """Runs a test's body on an asyncio loop, then on a uvloop one (each has its own TLS)."""
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        yield lambda body: runner.run(body())


class Broker:
    def __init__(self, host: Host, listener: NativeListener) -> None:
        self.host = host
        self.listener = listener
        self.port: int = listener.sockets[0].getsockname()[1]
        self.url = f"roosts://127.0.0.1:{self.port}"

    def principals(self) -> list[str | None]:
        """The ``tls_principal`` of each open connection, by name."""
        return sorted(
            (c.tls_principal.name if c.tls_principal else None for c in self.listener.connections),
            key=str,
        )


@contextlib.asynccontextmanager
async def tls_broker(
    tmp_path: Path,
    pki: Pki,
    client_auth: str = "none",
    users: tuple[str, ...] = (),
    cert: tuple[str, str] | None = None,
) -> AsyncIterator[Broker]:
    """A broker serving TLS only with the test CA's certificate for 127.0.0.1 (or ``cert``),
    asking for client certificates as ``client_auth`` says, with ``users``."""
    host = await Host.start(str(tmp_path / "data"))
    for user in users:
        host.identities.add_user(user, "a long password")
    settings = Settings(
        tls_cert_file=cert[0] if cert else pki.server_cert,
        tls_key_file=cert[1] if cert else pki.server_key,
        tls_ca_file=None if client_auth == "none" else pki.ca_file,
        tls_client_auth=client_auth,
    )
    listener = await serve_native(host, "127.0.0.1", 0, ssl=server_context(settings))
    try:
        yield Broker(host, listener)
    finally:
        await close_native(listener)
        await host.aclose()


def test_a_round_trip_over_tls(
    run: Callable[..., Any], tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """Publish, receive, pushed deliveries and a value of megabytes (many TLS records, the
    reader paused and resumed) all go over TLS; hanging up cleanly logs nothing."""
    big = [bytes([i]) * 1_000_000 for i in range(3)]  # one 3 MB publish frame

    async def body() -> None:
        async with (
            tls_broker(tmp_path, pki) as broker,
            roost.connect(broker.url, ca_file=pki.ca_file) as client,
        ):
            await client.create_queue("q")
            await client.publish("q", b"hello")
            [message] = await client.receive("q", wait=5)
            assert message.value == b"hello"
            await message.ack()
            await client.publish_batch("q", [Outgoing(value=b"%d" % i) for i in range(500)])
            await client.publish_batch("q", [Outgoing(value=value) for value in big])
            seen: list[bytes] = []
            async with client.subscribe("q", prefetch=64) as deliveries:
                while len(seen) < 503:
                    batch = await deliveries.batch()
                    seen += [d.value for d in batch]
                    await deliveries.ack(batch)
            assert seen[:500] == [b"%d" % i for i in range(500)]
            assert seen[500:] == big

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(body)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_client_that_does_not_trust_the_server_is_refused(
    run: Callable[..., Any], tmp_path: Path, pki: Pki
) -> None:
    async def body() -> None:
        async with tls_broker(tmp_path, pki) as broker:
            for options in ({"ca_file": pki.other_ca_file}, {}):  # a CA of its own; the system's
                with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify"):
                    await roost.connect(broker.url, reconnect=False, **options)
            assert broker.listener.connections == set()

    run(body)


def test_the_server_certificate_must_name_the_host(
    run: Callable[..., Any], tmp_path: Path, pki: Pki
) -> None:
    """Hostname checking stays on: a certificate signed by a trusted CA, but for another
    name than the URL's, is refused."""
    cert, key = pki.client("broker.example")  # trusted, for broker.example alone

    async def body() -> None:
        async with tls_broker(tmp_path, pki, cert=(cert, key)) as broker:
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
                await roost.connect(broker.url, reconnect=False, ca_file=pki.ca_file)

    run(body)


def test_plaintext_on_the_tls_port_fails_cleanly_and_the_broker_serves_on(
    run: Callable[..., Any], tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with tls_broker(tmp_path, pki) as broker:
            with pytest.raises((ConnectionClosed, ConnectionError)):
                await roost.connect(f"roost://127.0.0.1:{broker.port}", reconnect=False)
            reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 10) == b"", "closed, nothing said"
            writer.close()
            async with roost.connect(broker.url, ca_file=pki.ca_file) as client:
                assert await client.list_topics() == []
            stats = broker.host.listeners["native"]
            assert (stats.accepted, stats.protocol_errors) == (1, 0), "only the TLS client"

    with caplog.at_level(logging.INFO):
        run(body)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_required_client_certificate_missing_or_foreign_is_refused(
    run: Callable[..., Any], tmp_path: Path, pki: Pki
) -> None:
    ada = pki.client("ada")
    foreign = pki.client("ada", other_ca=True)  # the right name, from a CA nobody trusts

    async def body() -> None:
        async with tls_broker(tmp_path, pki, "required", users=("ada",)) as broker:
            # TLS 1.3: the server checks the certificate once the client has sent HELLO; it
            # then hangs up without a TLS alert (CPython gh-98078): the client says what that
            # means.
            for options in ({}, {"cert_file": foreign[0], "key_file": foreign[1]}):
                with pytest.raises(ssl.SSLError, match="requires a client certificate"):
                    await roost.connect(broker.url, reconnect=False, ca_file=pki.ca_file, **options)
            assert broker.host.listeners["native"].accepted == 0
            async with roost.connect(
                broker.url, ca_file=pki.ca_file, cert_file=ada[0], key_file=ada[1]
            ) as client:
                assert await client.list_topics() == []
                assert broker.principals() == ["ada"]

    run(body)


def test_a_client_certificate_names_its_user(
    run: Callable[..., Any], tmp_path: Path, pki: Pki
) -> None:
    """Under ``optional`` a client with a certificate is the user its CN names, if there is
    one, and logs in as that user with ``EXTERNAL``; a client without one, or naming nobody,
    holds no TLS principal and, the broker having users, must log in some other way."""
    ada, nobody = pki.client("ada"), pki.client("nobody")

    async def body() -> None:
        async with tls_broker(tmp_path, pki, "optional", users=("ada", "bob")) as broker:
            opening = roost.connect(
                broker.url, ca_file=pki.ca_file, cert_file=ada[0], key_file=ada[1]
            )
            async with opening as client:
                await client.list_topics()  # connected and served: its connection is open
                assert broker.principals() == ["ada"]
                [connection] = [c for c in broker.listener.connections if c.tls_principal]
                assert connection.tls_principal is broker.host.identities.principal("ada")
            for others in ({}, {"cert_file": nobody[0], "key_file": nobody[1]}):
                with pytest.raises(NotAuthenticated):
                    await roost.connect(broker.url, ca_file=pki.ca_file, **others)

    run(body)


def test_the_reconnecting_client_reconnects_over_tls(
    run: Callable[..., Any], tmp_path: Path, pki: Pki
) -> None:
    async def body() -> None:
        async with tls_broker(tmp_path, pki) as broker:
            port = broker.port
            opening = roost.connect(broker.url, ca_file=pki.ca_file)
            async with opening as client:
                await client.create_topic("t")
                backend = client._backend
                assert isinstance(backend, ReconnectingBackend)
                await close_native(broker.listener)  # drops the connection
                tls = server_context(
                    Settings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
                )
                again = await serve_native(broker.host, "127.0.0.1", port, ssl=tls)
                try:
                    assert await client.list_topics() == ["t"]
                    assert backend.reconnects == 1
                finally:
                    await close_native(again)

    run(body)


def test_the_blocking_client_speaks_tls(tmp_path: Path, pki: Pki) -> None:
    with _broker_in_a_thread(tmp_path, pki) as url:
        with sync.connect(url, ca_file=pki.ca_file) as client:
            client.create_queue("q")
            client.publish("q", b"hello")
            [message] = client.receive("q", wait=5)
            assert message.value == b"hello"
            message.ack()
        with pytest.raises(ssl.SSLCertVerificationError):
            sync.connect(url, ca_file=pki.other_ca_file)


@contextlib.contextmanager
def _broker_in_a_thread(tmp_path: Path, pki: Pki) -> Iterator[str]:
    """A TLS broker on a loop in another thread (the blocking client blocks this one)."""
    loop = asyncio.new_event_loop()
    started: list[Any] = []
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        manager = tls_broker(tmp_path, pki)
        broker = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result(30)
        started.append(manager)
        yield broker.url
    finally:
        if started:
            exiting = manager.__aexit__(None, None, None)
            asyncio.run_coroutine_threadsafe(exiting, loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_tls_options_need_a_roosts_url(pki: Pki) -> None:
    with pytest.raises(ValueError, match="roosts://"):
        roost.connect("roost://127.0.0.1:7420", ca_file=pki.ca_file)
    with pytest.raises(ValueError, match="roosts://"):
        sync.connect("roost://127.0.0.1:7420", ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="not both"):
        roost.connect("roosts://x", ssl=ssl.create_default_context(), ca_file=pki.ca_file)
    with pytest.raises(ValueError, match="cert_file"):
        roost.connect("roosts://x", key_file=pki.server_key)
    with pytest.raises(FileNotFoundError, match=r"missing\.pem"):
        roost.connect("roosts://x", ca_file="missing.pem")
    with pytest.raises(ValueError, match=r"ca_file .* no PEM"):
        roost.connect("roosts://x", ca_file=pki.server_key)
    with pytest.raises(ValueError, match="not the key of cert_file"):
        roost.connect("roosts://x", cert_file=pki.server_cert, key_file=pki.client("k")[1])


def test_the_admin_listener_asks_for_the_same_client_certificates(tmp_path: Path, pki: Pki) -> None:
    """``required`` holds on the admin listener too: the same settings, the same context."""
    from roost.admin.server import AdminServer

    ada = pki.client("ada")
    settings = Settings(
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_ca_file=pki.ca_file,
        tls_client_auth="required",
    )

    async def body() -> None:
        host = await Host.start(str(tmp_path / "data"))
        admin = await AdminServer.start(host, "127.0.0.1", 0, ssl=server_context(settings))
        try:
            assert admin.url.startswith("https://127.0.0.1:")
            anonymous = ssl.create_default_context(cafile=pki.ca_file)
            async with httpx.AsyncClient(verify=anonymous, timeout=10) as http:
                with pytest.raises(httpx.TransportError):
                    await http.get(admin.url + "/healthz")
            with_cert = ssl.create_default_context(cafile=pki.ca_file)
            with_cert.load_cert_chain(*ada)
            async with httpx.AsyncClient(verify=with_cert, timeout=10) as http:
                assert (await http.get(admin.url + "/healthz")).json() == {"status": "ok"}
        finally:
            await admin.aclose()
            await host.aclose()

    asyncio.run(body())
