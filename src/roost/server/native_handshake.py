"""The handshake of a native-protocol connection, from ``HELLO`` to ``OPEN``: the version,
then who the client is. ``native_auth`` decides; this module does the IO around it.

    client                                  server
    HELLO(versions)             ->
                                <-   WELCOME(version, limits, auth_required, mechanisms)
                                     or FAILURE (no common version; may not connect)
    AUTH(mechanism, data)       ->                                   (if auth_required)
                                <-   AUTH_CHALLENGE(data)            (SCRAM: server-first)
    AUTH(mechanism, data)       ->                                   (SCRAM: client-final)
                                <-   AUTH_OK(principal, data)        or FAILURE, then closed

    principal = await Handshake(stream, identities, policy, peer).run()   # None: closed

Rules:

- The whole handshake must finish within ``handshake_timeout_ms``: a peer that connects and
  says nothing, or stops halfway, gets a ``FAILURE`` and is closed, and holds nothing longer.
- A failed authentication is answered only after ``failed_auth_delay_s``, and nothing the
  client sends meanwhile is read: one guess costs that long per connection, and a frame sent
  after a guess does not learn its outcome sooner (an ``AUTH_OK`` would come at once).
- Failures are logged at WARNING with the peer and the user name the client claimed, never a
  password, a proof or a token's secret.
- ``max_connections_per_user`` is checked once the user is known, before ``AUTH_OK``: the
  connection past it gets ``FAILURE(unavailable)`` naming the limit.
- Waiting goes through ``policy.sleep`` (``asyncio.sleep`` by default), so tests drive the
  time limit and the delay without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from roost import __version__
from roost.errors import NotAuthenticated, RoostError, Unavailable
from roost.protocols.native import messages as m
from roost.protocols.native.codec import VERSIONS, Frame, Kind, encode, negotiate
from roost.server.access import Principal
from roost.server.address_strikes import peer_address
from roost.server.failed_logins import FailedLogins
from roost.server.framed import FramedStream
from roost.server.identities import Identities
from roost.server.log_limit import LogLimit
from roost.server.meters import ListenerStats
from roost.server.native_auth import (
    Authenticated,
    Authentication,
    Challenge,
    UserConnections,
    admission,
)

log = logging.getLogger("roost.native")
#: The newest native protocol version this broker speaks (roost_build_info says it).
NEWEST_PROTOCOL = max(VERSIONS)
HEARTBEAT_MS = 10_000
#: Longest a client-supplied name is logged.
LOGGED_NAME_CHARS = 64
#: The kind of log line a handshake timeout is (``LogLimit``).
HANDSHAKE_TIMEOUT_CLOSES = "connections closed for a handshake that did not finish in time"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class HandshakePolicy:
    """What a listener asks of its connections before they may send requests."""

    #: With no users defined, serve anonymously (the listener is on loopback, or the operator
    #: said ``allow_anonymous``); refuse otherwise.
    anonymous: bool = True
    failed_auth_delay_s: float = 1.0
    handshake_timeout_ms: int = 10_000
    #: Shared by a listener's connections: ``max_connections_per_user`` is its limit.
    users: UserConnections = field(default_factory=lambda: UserConnections(1_000))
    sleep: Sleep = asyncio.sleep
    #: Failed logins per address, shared by every listener of the host (None: not counted).
    failures: FailedLogins | None = None
    #: Told in the WELCOME: a version-5 client PINGs this often; twice it silent ends it.
    heartbeat_ms: int = HEARTBEAT_MS
    #: Handshakes closed for taking too long are logged through this, rate-limited: a
    #: slowloris flood times out hundreds at once (shared with the listener's other closes).
    closes: LogLimit = field(default_factory=lambda: LogLimit(log))


class Handshake:
    def __init__(
        self,
        stream: FramedStream,
        identities: Identities,
        policy: HandshakePolicy,
        peer: object,
        tls_principal: Principal | None = None,
        stats: ListenerStats | None = None,
    ) -> None:
        self._stream = stream
        self._codec = stream.codec
        self._identities = identities
        self._policy = policy
        self._peer = peer
        self._tls_principal = tls_principal
        self._stats = stats or ListenerStats()

    async def run(self) -> Principal | None:
        """Who the connection acts for, counted in ``policy.users`` (the caller calls
        ``policy.users.leave`` when it ends); None once it was refused or the peer left,
        after the ``FAILURE`` saying why. Raises ``ProtocolError`` for a peer that breaks the
        protocol, and ``ConnectionError`` when the socket fails."""
        steps = asyncio.ensure_future(self._steps())
        timer = asyncio.ensure_future(self._policy.sleep(self._policy.handshake_timeout_ms / 1000))
        try:
            await asyncio.wait((steps, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the connection is cancelled: neither task may outlive it
            timer.cancel()
            if not steps.done():
                steps.cancel()
            await asyncio.gather(steps, timer, return_exceptions=True)
        if steps.cancelled():
            limit = f"handshake_timeout_ms={self._policy.handshake_timeout_ms}"
            self._stats.timed_out += 1
            self._policy.closes.log(HANDSHAKE_TIMEOUT_CLOSES, "closing %s: the handshake did "
                                    "not finish in time (%s)", self._peer, limit)  # fmt: skip
            self._send_quietly(NotAuthenticated(f"the handshake did not finish in time ({limit})"))
            return None
        outcome = steps.result()
        # Counted here, with no wait between the count and the caller holding the principal:
        # nothing can cancel the connection in between and leave the count behind.
        return self._admit(outcome) if isinstance(outcome, Authenticated) else outcome

    async def _steps(self) -> Principal | Authenticated | None:
        """HELLO, WELCOME, and the exchange if one is required: the anonymous principal
        (served without one), an exchange's outcome (``AUTH_OK`` not sent yet), or None."""
        hello = await self._next_frame()  # the codec lets nothing else come first
        if hello is None:
            return None
        assert isinstance(hello.message, m.Hello)
        version = negotiate(hello.message)
        if version is None:
            versions = f"server speaks {list(VERSIONS)}, client {hello.message.versions[:8]}"
            failure = m.Failure("protocol_error", f"no common version: {versions}")
            self._send(Frame(Kind.FAILURE, 0, failure))
            return None
        try:
            admitted = admission(self._identities, version, self._policy.anonymous,
                                 self._tls_principal)  # fmt: skip
        except NotAuthenticated as e:
            log.warning("refusing %s: %s", self._peer, e.reason)
            self._fail(e)
            return None
        welcome = m.Welcome(version, f"roost {__version__}", self._codec.max_frame_bytes,
                            self._policy.heartbeat_ms, admitted.required,
                            admitted.mechanisms)  # fmt: skip
        self._send(Frame(Kind.WELCOME, 0, welcome))
        if admitted.principal is not None:
            return admitted.principal  # anonymous: nothing to count, nothing more to say
        return await self._authenticate(admitted.mechanisms)

    def _admit(self, done: Authenticated) -> Principal | None:
        """``AUTH_OK``, unless the user is at ``max_connections_per_user``."""
        if not self._policy.users.admit(done.principal):
            limit = self._policy.users.limit
            log.warning("refusing %s: user %r has %d connections open", self._peer,
                        done.principal.name, limit)  # fmt: skip
            self._fail(Unavailable(f"user {done.principal.name!r} has {limit} connections "
                                   f"open (max_connections_per_user={limit})"))  # fmt: skip
            return None
        self._send(Frame(Kind.AUTH_OK, 0, m.AuthOk(done.principal.name, done.data)))
        return done.principal

    async def _authenticate(self, mechanisms: list[str]) -> Authenticated | None:
        """The ``AUTH`` exchange; None when it failed (answered, after the delay) or the
        client left."""
        exchange = Authentication(self._identities, mechanisms, self._tls_principal)
        failures, address = self._policy.failures, peer_address(self._peer)
        if failures is not None:
            try:
                failures.check(address)  # guessing on many connections: refused at once
            except NotAuthenticated as e:
                log.warning("refusing a login from %s: %s", self._peer, e.reason)
                self._fail(e)
                return None
        while True:
            frame = await self._next_frame()
            if frame is None or frame.kind is Kind.GOODBYE:
                return None
            assert isinstance(frame.message, m.Auth)  # the codec lets nothing else through
            try:
                step = exchange.receive(frame.message)
            except NotAuthenticated as e:
                claimed = (exchange.user or "")[:LOGGED_NAME_CHARS]
                log.warning("authentication of %r from %s failed: %s", claimed, self._peer,
                            e.reason)  # fmt: skip
                if failures is not None:
                    failures.failed(address)
                if self._policy.failed_auth_delay_s > 0:
                    await self._policy.sleep(self._policy.failed_auth_delay_s)
                self._fail(e)
                return None
            if isinstance(step, Challenge):
                self._send(Frame(Kind.AUTH_CHALLENGE, 0, m.AuthChallenge(step.data)))
            else:
                return step

    async def _next_frame(self) -> Frame | None:
        frame = await self._stream.next_frame()
        if frame is not None:
            self._stats.frames_received += 1
        return frame

    def _send(self, frame: Frame) -> None:
        self._stream.write(self._codec.send(frame))

    def _fail(self, error: RoostError) -> None:
        self._send(Frame(Kind.FAILURE, 0, m.Failure(error.code, str(error), error.retriable)))

    def _send_quietly(self, error: RoostError) -> None:
        """A last ``FAILURE`` whatever the turn (the time ran out before the peer's HELLO,
        or while its AUTH was being answered): it is closed next anyway."""
        failure = m.Failure(error.code, str(error), error.retriable)
        with contextlib.suppress(Exception):
            self._stream.write(encode(Frame(Kind.FAILURE, 0, failure)))
