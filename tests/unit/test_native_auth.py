"""The authentication state machine without sockets (server/native_auth.py), and the client's
side of it (client/credentials.py), driven against each other.

What is pinned here:

- ``admission``: who must authenticate, for every combination of users, version, loopback
  and a TLS principal.
- ``Authentication``'s table: each mechanism's happy path, and every (step, mechanism) not
  in the table refused; after a refusal, everything is refused.
- ``UserConnections`` counts per user and leaves anonymous connections alone.
- ``Credentials`` from URLs (percent-decoded) and keywords; secrets never in a repr.
- The client refuses a broker that cannot prove it holds the user's keys, and one that asks
  for an iteration count out of bounds, before computing anything with it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from roost.client.credentials import (
    MAX_SCRAM_ITERATIONS,
    MIN_SCRAM_ITERATIONS,
    ClientAuthentication,
    Credentials,
)
from roost.clock import ManualClock
from roost.errors import NotAuthenticated
from roost.protocols.native import messages as m
from roost.server.access import ANONYMOUS, Principal
from roost.server.identities import Identities
from roost.server.native_auth import (
    EXTERNAL,
    MAX_AUTH_BYTES,
    SCRAM,
    TOKEN,
    Authenticated,
    Authentication,
    Challenge,
    UserConnections,
    admission,
)
from roost.storage import LocalEngine

PASSWORD = "correct horse"
ALL = [SCRAM, TOKEN, EXTERNAL]


@pytest.fixture
def identities(engine: LocalEngine, clock: ManualClock) -> Identities:
    identities = Identities(engine.metadata, clock)
    identities.add_user("ada", PASSWORD)
    return identities


@pytest.fixture
def nobody(engine: LocalEngine, clock: ManualClock) -> Identities:
    return Identities(engine.metadata, clock)


# -- admission ------------------------------------------------------------------------------


def test_with_users_everyone_authenticates(identities: Identities) -> None:
    assert admission(identities, 4, True, None) == (True, [SCRAM, TOKEN], None)
    tls = Principal("ada")
    assert admission(identities, 4, False, tls) == (True, [SCRAM, TOKEN, EXTERNAL], None)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_with_users_an_old_version_is_refused_with_the_way_out(
    identities: Identities, version: int
) -> None:
    with pytest.raises(NotAuthenticated, match=f"protocol version 4.*at most version {version}"):
        admission(identities, version, True, None)


@pytest.mark.parametrize("version", [1, 3, 4])
def test_without_users_anonymous_where_allowed_refused_elsewhere(
    nobody: Identities, version: int
) -> None:
    assert admission(nobody, version, True, None) == (False, [], ANONYMOUS)
    with pytest.raises(NotAuthenticated, match="no users"):
        admission(nobody, version, False, None)


# -- the exchange ---------------------------------------------------------------------------


def run_exchange(
    server: Authentication, client: ClientAuthentication
) -> tuple[Authenticated, list[str]]:
    """The client's messages to the server's answers until it authenticates; the steps."""
    steps = []
    auth = client.first()
    while True:
        steps.append(auth.mechanism)
        answer = server.receive(auth)
        if isinstance(answer, Authenticated):
            client.ok(m.AuthOk(answer.principal.name, answer.data))
            return answer, steps
        auth = client.challenge(answer.data)


def test_scram_takes_two_steps_and_proves_both_sides(identities: Identities) -> None:
    client = ClientAuthentication(Credentials("ada", PASSWORD), ALL)
    done, steps = run_exchange(Authentication(identities, ALL), client)
    assert done.principal.name == "ada"
    assert steps == [SCRAM, SCRAM]
    assert done.data.startswith(b"v=")  # the server's signature, checked by client.ok


@pytest.mark.parametrize("user", ["ada", "nobody"])
def test_scram_with_a_wrong_password_or_unknown_user(identities: Identities, user: str) -> None:
    server = Authentication(identities, ALL)
    client = ClientAuthentication(Credentials(user, "wrong horse"), ALL)
    challenge = server.receive(client.first())
    assert isinstance(challenge, Challenge)
    with pytest.raises(NotAuthenticated, match="wrong user name or password"):
        server.receive(client.challenge(challenge.data))
    assert server.user == user


def test_a_token(identities: Identities, clock: ManualClock) -> None:
    token = identities.create_token("ada", expires_ms=clock.now_ms() + 1000)
    client = ClientAuthentication(Credentials(token=token.secret), ALL)
    done, steps = run_exchange(Authentication(identities, ALL), client)
    assert (done.principal.name, steps) == ("ada", [TOKEN])
    clock.advance(1000)
    with pytest.raises(NotAuthenticated, match="expired"):
        Authentication(identities, ALL).receive(m.Auth(TOKEN, token.secret.encode()))


def test_external_takes_the_certificate_user_and_no_other(identities: Identities) -> None:
    tls = identities.principal("ada")
    done, _ = run_exchange(Authentication(identities, ALL, tls), ClientAuthentication(None, ALL))
    assert done.principal is tls
    assert Authentication(identities, ALL, tls).receive(m.Auth(EXTERNAL, b"ada")).principal is tls  # type: ignore[union-attr]
    with pytest.raises(NotAuthenticated, match="another user"):
        Authentication(identities, ALL, tls).receive(m.Auth(EXTERNAL, b"root"))


#: (first AUTH, second AUTH or None): sequences the table does not have.
OUT_OF_TABLE = {
    "not offered": (m.Auth(EXTERNAL), None),
    "unknown mechanism": (m.Auth("PLAIN", b"\0ada\0pw"), None),
    "token after scram-first": (m.Auth(SCRAM, b"n,,n=ada,r=abc"), m.Auth(TOKEN, b"rst_x_y")),
    "token twice": (m.Auth(TOKEN, b"rst_00_nope"), m.Auth(TOKEN, b"rst_00_nope")),
    "oversized": (m.Auth(SCRAM, b"n,,n=ada,r=" + b"a" * MAX_AUTH_BYTES), None),
    "not utf-8": (m.Auth(SCRAM, b"\xff\xfe"), None),
    "not scram": (m.Auth(SCRAM, b"hello"), None),
    "scram-final garbage": (m.Auth(SCRAM, b"n,,n=ada,r=abc"), m.Auth(SCRAM, b"\x00\x01")),
}


@pytest.mark.parametrize("case", list(OUT_OF_TABLE))
def test_anything_out_of_the_table_is_refused_and_final(identities: Identities, case: str) -> None:
    first, second = OUT_OF_TABLE[case]
    server = Authentication(identities, [SCRAM, TOKEN])
    with pytest.raises(NotAuthenticated):
        server.receive(first)
        assert second is not None, "the first AUTH should have been refused"
        server.receive(second)
    # Over: even a good start is refused now.
    good = ClientAuthentication(Credentials("ada", PASSWORD), [SCRAM]).first()
    with pytest.raises(NotAuthenticated):
        server.receive(good)


def test_the_client_refuses_a_server_that_does_not_hold_the_keys(identities: Identities) -> None:
    server = Authentication(identities, ALL)
    client = ClientAuthentication(Credentials("ada", PASSWORD), ALL)
    challenge = server.receive(client.first())
    assert isinstance(challenge, Challenge)
    server.receive(client.challenge(challenge.data))
    with pytest.raises(NotAuthenticated, match="did not prove"):
        client.ok(m.AuthOk("ada", b"v=" + b"A" * 44))


def challenge_asking_for(
    identities: Identities, iterations: str
) -> tuple[ClientAuthentication, bytes]:
    """A client past its first message, and the broker's real challenge to it with the
    iteration count replaced."""
    client = ClientAuthentication(Credentials("ada", PASSWORD), ALL)
    challenge = Authentication(identities, ALL).receive(client.first())
    assert isinstance(challenge, Challenge)
    assert b",i=4096" in challenge.data  # what the broker stores keys with
    return client, re.sub(rb"i=[0-9]+", b"i=" + iterations.encode(), challenge.data)


@pytest.mark.parametrize(
    ("iterations", "refusal"),
    [
        # Between this client's limit and scramp's own (10,000,000): only ours refuses it.
        ("5000000", "asks for 5000000 SCRAM iterations, more than this client's limit of 1000000"),
        (str(2**31), f"asks for {2**31} SCRAM iterations, more than this client's limit"),
        (str(MAX_SCRAM_ITERATIONS + 1), "asks for 1000001 SCRAM iterations, more than"),
        ("9" * 40, "asks for a 40-digit number of SCRAM iterations, more than"),
        (
            str(MIN_SCRAM_ITERATIONS - 1),
            "asks for 4095 SCRAM iterations, fewer than the minimum of 4096",
        ),
        ("1", "asks for 1 SCRAM iterations, fewer than the minimum of 4096 \\(RFC 7677\\)"),
    ],
)
def test_the_client_refuses_an_iteration_count_out_of_bounds(
    identities: Identities, iterations: str, refusal: str
) -> None:
    client, challenge = challenge_asking_for(identities, iterations)
    with pytest.raises(NotAuthenticated, match=refusal):
        client.challenge(challenge)


def test_the_client_takes_the_least_iteration_count(identities: Identities) -> None:
    client, challenge = challenge_asking_for(identities, str(MIN_SCRAM_ITERATIONS))
    assert client.challenge(challenge).data.startswith(b"c=biws,r=")


@pytest.mark.parametrize(
    ("credentials", "offered", "problem"),
    [
        (None, [SCRAM, TOKEN], "requires authentication"),
        (Credentials(token="rst_a_b"), [SCRAM], "does not offer TOKEN"),
        (Credentials("ada", PASSWORD), [TOKEN], "does not offer SCRAM"),
    ],
)
def test_the_client_says_when_nothing_it_has_fits(
    credentials: Credentials | None, offered: list[str], problem: str
) -> None:
    with pytest.raises(NotAuthenticated, match=problem):
        ClientAuthentication(credentials, offered)


# -- per-user connections -------------------------------------------------------------------


def test_user_connections_count_per_user_up_to_the_limit() -> None:
    users = UserConnections(2)
    ada, bob = Principal("ada"), Principal("bob")
    assert users.admit(ada) and users.admit(ada)
    assert not users.admit(ada)
    assert users.admit(bob)
    users.leave(ada)
    assert users.admit(ada)
    assert all(users.admit(ANONYMOUS) for _ in range(5))  # not a user's
    assert (users.open("ada"), users.open("bob"), users.open("anonymous")) == (2, 1, 0)
    for _ in range(2):
        users.leave(ada)
    assert users.open("ada") == 0


# -- credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "keywords", "expected"),
    [
        ("roost://h:1", {}, None),
        ("roost://ada:p%40ss%3Aw%20rd@h:1", {}, Credentials("ada", "p@ss:w rd")),
        ("roost://J%C3%BCrgen:x@h", {}, Credentials("Jürgen", "x")),
        ("roost://:rst_ab_cd@h", {}, Credentials(token="rst_ab_cd")),
        ("roost://h", {"username": "ada", "password": "pw"}, Credentials("ada", "pw")),
        ("roost://h", {"token": "rst_ab_cd"}, Credentials(token="rst_ab_cd")),
    ],
)
def test_credentials_from_the_url_or_keywords(
    url: str, keywords: dict[str, str], expected: Credentials | None
) -> None:
    assert Credentials.of(urlsplit(url), **keywords) == expected


@pytest.mark.parametrize(
    ("url", "keywords"),
    [
        ("roost://ada:pw@h", {"token": "rst_a_b"}),
        ("roost://ada@h", {}),
        ("roost://h", {"username": "ada"}),
        ("roost://h", {"username": "ada", "password": "pw", "token": "t"}),
    ],
)
def test_credentials_given_twice_or_half_are_refused(url: str, keywords: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Credentials.of(urlsplit(url), **keywords)


def test_secrets_never_show_in_a_repr() -> None:
    shown = repr(Credentials("ada", "hunter22")) + repr(Credentials(token="rst_a_secret"))
    assert "ada" in shown
    assert "hunter22" not in shown and "secret" not in shown
