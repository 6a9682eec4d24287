"""The admin listener's gate: an ASGI layer in front of every route that decides whether a
request is answered at all, and as whom.

    app = Guard(starlette_app, host.identities, sessions, config, open_paths={"/healthz"})

In order, for every HTTP request (a websocket is refused: nothing here speaks one):

1. **Host** must name this listener and **Origin**, when sent, too (hosts.py): 403
   ``host_not_allowed`` / ``origin_not_allowed``. This is what stops DNS rebinding and a
   page on another site talking to the broker.
2. A **state-changing** request (any method but GET, HEAD, OPTIONS) must say
   ``Content-Type: application/json``: 415 ``unsupported_media_type``.
3. **Who**: ``Authorization: Bearer <token>``, ``Authorization: Basic`` (user:password), or
   the dashboard's session cookie (sessions.py), tried in that order; a credential that is
   present but wrong is 401, never "try the next one". With no users defined, every request
   is ``access.ANONYMOUS`` if the listener is on loopback or ``allow_anonymous`` is set (and
   401 otherwise). Paths open to all (``open_paths``: health; the login page and its files;
   ``/metrics`` unless ``metrics_auth``) look at no credential. Anything else without one is
   401 ``not_authenticated`` with ``WWW-Authenticate: Bearer``, except the dashboard's page,
   which redirects to the login page. ``/metrics`` (with ``metrics_auth``) and the
   dashboard's feed need ``monitor``: 403 ``not_authorised``.
4. A state-changing request that the **cookie** authenticated must carry ``X-CSRF-Token``
   equal to its session's token: 403 ``csrf_token_mismatch``.

Then the principal goes in ``scope["roost.principal"]`` (``endpoints.principal_of``), where
``route`` and the handlers read it.

Why these rules are enough against cross-site requests, credential by credential:

- A page on another site can make a browser send a "simple" request (GET, HEAD, or POST with
  a form's or text/plain content type) without asking us first, carrying any cookies and any
  cached credentials. Anything else, ``Content-Type: application/json`` included, makes the
  browser ask with a CORS preflight, which we never approve. So rule 2 means no state changes
  without a preflight the browser will not pass, and rule 1 refuses the request anyway when
  the browser says where it came from (every browser sends Origin with a POST).
- The session cookie is SameSite=Strict, so a browser does not even attach it to a request
  another site starts; the CSRF token is the second lock, for browsers or same-site pages
  (a sibling subdomain) where SameSite does not hold.
- A bearer token is never attached by a browser on its own: only a script that holds it can
  send it, and a page on another site does not.
- Basic credentials are: a browser that once had them typed in (into its own prompt, or in a
  ``user:pass@`` URL) attaches them to every later request to the host, cross-site ones
  included. Rules 1 and 2 therefore hold for Basic exactly as for the cookie. We also never
  *ask* for Basic (the 401's challenge names only Bearer), so a browser never shows its
  password prompt for the broker and has nothing cached unless the user went out of their way.
- With no users on loopback, requests carry no credential at all, yet rules 1 and 2 are what
  keep a web page the operator opens (or a rebound DNS name) from purging a queue.

Every answer also says ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` (no other
site may frame the dashboard and steer a click onto its redrive button), and a
Content-Security-Policy that lets a page load and talk only to this broker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roost.admin.config import AdminConfig
from roost.admin.endpoints import JSON, PRINCIPAL, UNAUTHENTICATED, error_response
from roost.admin.hosts import AllowedHosts
from roost.admin.sessions import CSRF_HEADER, Session, Sessions, cookie_value, set_cookie
from roost.errors import NotAuthenticated
from roost.server.access import ANONYMOUS, Principal
from roost.server.failed_logins import FailedLogins
from roost.server.identities import Identities

log = logging.getLogger("roost.admin")

#: Where the gate leaves (cookie value, session) in the scope for login.py; absent: no cookie.
SESSION: Final = "roost.session"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH: Final = "/login"
#: The dashboard's page: asked for without a credential, it redirects to the login page.
PAGES: Final = frozenset({"/"})
#: Served to anyone: the scripts and styles of the dashboard and of its login page.
OPEN_PREFIXES: Final = ("/dashboard/static/",)
METRICS_PATH: Final = "/metrics"
FEED_PATH: Final = "/dashboard/events"
NO_USERS: Final = (
    "no users are defined and the admin listener is not on loopback: add a user, or set "
    "allow_anonymous"
)
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="roost"'}
#: Every file the pages use is the broker's own (no inline script, no other host): a script
#: injected into a page despite dom.js's text-only rule could not load or send anything.
CSP: Final = (
    b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    b"form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
#: Waits before a failed password check is answered (``asyncio.sleep`` but in tests).
Pause = Callable[[float], Awaitable[None]]


class Need(Enum):
    OPEN = "open"
    USER = "user"
    MONITOR = "monitor"


@dataclass(frozen=True)
class Who:
    principal: Principal
    #: The cookie's value and its session when the cookie authenticated the request.
    session_id: str | None = None
    session: Session | None = None


class Refused(Exception):
    """Answer ``response`` instead of serving the request."""

    def __init__(self, response: Response) -> None:
        self.response = response


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        identities: Identities,
        sessions: Sessions,
        config: AdminConfig,
        open_paths: Collection[str] = (),
        pause: Pause = asyncio.sleep,
        failures: FailedLogins | None = None,
    ) -> None:
        self._app = app
        self._failures = failures
        self._identities = identities
        self._sessions = sessions
        self._config = config
        self._hosts = AllowedHosts(config)
        self._open = frozenset({*open_paths, LOGIN_PATH})
        self._pause = pause

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            scope = self._admit(scope, await self._who(scope))
        except Refused as refused:
            await refused.response(scope, receive, _with_security_headers(send))
            return
        await self._app(scope, receive, _with_security_headers(send))

    async def _who(self, scope: Scope) -> Who | None:
        """Steps 1 to 3 of the module's rules: who is asking (None: an open path)."""
        headers = Headers(scope=scope)
        server, scheme = scope.get("server"), scope.get("scheme", "http")
        raw_host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if not self._hosts.host_allowed(raw_host, server, scheme):
            why = "this broker does not answer to that Host: add it to admin_hosts if it is yours"
            raise Refused(_refusal(403, "host_not_allowed", why))
        origin = headers.get("origin")
        if origin is not None and not self._hosts.origin_allowed(origin.encode(), server, scheme):
            why = f"requests from {origin[:100]!r} are refused"
            raise Refused(_refusal(403, "origin_not_allowed", why))
        if scope["method"] not in SAFE_METHODS and _media_type(headers) != JSON:
            why = f"{scope['method']} needs Content-Type: {JSON}"
            raise Refused(_refusal(415, "unsupported_media_type", why))
        if self._need(scope["path"]) is Need.OPEN:
            return None
        if not self._identities.any_users:
            if self._config.anonymous_allowed:
                return Who(ANONYMOUS)
            raise Refused(self._unauthenticated(scope, NO_USERS))
        try:
            return await self._authenticate(scope, headers)
        except NotAuthenticated as e:
            raise Refused(self._unauthenticated(scope, e.reason)) from None

    def _admit(self, scope: Scope, who: Who | None) -> Scope:
        """Step 3's ``monitor`` and step 4; the scope the app gets."""
        if who is None:
            return {**scope, PRINCIPAL: UNAUTHENTICATED}
        if self._need(scope["path"]) is Need.MONITOR and not who.principal.monitor:
            why = f"user {who.principal.name!r} may not monitor the broker"
            raise Refused(_refusal(403, "not_authorised", why))
        if who.session is not None and scope["method"] not in SAFE_METHODS:
            sent = Headers(scope=scope).get(CSRF_HEADER, "")
            if not _same(sent, who.session.csrf_token):
                why = "a request the session cookie authenticates needs its X-CSRF-Token"
                raise Refused(_refusal(403, "csrf_token_mismatch", why))
        return {**scope, PRINCIPAL: who.principal, SESSION: (who.session_id, who.session)}

    def _need(self, path: str) -> Need:
        if path in self._open or path.startswith(OPEN_PREFIXES):
            return Need.OPEN
        if path == METRICS_PATH:
            return Need.MONITOR if self._config.metrics_auth else Need.OPEN
        return Need.MONITOR if path == FEED_PATH else Need.USER

    async def _authenticate(self, scope: Scope, headers: Headers) -> Who:
        authorization = headers.get("authorization")
        if authorization is not None:
            kind, _, credentials = authorization.partition(" ")
            if kind.lower() == "bearer":
                return Who(self._identities.authenticate_token(credentials.strip()))
            if kind.lower() == "basic":
                return Who(await self._basic(credentials.strip(), scope))
            raise NotAuthenticated("the Authorization header must be Bearer or Basic")
        session_id = cookie_value(headers.get("cookie", ""), _secure(scope))
        if session_id is None:
            raise NotAuthenticated("no credentials: send a bearer token or basic auth, or log in")
        session = self._sessions.find(session_id)
        if session is None:
            raise NotAuthenticated("the session has ended or expired: log in again")
        try:
            principal = self._identities.principal(session.user)
            if principal.generation != session.generation:
                raise NotAuthenticated("the user has changed since this session logged in")
        except NotAuthenticated:
            self._sessions.end(session_id)  # the user is gone, or another one now
            raise
        return Who(principal, session_id, session)

    async def _basic(self, credentials: str, scope: Scope) -> Principal:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise NotAuthenticated("malformed basic credentials") from None
        name, colon, password = decoded.partition(":")
        if not colon:
            raise NotAuthenticated("malformed basic credentials")
        delay_ms = self._config.failed_login_delay_ms
        return await check_password(
            self._identities, name, password, scope, self._pause, delay_ms, self._failures
        )

    def _unauthenticated(self, scope: Scope, reason: str) -> Response:
        response: Response
        if scope["method"] == "GET" and scope["path"] in PAGES:
            # 303 keeps the page's #fragment (RFC 9110): after logging in it opens again.
            response = RedirectResponse(scope.get("root_path", "") + LOGIN_PATH, 303)
        else:
            why = f"authentication failed: {reason}"
            response = _refusal(401, "not_authenticated", why, CHALLENGE)
        if "cookie" in Headers(scope=scope):
            # A stale session cookie goes, so the browser stops sending it.
            response.headers.append("set-cookie", set_cookie("", _secure(scope), 0))
        return response


async def check_password(
    identities: Identities,
    name: str,
    password: str,
    scope: Scope,
    pause: Pause,
    delay_ms: int,
    failures: FailedLogins | None = None,
) -> Principal:
    """``identities.authenticate_password``, a failure logged (the name and the client's
    address, never the password), counted against the address in ``failures`` (an address
    past their limit is refused at once, unchecked) and answered ``delay_ms`` later."""
    client = scope.get("client") or ("?", 0)
    if failures is not None:
        failures.check(str(client[0]))
    try:
        begun = identities.begin_password(name, password)
        if isinstance(begun, Principal):  # checked lately: remembered
            return begun
        # The PBKDF2 runs in a thread: a flood of wrong passwords queues there while the
        # loop goes on serving (hashlib lets go of the GIL for it).
        return identities.end_password(begun, await asyncio.to_thread(begun.run))
    except NotAuthenticated:
        log.warning("admin: wrong password for user %r from %s", name[:100], client[0])
        if failures is not None:
            failures.failed(str(client[0]))
        if delay_ms > 0:
            await pause(delay_ms / 1000)
        raise


def _refusal(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    response = error_response(status, code, message, headers)
    response.headers["cache-control"] = "no-store"
    return response


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").partition(";")[0].strip().lower()


def _secure(scope: Scope) -> bool:
    return scope.get("scheme") == "https"


def _same(sent: str, expected: str) -> bool:
    return hmac.compare_digest(sent.encode(), expected.encode())


def _with_security_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(raw=list(message.get("headers", [])))
            for name, value in SECURITY_HEADERS:
                headers.raw.append((name, value))
            message = {**message, "headers": headers.raw}
        await send(message)

    return sending


def session_of(scope: Mapping[str, Any]) -> tuple[str | None, Session | None]:
    """(cookie value, session) when the session cookie authenticated this request."""
    found = scope.get(SESSION)
    return found if isinstance(found, tuple) else (None, None)
