"""Logging in and out: the dashboard's session cookie, and the page that asks for a password.

    GET  /login     the login page (static/login.html); open to anyone
    POST /login     {"username", "password"} -> 200 {"user", "csrf_token"}, Set-Cookie
    POST /logout    -> 204: the cookie's session ends and the cookie is removed
    GET  /session   -> 200 {"user", "csrf_token"}: who the request authenticated as

Rules:

- ``POST /login`` is open (it is how one gets a credential) but still passes the gate's Host,
  Origin and ``application/json`` rules (auth.py), so no other site can log a browser in to
  an account of its choosing. It always makes a new session id and ends any the browser
  sent: an id planted beforehand never becomes a logged-in one.
- A wrong name or password answers 401 ``not_authenticated``, the same for both, logged with
  the name and the client's address and answered ``failed_login_delay_ms`` late.
- The CSRF token is in the body of the login and of ``GET /session`` (a page reloaded asks for
  it again); both answers say ``Cache-Control: no-store``. ``csrf_token`` is null when the
  request was not authenticated by the cookie (a token, basic auth, anonymous): such a
  request needs none.
- ``/logout`` and ``/session`` need a credential like the API; ``/logout`` with a cookie also
  needs the CSRF token, as every state-changing request does.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from roost.admin.auth import LOGIN_PATH, Pause, check_password, session_of
from roost.admin.config import AdminConfig
from roost.admin.dashboard import STATIC
from roost.admin.endpoints import JSON, error_response, principal_of
from roost.admin.sessions import Sessions, cookie_value, set_cookie
from roost.errors import NotAuthenticated
from roost.server.failed_logins import FailedLogins
from roost.server.identities import Identities

#: A login body is a name and a password (at most 1024 characters): this is plenty.
MAX_LOGIN_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store"}


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: str
    password: str


class SessionView(msgspec.Struct, frozen=True):
    user: str
    #: Send it as X-CSRF-Token with every state-changing request; null: none is needed.
    csrf_token: str | None


class Login:
    def __init__(
        self,
        identities: Identities,
        sessions: Sessions,
        config: AdminConfig,
        pause: Pause,
        failures: FailedLogins | None = None,
    ) -> None:
        self._identities = identities
        self._failures = failures
        self._sessions = sessions
        self._config = config
        self._pause = pause
        self.routes = [
            Route(LOGIN_PATH, _page, methods=["GET"]),
            Route(LOGIN_PATH, self._login, methods=["POST"]),
            Route("/logout", self._logout, methods=["POST"]),
            Route("/session", _session, methods=["GET"]),
        ]

    async def _login(self, request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BYTES:
                return error_response(413, "invalid_request", "login body too large")
        try:
            credentials = msgspec.json.decode(body, type=Credentials)
        except msgspec.DecodeError as e:  # ValidationError included
            return error_response(400, "invalid_request", f"login body: {e}")
        secure = request.url.scheme == "https"
        planted = cookie_value(request.headers.get("cookie", ""), secure)
        if planted is not None:
            self._sessions.end(planted)
        try:
            principal = await check_password(
                self._identities, credentials.username, credentials.password, request.scope,
                self._pause, self._config.failed_login_delay_ms, self._failures,
            )  # fmt: skip
        except NotAuthenticated as e:
            return error_response(401, e.code, str(e), NO_STORE)
        session_id, session = self._sessions.create(principal.name, principal.generation)
        view = SessionView(principal.name, session.csrf_token)
        response = Response(msgspec.json.encode(view), 200, NO_STORE, media_type=JSON)
        max_age_s = self._config.session_max_ms // 1000
        response.headers.append("set-cookie", set_cookie(session_id, secure, max_age_s))
        return response

    async def _logout(self, request: Request) -> Response:
        session_id, _ = session_of(request.scope)
        if session_id is not None:
            self._sessions.end(session_id)
        response = Response(status_code=204)
        if session_id is not None:
            secure = request.url.scheme == "https"
            response.headers.append("set-cookie", set_cookie("", secure, 0))
        return response


async def _session(request: Request) -> Response:
    _, session = session_of(request.scope)
    csrf_token = None if session is None else session.csrf_token
    view = SessionView(principal_of(request.scope).name, csrf_token)
    return Response(msgspec.json.encode(view), 200, NO_STORE, media_type=JSON)


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-cache"})
