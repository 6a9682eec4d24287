"""Who the client says it is, and its side of the native protocol's authentication (version 4).

    roost.connect("roost://ada:s3cret@host:7420")           # SCRAM-SHA-256, percent-decoded
    roost.connect("roost://host:7420", username="ada", password="s3cret")
    roost.connect("roost://host:7420", token="rst_...")     # an API token
    roost.connect("roost://:rst_...@host:7420")             # a token in the URL: no user name

With a password the client runs SCRAM-SHA-256 (RFC 5802/7677, with ``scramp``): the password
never crosses the wire, and the server's last message proves it knows the user's keys, which
the client checks before it trusts the connection. A token is sent as it is: beyond loopback,
use TLS. With no credentials the client uses ``EXTERNAL`` when the broker offers it (its TLS
listener knows the client by its certificate), and otherwise raises ``NotAuthenticated``
naming what the broker asks for. A broker that asks for nothing (no users, on loopback) is
not asked to check credentials given anyway.

The broker's first SCRAM message names the PBKDF2 iteration count the client must compute
its proof with. A broker (or something posing as one) asking for 2^31 would make each login
burn CPU for hours, so the client refuses a count above ``MAX_SCRAM_ITERATIONS`` (the broker
stores its users' keys with 4,096) or below RFC 7677's minimum of 4,096, before computing
anything.

``ClientAuthentication`` is sans-IO, as the codec: messages in, messages out;
``NetworkBackend`` moves them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote

import scramp

from roost.errors import NotAuthenticated
from roost.protocols.native import messages as m

SCRAM = "SCRAM-SHA-256"
TOKEN = "TOKEN"
EXTERNAL = "EXTERNAL"
#: RFC 7677's least: fewer would make a stolen key cheap to turn back into the password.
MIN_SCRAM_ITERATIONS = 4096
#: The most a broker may ask for: about a second of PBKDF2 per connection here.
MAX_SCRAM_ITERATIONS = 1_000_000
#: The iteration count in a SCRAM server-first message (``r=...,s=...,i=4096``).
_ITERATIONS = re.compile(r"(?:^|,)i=([0-9]+)(?:,|$)")


@dataclass(frozen=True)
class Credentials:
    """A user name and password, or a token; neither shows in a repr or a traceback."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError("give a token, or a user name and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("a user name needs a password, and a password a user name")

    @classmethod
    def of(
        cls,
        parts: SplitResult,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
    ) -> Credentials | None:
        """The credentials of a URL's user info (``user:password@``, or ``:token@``), or
        the keyword arguments; None for neither. Both at once is a ``ValueError``."""
        in_url = parts.username is not None or parts.password is not None
        given = username is not None or password is not None or token is not None
        if in_url and given:
            raise ValueError("credentials in the URL and as arguments: give them once")
        if in_url:
            if parts.password is None:
                raise ValueError("a user name in the URL needs its password: user:password@")
            name, secret = unquote(parts.username or ""), unquote(parts.password)
            return cls(username=name, password=secret) if name else cls(token=secret)
        return cls(username, password, token) if given else None


class ClientAuthentication:
    """The client's side of one exchange: ``first()``, then ``challenge(data)`` for each
    ``AUTH_CHALLENGE``, then ``ok(auth_ok)``; ``NotAuthenticated`` at any step ends it."""

    def __init__(self, credentials: Credentials | None, offered: list[str]) -> None:
        self.mechanism = _choose(credentials, offered)
        self._credentials = credentials
        self._scram: Any = None

    def first(self) -> m.Auth:
        credentials = self._credentials
        if self.mechanism == SCRAM:
            assert credentials is not None and credentials.username is not None
            try:
                self._scram = scramp.ScramClient([SCRAM], credentials.username,
                                                 credentials.password)  # fmt: skip
            except scramp.ScramException as e:  # a name or password SASLprep refuses
                raise NotAuthenticated(f"unusable user name or password: {e}") from None
            return m.Auth(SCRAM, self._scram.get_client_first().encode())
        if self.mechanism == TOKEN:
            assert credentials is not None and credentials.token is not None
            return m.Auth(TOKEN, credentials.token.encode())
        return m.Auth(EXTERNAL)

    def challenge(self, data: bytes) -> m.Auth:
        if self._scram is None:
            raise NotAuthenticated(f"the broker sent a challenge {self.mechanism} has no use for")
        try:
            server_first = data.decode()
            _check_iterations(server_first)
            self._scram.set_server_first(server_first)
            # PBKDF2 of the password, as many rounds as the broker asks (4096: a few ms).
            return m.Auth(SCRAM, self._scram.get_client_final().encode())
        except (scramp.ScramException, ValueError) as e:
            raise NotAuthenticated(f"the broker's SCRAM challenge is unusable: {e}") from None

    def ok(self, auth_ok: m.AuthOk) -> None:
        """Check the broker's last word: under SCRAM its signature, which only a server that
        holds the user's keys can make."""
        if self._scram is None:
            return
        try:
            self._scram.set_server_final(auth_ok.data.decode())
        except (scramp.ScramException, ValueError):
            raise NotAuthenticated(
                "the broker did not prove it knows this user's keys: it may not be the "
                "broker it claims to be"
            ) from None


def _check_iterations(server_first: str) -> None:
    """Refuse an iteration count out of bounds before anything is computed with it (a
    message without one, or with one that is no number, is left to ``scramp`` to refuse)."""
    found = _ITERATIONS.search(server_first)
    if found is None:
        return
    digits = found.group(1).lstrip("0") or "0"
    if len(digits) > 12:  # over the limit whatever it says; not worth reading, nor repeating
        iterations, count = MAX_SCRAM_ITERATIONS + 1, f"a {len(digits)}-digit number of"
    else:
        iterations = int(digits)
        count = str(iterations)
    if iterations > MAX_SCRAM_ITERATIONS:
        raise NotAuthenticated(
            f"the broker asks for {count} SCRAM iterations, more than this client's "
            f"limit of {MAX_SCRAM_ITERATIONS} (each login would cost that many PBKDF2 rounds)"
        )
    if iterations < MIN_SCRAM_ITERATIONS:
        raise NotAuthenticated(
            f"the broker asks for {iterations} SCRAM iterations, fewer than the minimum of "
            f"{MIN_SCRAM_ITERATIONS} (RFC 7677)"
        )


def _choose(credentials: Credentials | None, offered: list[str]) -> str:
    if credentials is None:
        if EXTERNAL in offered:
            return EXTERNAL
        raise NotAuthenticated(
            f"the broker requires authentication (it offers {', '.join(offered) or 'nothing'}): "
            "give a user name and password, or a token"
        )
    wanted = TOKEN if credentials.token is not None else SCRAM
    if wanted not in offered:
        raise NotAuthenticated(f"the broker does not offer {wanted} (it offers {offered})")
    return wanted
