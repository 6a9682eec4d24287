"""Fuzz targets for authentication: the server's reading of a client's AUTH messages
(SCRAM-SHA-256 client-first and client-final, TOKEN), and the client's reading of a
server's SCRAM challenge and final word.

The input is the messages, separated by ``SEAL``; ``NONCE`` in a message stands for the
other side's nonce of this exchange (random each time), so that inputs get past the nonce
check into the proof and signature. Contract: the server answers each with a
challenge or ``NotAuthenticated`` and never authenticates anybody (no input knows the user's
password, and each exchange has a fresh nonce); the client raises only ``NotAuthenticated``
and never accepts a server that did not prove it holds the user's keys.
"""

from __future__ import annotations

from roost.client.credentials import SCRAM, ClientAuthentication, Credentials
from roost.clock import ManualClock
from roost.errors import NotAuthenticated
from roost.protocols.native import messages as m
from roost.server.identities import Identities
from roost.server.native_auth import TOKEN, Authenticated, Authentication
from roost.storage.metadata import MetadataStore
from tests.fuzz.storage_targets import MemoryFS
from tests.fuzz.target import Target

SEAL = b"|seal|"
NONCE = b"NONCE"
_STORE = MetadataStore.open(MemoryFS(), "metadata.json")
IDENTITIES = Identities(_STORE, ManualClock())
IDENTITIES.add_user("ada", "correct horse battery")
MECHANISMS = [SCRAM, TOKEN]


def check_server(data: bytes) -> None:
    mechanism = MECHANISMS[data[0] % 2] if data else SCRAM
    exchange = Authentication(IDENTITIES, MECHANISMS)
    nonce = b""
    for message in data[1:].split(SEAL)[:3]:
        try:
            answer = exchange.receive(m.Auth(mechanism, message.replace(NONCE, nonce)))
        except NotAuthenticated:
            return
        assert not isinstance(answer, Authenticated), "authenticated without the password"
        nonce = _nonce_of(answer.data)


def _nonce_of(message: bytes) -> bytes:
    """The ``r=`` attribute of a SCRAM message (the exchange's whole nonce)."""
    for attribute in message.split(b","):
        if attribute.startswith(b"r="):
            return attribute[2:]
    return b""


def check_client(data: bytes) -> None:
    challenge, _, final = data.partition(SEAL)
    client = ClientAuthentication(Credentials("ada", "correct horse battery"), [SCRAM])
    nonce = _nonce_of(client.first().data)
    try:
        client.challenge(challenge.replace(NONCE, nonce))
        client.ok(m.AuthOk("ada", final))
    except NotAuthenticated:
        return
    raise AssertionError("the client accepted a server that proved nothing")


def server_seeds() -> list[bytes]:
    return [
        b"\x00n,,n=ada,r=fyko+d2lbbFgONRv9qkxdawL",
        b"\x00n,,n=ada,r=fyko+d2lbbFgONRv9qkxdawL" + SEAL
        + b"c=biws,r=NONCE,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"\x01rst_abc.def",
        b"\x00n,a=bob,n=nobody,r=x",
    ]  # fmt: skip


def client_seeds() -> list[bytes]:
    return [
        b"r=NONCE3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096" + SEAL
        + b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        b"r=NONCEx,s=QSXCR+Q6sek8bf92,i=1" + SEAL + b"e=invalid-proof",
    ]  # fmt: skip


TARGETS = {
    "auth_server": Target(
        "auth_server",
        "a client's AUTH messages (SCRAM-SHA-256 client-first and client-final, TOKEN) "
        "through the server's exchange: a challenge or NotAuthenticated, never authenticated",
        check_server, server_seeds),
    "auth_client": Target(
        "auth_client",
        "a server's SCRAM challenge and final message through the client's exchange: "
        "NotAuthenticated only, and never accepted", check_client, client_seeds,
        short_runs=300),
}  # fmt: skip
