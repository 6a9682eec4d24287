"""Authentication on the native protocol, end to end: a real host served on 127.0.0.1 in this
process, ``roost.connect`` and raw clients speaking frames.

What is pinned here:

- SCRAM-SHA-256 succeeds with the right password, and a wrong password and an unknown user
  fail with the same error; the connection holds the authenticated principal.
- Tokens: accepted; expired (by the injected clock) and revoked ones refused alike.
- Who must authenticate: everyone when users exist; nobody on a loopback listener without
  users (served as ``anonymous``); without users on another address, refused unless
  ``allow_anonymous``. A version-3 client of a broker that requires auth is told to upgrade.
- A SCRAM client-final replayed on a new connection fails; requests before ``AUTH_OK`` are a
  protocol error.
- Limits: ``max_connections_per_user``, ``handshake_timeout_ms`` and the delay before a failed
  login is answered, driven by an injected sleep (nothing here sleeps).
- A reconnecting client whose password no longer works gets ``NotAuthenticated`` at once.
- Hostile bytes in the exchange close that connection only; the broker serves the next client.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import scramp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import roost
from roost.client.network import NetworkBackend
from roost.errors import ConnectionLost, NotAuthenticated, ProtocolError, Unavailable
from roost.protocols.native import messages as m
from roost.protocols.native.codec import HEADER, Frame, Kind, encode
from tests.e2e.auth_support import PASSWORD, RawClient, serving

SCRAM = "SCRAM-SHA-256"
ADA = {"ada": PASSWORD}


def run(body):  # type: ignore[no-untyped-def]
    return asyncio.run(body())


async def list_as(url: str, **credentials: str) -> list[str]:
    async with roost.connect(url, reconnect=False, **credentials) as broker:
        return list(await broker.list_topics())


# -- SCRAM-SHA-256 ------------------------------------------------------------------------


def test_scram_with_the_right_password_opens_a_connection_that_acts_for_the_user(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            url = served.url("ada:correct%20horse")  # percent-decoded
            async with roost.connect(url, reconnect=False) as broker:
                await broker.create_topic("t")
                assert served.principals() == ["ada"]
                assert broker._backend.principal == "ada"  # what AUTH_OK said
            keywords = {"username": "ada", "password": PASSWORD}
            assert await list_as(served.url(), **keywords) == ["t"]

    run(body)


def test_a_wrong_password_and_an_unknown_user_fail_alike(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            errors = []
            for userinfo in ("ada:wrong%20horse", "nobody:wrong%20horse"):
                with pytest.raises(NotAuthenticated) as refused:
                    await list_as(served.url(userinfo))
                errors.append(str(refused.value))
            assert errors[0] == errors[1] == ("authentication failed: wrong user name or password")
            assert served.principals() == []

    with caplog.at_level(logging.WARNING, logger="roost.native"):
        run(body)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2
    assert "'ada'" in failures[0] and "'nobody'" in failures[1]
    assert "127.0.0.1" in failures[0]
    assert not any("wrong horse" in r.getMessage() for r in caplog.records), "no secret logged"


def test_unknown_users_get_a_salt_of_their_own(tmp_path: Path) -> None:
    """The server-first message shows the salt: two unknown names must not share one, or
    they would be told apart from users (who each have their own)."""

    async def server_first(port: int, name: str) -> str:
        client = scramp.ScramClient([SCRAM], name, "whatever-password")
        raw = await RawClient.open(port)
        await raw.hello()
        raw.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, client.get_client_first().encode())))
        challenge = await raw.receive()
        await raw.aclose()
        assert challenge is not None and isinstance(challenge.message, m.AuthChallenge)
        return dict(p.split("=", 1) for p in challenge.message.data.decode().split(","))["s"]

    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            salts = [await server_first(served.port, name) for name in ("x1", "x2", "x1")]
            assert salts[0] != salts[1], "unknown names share a salt"
            assert salts[0] == salts[2], "an unknown name's salt changes between tries"

    run(body)


def test_a_replayed_scram_handshake_fails(tmp_path: Path) -> None:
    """A client-final recorded from a successful exchange, sent again on a new connection
    after the same client-first: the server's nonce is new, so the proof is worthless."""

    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            client = scramp.ScramClient([SCRAM], "ada", PASSWORD)
            first = client.get_client_first().encode()
            raw = await RawClient.open(served.port)
            await raw.hello()
            raw.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, first)))
            challenge = await raw.receive()
            assert challenge is not None and isinstance(challenge.message, m.AuthChallenge)
            client.set_server_first(challenge.message.data.decode())
            final = client.get_client_final().encode()
            raw.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, final)))
            ok = await raw.receive()
            assert ok is not None and ok.message == m.AuthOk("ada", ok.message.data)
            client.set_server_final(ok.message.data.decode())  # the server proved itself
            await raw.aclose()

            replay = await RawClient.open(served.port)
            await replay.hello()
            replay.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, first)))
            again = await replay.receive()
            assert again is not None and again.message != challenge.message  # a fresh nonce
            replay.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, final)))
            refused = await replay.receive()
            assert refused is not None and refused.kind is Kind.FAILURE
            assert refused.message.code == "not_authenticated"  # type: ignore[attr-defined]
            assert await replay.closed()

    run(body)


# -- tokens -------------------------------------------------------------------------------


def test_a_token_authenticates_until_it_expires_or_is_revoked(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            identities = served.host.identities
            expiring = identities.create_token("ada", expires_ms=served.clock.now_ms() + 60_000)
            revoked = identities.create_token("ada")
            assert await list_as(served.url(), token=expiring.secret) == []
            assert await list_as(served.url(f":{revoked.secret}")) == []  # in the URL

            served.clock.advance(60_000)
            identities.revoke_token(revoked.id)
            for secret in (expiring.secret, revoked.secret, "rst_0000_not-a-token"):
                with pytest.raises(NotAuthenticated, match="invalid, expired or revoked token"):
                    await list_as(served.url(), token=secret)

    run(body)


# -- who must authenticate ----------------------------------------------------------------


def test_no_credentials_when_users_exist_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            with pytest.raises(NotAuthenticated, match="requires authentication"):
                await list_as(served.url())
            # A client that tries anyway: its request before AUTH_OK breaks the protocol.
            raw = await RawClient.open(served.port)
            welcome = await raw.hello()
            assert welcome is not None and welcome.message == m.Welcome(
                4, welcome.message.server, welcome.message.max_frame_bytes,  # type: ignore[attr-defined]
                welcome.message.heartbeat_ms, True, [SCRAM, "TOKEN"],  # type: ignore[attr-defined]
            )  # fmt: skip
            raw.send_bytes(encode(Frame(Kind.REQUEST, 1, m.ListTopics())))
            refused = await raw.receive()
            assert refused is not None and refused.kind is Kind.FAILURE
            assert refused.message.code == "protocol_error"  # type: ignore[attr-defined]
            assert await raw.closed()
            assert served.host.listeners["native"].protocol_errors == 1

    run(body)


def test_without_users_a_loopback_listener_serves_anonymously(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path) as served:
            async with roost.connect(served.url(), reconnect=False) as broker:
                await broker.create_topic("t")
                assert served.principals() == ["anonymous"]
                assert broker._backend.principal is None  # nothing was asked
            # Credentials given to a broker that asks for none are not checked (it has no
            # users to check them against).
            assert await list_as(served.url("ada:whatever")) == ["t"]

    run(body)


@pytest.mark.parametrize("allow_anonymous", [False, True])
def test_without_users_another_address_needs_allow_anonymous(
    tmp_path: Path, allow_anonymous: bool
) -> None:
    async def body() -> None:
        async with serving(tmp_path, address="0.0.0.0", allow_anonymous=allow_anonymous) as served:
            if allow_anonymous:
                assert await list_as(served.url()) == []
                return
            with pytest.raises(NotAuthenticated, match=r"no users.*allow_anonymous"):
                await list_as(served.url())

    run(body)


def test_a_version_3_client_of_a_broker_that_requires_auth_is_told_to_upgrade(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            raw = await RawClient.open(served.port)
            refused = await raw.hello(versions=[3, 2, 1])
            assert refused is not None and refused.kind is Kind.FAILURE
            failure = refused.message
            assert isinstance(failure, m.Failure)
            assert failure.code == "not_authenticated"
            assert "protocol version 4" in failure.message and "upgrade" in failure.message
            assert await raw.closed()

        async with serving(tmp_path / "open") as served:  # no users: a v3 client is served
            raw = await RawClient.open(served.port)
            welcome = await raw.hello(versions=[3])
            assert welcome is not None and welcome.kind is Kind.WELCOME
            assert welcome.message.version == 3  # type: ignore[attr-defined]
            await raw.aclose()

    run(body)


# -- limits -------------------------------------------------------------------------------


def test_a_user_past_max_connections_per_user_is_refused_naming_the_limit(tmp_path: Path) -> None:
    async def body() -> None:
        users = {"ada": PASSWORD, "bob": PASSWORD}
        async with serving(tmp_path, users, max_connections_per_user=2) as served:
            url = served.url("ada:correct%20horse")
            first = await roost.connect(url, reconnect=False)
            second = await roost.connect(url, reconnect=False)
            with pytest.raises(Unavailable, match="max_connections_per_user=2"):
                await roost.connect(url, reconnect=False)
            assert await list_as(served.url("bob:correct%20horse")) == []  # another user
            await first.aclose()
            await asyncio.wait_for(_until(lambda: served.principals() == ["ada"]), 5)
            third = await roost.connect(url, reconnect=False)  # room again
            await asyncio.wait_for(_until(lambda: served.principals() == ["ada", "ada"]), 5)
            await second.aclose()
            await third.aclose()

    run(body)


async def _until(condition) -> None:  # type: ignore[no-untyped-def]
    while not condition():
        await asyncio.sleep(0)


@pytest.mark.parametrize("stop_after", ["connect", "hello", "auth"])
def test_a_handshake_not_finished_in_time_is_closed(tmp_path: Path, stop_after: str) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA, handshake_timeout_ms=250) as served:
            raw = await RawClient.open(served.port)
            if stop_after != "connect":
                await raw.hello()
            if stop_after == "auth":
                client = scramp.ScramClient([SCRAM], "ada", PASSWORD)
                raw.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, client.get_client_first().encode())))
                assert (await raw.receive()).kind is Kind.AUTH_CHALLENGE  # type: ignore[union-attr]
            await served.sleeps.until(0.25)
            assert served.sleeps.fire(0.25) == 1
            if stop_after == "connect":  # before HELLO the client's codec takes no FAILURE
                with pytest.raises(ProtocolError, match="FAILURE"):
                    await raw.receive()
                await raw.aclose()
            else:
                timed_out = await raw.receive()
                assert timed_out is not None and isinstance(timed_out.message, m.Failure)
                assert "handshake_timeout_ms=250" in timed_out.message.message
                assert await raw.closed()
            await asyncio.wait_for(_until(lambda: not served.listener.connections), 5)
            assert served.host.listeners["native"].timed_out == 1
            assert await list_as(served.url("ada:correct%20horse")) == []

    run(body)


def test_a_finished_handshake_is_not_closed_by_its_time_limit(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA, handshake_timeout_ms=250) as served:
            broker = await roost.connect(served.url("ada:correct%20horse"), reconnect=False)
            try:
                await asyncio.wait_for(_until(lambda: served.principals() == ["ada"]), 5)
                assert served.sleeps.fire(0.25) == 0  # the timer ended with the handshake
                assert await broker.list_topics() == []
            finally:
                await broker.aclose()

    run(body)


def test_a_failed_login_is_answered_only_after_the_delay(tmp_path: Path) -> None:
    """Nothing the client sends after its guess is read before the delay ends: a frame of
    garbage right after a wrong proof does not learn the outcome sooner."""

    async def body() -> None:
        async with serving(tmp_path, ADA, failed_auth_delay_s=1.0) as served:
            client = scramp.ScramClient([SCRAM], "ada", "wrong horse")
            raw = await RawClient.open(served.port)
            await raw.hello()
            raw.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, client.get_client_first().encode())))
            challenge = await raw.receive()
            client.set_server_first(challenge.message.data.decode())  # type: ignore[union-attr]
            raw.send(Frame(Kind.AUTH, 0, m.Auth(SCRAM, client.get_client_final().encode())))
            raw.send_bytes(HEADER.pack(5, 99, 0))  # garbage after the guess
            await served.sleeps.until(1.0)
            answer = asyncio.ensure_future(raw.receive())
            await asyncio.sleep(0)
            assert not answer.done()
            served.sleeps.fire(1.0)
            refused = await answer
            assert refused is not None and refused.message.code == "not_authenticated"  # type: ignore[attr-defined]
            assert await raw.closed()

            # The client's own connect waits the same way.
            connecting = asyncio.ensure_future(list_as(served.url("ada:wrong%20horse")))
            await served.sleeps.until(1.0)
            assert not connecting.done()
            served.sleeps.fire(1.0)
            with pytest.raises(NotAuthenticated):
                await connecting

    run(body)


# -- reconnecting ---------------------------------------------------------------------------


def test_a_reconnect_authenticates_again_and_a_refusal_is_not_retried(tmp_path: Path) -> None:
    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            attempts = 0
            connect = NetworkBackend.connect

            async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
                nonlocal attempts
                attempts += 1
                return await connect(*args, **kwargs)

            NetworkBackend.connect = counted  # type: ignore[method-assign]
            try:
                async with roost.connect(served.url("ada:correct%20horse")) as broker:
                    await broker.create_topic("t")
                    await _drop_connections(served)
                    assert await broker.list_topics() == ["t"]  # again
                    assert attempts == 2 and served.principals() == ["ada"]

                    served.host.identities.set_password("ada", "another horse")
                    await _drop_connections(served)
                    with pytest.raises(NotAuthenticated):
                        await asyncio.wait_for(broker.list_topics(), 5)
                    assert attempts == 3, "a refused password is not tried again"
                    with pytest.raises((NotAuthenticated, ConnectionLost)):
                        await broker.create_topic("u")
            finally:
                NetworkBackend.connect = connect  # type: ignore[method-assign]

    run(body)


async def _drop_connections(served) -> None:  # type: ignore[no-untyped-def]
    await asyncio.gather(*(c.finish(0) for c in list(served.listener.connections)))
    await asyncio.wait_for(_until(lambda: not served.listener.connections), 5)


# -- hostile input ------------------------------------------------------------------------

#: What a hostile client sends once the WELCOME asked it to authenticate.
HOSTILE = st.one_of(
    st.binary(min_size=1, max_size=300),  # noise
    st.builds(  # AUTH frames of any mechanism and data, several in a row
        lambda auths: b"".join(encode(Frame(Kind.AUTH, 0, a)) for a in auths),
        st.lists(
            st.builds(
                m.Auth,
                st.sampled_from([SCRAM, "TOKEN", "EXTERNAL", "PLAIN", ""]) | st.text(max_size=8),
                st.binary(max_size=200)
                | st.text(max_size=80).map(str.encode)
                | st.just(b"n,,n=ada,r=abc")
                | st.just(b"c=biws,r=abc,p=AAAA"),
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    st.sampled_from(  # frames out of turn
        [
            encode(Frame(Kind.AUTH_OK, 0, m.AuthOk("ada"))),
            encode(Frame(Kind.HELLO, 0, m.Hello([4]))),
            encode(Frame(Kind.PING, 0, m.Empty())),
            HEADER.pack(2**31, Kind.AUTH, 0),
        ]
    ),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attacks=st.lists(HOSTILE, min_size=1, max_size=4))
def test_garbage_in_the_auth_exchange_closes_only_that_connection(
    tmp_path_factory: pytest.TempPathFactory, attacks: list[bytes]
) -> None:
    tmp_path = tmp_path_factory.mktemp("fuzz")

    async def attack(port: int, payload: bytes) -> None:
        raw = await RawClient.open(port)
        await raw.hello()
        raw.send_bytes(payload)
        raw.end()  # and nothing more: a valid prefix (half an exchange) ends there too
        try:
            while (frame := await raw.receive()) is not None:
                # Never opened by garbage: only a challenge, or the failure that ends it.
                assert frame.kind in (Kind.AUTH_CHALLENGE, Kind.FAILURE), frame
        except ProtocolError:
            pass  # our codec refused a frame after the bytes it never sent: still closed
        await raw.aclose()

    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            good = await roost.connect(served.url("ada:correct%20horse"), reconnect=False)
            try:
                for payload in attacks:
                    await attack(served.port, payload)
                    assert await good.list_topics() == []
                    assert served.principals() == ["ada"], "no attacker got a principal"
            finally:
                await good.aclose()

    run(body)


def test_an_address_that_guessed_too_often_is_refused_unchecked(tmp_path: Path) -> None:
    """Guessing on many connections at once is not slowed by a delay per connection: past
    the limit of failures within the window, the address is refused at once, even with the
    right password, until the window has passed."""

    async def body() -> None:
        async with serving(tmp_path, ADA) as served:
            served.host.failed_logins.limit = 3
            for _ in range(3):
                with pytest.raises(NotAuthenticated, match="wrong user name or password"):
                    await list_as(served.url("ada:wrong%20horse"))
            with pytest.raises(NotAuthenticated, match="too many failed logins"):
                await list_as(served.url(f"ada:{PASSWORD.replace(' ', '%20')}"))
            served.clock.advance(served.host.failed_logins.window_ms)
            assert await list_as(served.url(f"ada:{PASSWORD.replace(' ', '%20')}")) == []

    run(body)
