"""Authenticating one native-protocol connection: who must, with what, and the exchange.

No IO here: ``native_handshake`` reads the frames, sends the answers, keeps the time limit and
delays failures; this module decides, and drives ``scramp`` for SCRAM.

Who must authenticate (``admission``), decided when the ``HELLO`` arrives:

- users exist: every connection, with ``SCRAM-SHA-256`` or ``TOKEN``, and ``EXTERNAL`` when
  the TLS listener already identified the client by its certificate;
- no users: the connection is served as ``ANONYMOUS`` when the listener is bound to loopback
  or ``allow_anonymous`` was given, and refused otherwise: a broker open to a network is never
  an accident.

One exchange (``Authentication``) is a table keyed by (step, mechanism)::

    START        SCRAM-SHA-256  client-first  -> AUTH_CHALLENGE server-first   -> SCRAM_FINAL
    SCRAM_FINAL  SCRAM-SHA-256  client-final  -> AUTH_OK server-final          -> DONE
    START        TOKEN          the token     -> AUTH_OK                       -> DONE
    START        EXTERNAL       "" or a name  -> AUTH_OK                       -> DONE

Anything else (a mechanism not offered, a step out of order, a message scramp refuses, a wrong
proof, a bad token) raises ``NotAuthenticated`` and the exchange is over. A wrong password and
an unknown user fail alike, with the same reason and the same work (``Identities.scram_lookup``
stands in keys for an unknown name), so user names cannot be probed. SCRAM's server nonce is
fresh per exchange, so a client-final recorded from one connection proves nothing on another.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

from roost.errors import NotAuthenticated
from roost.protocols.native import messages as m
from roost.server.access import ANONYMOUS, Principal
from roost.server.identities import MECHANISM as SCRAM
from roost.server.identities import TOKEN_PREFIX, Identities

TOKEN: Final = "TOKEN"
EXTERNAL: Final = "EXTERNAL"
#: Longest ``AUTH`` payload looked at: SCRAM messages and tokens are a few hundred bytes, and
#: what an unauthenticated peer sends must not cost more than that to refuse.
MAX_AUTH_BYTES: Final = 4096
#: The first version that can authenticate.
AUTH_VERSION: Final = 4
WRONG_CREDENTIALS: Final = "wrong user name or password"


class Admission(NamedTuple):
    """What the ``WELCOME`` says: whether to authenticate, and how; or who the client is."""

    required: bool
    mechanisms: list[str]
    principal: Principal | None  # ANONYMOUS when nothing is required


def admission(
    identities: Identities, version: int, anonymous: bool, tls_principal: Principal | None
) -> Admission:
    """Who must authenticate on a connection that chose ``version``; ``anonymous``: the
    listener may serve without users (it is on loopback, or ``allow_anonymous``). Raises
    ``NotAuthenticated`` for a connection that cannot be served at all."""
    if identities.any_users:
        if version < AUTH_VERSION:
            raise NotAuthenticated(
                f"this broker requires authentication, which needs protocol version "
                f"{AUTH_VERSION}; the client speaks at most version {version}: upgrade it"
            )
        mechanisms = [SCRAM, TOKEN] + ([EXTERNAL] if tls_principal is not None else [])
        return Admission(True, mechanisms, None)
    if anonymous:
        return Admission(False, [], ANONYMOUS)
    raise NotAuthenticated(
        "the broker has no users and serves anonymously only on loopback: add a user "
        "(roost user add), or start it with allow_anonymous"
    )


class Challenge(NamedTuple):
    """Send ``AUTH_CHALLENGE(data)`` and wait for the next ``AUTH``."""

    data: bytes


class Authenticated(NamedTuple):
    """Send ``AUTH_OK(principal.name, data)``: the connection acts for ``principal``."""

    principal: Principal
    data: bytes


class Step(enum.Enum):
    START = "start"
    SCRAM_FINAL = "waiting for the SCRAM client-final message"
    DONE = "done"


Handler = Callable[["Authentication", bytes], "Challenge | Authenticated"]


class Authentication:
    """One connection's exchange, from its first ``AUTH`` to ``AUTH_OK`` or a failure.

    ``user`` is the name the client claimed so far (for the log; never a secret)."""

    def __init__(
        self,
        identities: Identities,
        mechanisms: list[str],
        tls_principal: Principal | None = None,
    ) -> None:
        self._identities = identities
        self._mechanisms = mechanisms
        self._tls_principal = tls_principal
        self._step = Step.START
        self._scram: Any = None  # scramp's server, once a SCRAM exchange has begun
        self.user: str | None = None

    def receive(self, auth: m.Auth) -> Challenge | Authenticated:
        """The answer to one ``AUTH``; raises ``NotAuthenticated``, after which the exchange
        refuses everything."""
        handler = _TABLE.get((self._step, auth.mechanism))
        step, self._step = self._step, Step.DONE  # failed, unless the handler moves it on
        if auth.mechanism not in self._mechanisms:
            raise NotAuthenticated(
                f"mechanism {auth.mechanism[:40]!r} is not offered (offered: "
                f"{', '.join(self._mechanisms)})"
            )
        if handler is None:
            raise NotAuthenticated(f"{auth.mechanism} does not expect a message now ({step.value})")
        if len(auth.data) > MAX_AUTH_BYTES:
            raise NotAuthenticated(f"an AUTH message over {MAX_AUTH_BYTES} bytes")
        return handler(self, auth.data)

    # -- SCRAM-SHA-256 (RFC 5802, RFC 7677) ------------------------------------------------

    def _scram_first(self, data: bytes) -> Challenge:
        self._scram = self._identities.scram_server(lookup=self._lookup)
        with _refusing("malformed SCRAM client-first message"):
            self._scram.set_client_first(data.decode())
            server_first: str = self._scram.get_server_first()
        self._step = Step.SCRAM_FINAL
        return Challenge(server_first.encode())

    def _scram_final(self, data: bytes) -> Authenticated:
        # A wrong proof, a forged or replayed message (its nonce is not this exchange's), an
        # unknown user (its stand-in keys match no proof): one answer for all.
        with _refusing(WRONG_CREDENTIALS):
            self._scram.set_client_final(data.decode())
            server_final: str = self._scram.get_server_final()
        assert self.user is not None  # set by the lookup of the client-first message
        principal = self._identities.principal(self.user)  # NotAuthenticated if just deleted
        self._step = Step.DONE
        return Authenticated(principal, server_final.encode())

    def _lookup(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        self.user = name
        return self._identities.scram_lookup(name)

    # -- TOKEN and EXTERNAL ----------------------------------------------------------------

    def _token(self, data: bytes) -> Authenticated:
        secret = data.decode(errors="replace")
        self.user = f"token {_token_id(secret)}"
        principal = self._identities.authenticate_token(secret)
        self.user = f"{principal.name} (token {_token_id(secret)})"
        return Authenticated(principal, b"")

    def _external(self, data: bytes) -> Authenticated:
        """The TLS listener identified the client by its certificate; ``data`` may name the
        same user (an authorisation identity, RFC 4422), never another."""
        principal = self._tls_principal
        assert principal is not None  # EXTERNAL is offered only with a certificate's user
        self.user = principal.name
        if data and data.decode(errors="replace") != principal.name:
            raise NotAuthenticated("EXTERNAL may not act for another user than the certificate's")
        return Authenticated(principal, b"")


_TABLE: dict[tuple[Step, str], Handler] = {
    (Step.START, SCRAM): Authentication._scram_first,
    (Step.SCRAM_FINAL, SCRAM): Authentication._scram_final,
    (Step.START, TOKEN): Authentication._token,
    (Step.START, EXTERNAL): Authentication._external,
}


@contextlib.contextmanager
def _refusing(reason: str) -> Iterator[None]:
    """Whatever scramp or decoding raises becomes ``NotAuthenticated(reason)``: its exception
    types are not a documented contract, and the input is a hostile peer's, so anything its
    parsing raises is that peer's failure to authenticate, not a broker bug."""
    try:
        yield
    except NotAuthenticated:
        raise
    except Exception as e:
        raise NotAuthenticated(reason) from e


def _token_id(secret: str) -> str:
    """The public id of a token, for the log (never its secret part); ``?`` if malformed."""
    token_id, _, rest = secret.removeprefix(TOKEN_PREFIX).partition("_")
    ok = secret.startswith(TOKEN_PREFIX) and rest and 0 < len(token_id) <= 32
    return token_id if ok and token_id.isalnum() else "?"


class UserConnections:
    """How many connections each user has open on a listener, for ``max_connections_per_user``.
    Anonymous connections are not a user's: ``max_connections`` bounds them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def admit(self, principal: Principal) -> bool:
        """Count one more connection of ``principal``; False (nothing counted) at the limit."""
        if principal is ANONYMOUS:
            return True
        count = self._open.get(principal.name, 0)
        if count >= self.limit:
            return False
        self._open[principal.name] = count + 1
        return True

    def leave(self, principal: Principal) -> None:
        """One connection ``admit`` counted has ended."""
        if principal is ANONYMOUS:
            return
        count = self._open.get(principal.name, 0) - 1
        if count > 0:
            self._open[principal.name] = count
        else:
            self._open.pop(principal.name, None)

    def open(self, name: str) -> int:
        return self._open.get(name, 0)
