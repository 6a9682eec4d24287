"""Dashboard sessions: a cookie naming a server-side session, and its CSRF token.

    sessions = Sessions(clock, idle_ms=3_600_000, max_ms=43_200_000)
    session_id, session = sessions.create("ada")    # the id goes in the cookie, nowhere else
    session = sessions.find(session_id)             # None once ended or expired
    sessions.end(session_id)

Rules:

- The cookie holds 256 random bits and nothing else; the broker keeps only their SHA-256, so
  its memory (a core dump, a debugger) holds no usable cookie, and a lookup compares digests,
  never the secret itself.
- A session names a user, not a principal: every request asks ``Identities.principal`` again,
  so a revoked grant or a deleted user takes effect on the next request.
- It expires ``idle_ms`` after its last use and ``max_ms`` after it was made, whichever is
  first, on the injected clock's monotonic reading (sessions do not outlive the process, and
  a wall clock that is set back must not revive one).
- Its CSRF token is another 256 random bits, given to the page in the body of the login and
  of ``GET /session`` (never in a cookie: a page on another site cannot read either answer),
  and asked for in ``X-CSRF-Token`` on every state-changing request the cookie authenticates.
- At most ``max_sessions`` live at once: when full, the expired go first, then the oldest.
  Only someone who knows a password can make one.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (a browser sends it only
with requests a page of this broker makes), ``Path=/`` and, over TLS, ``Secure`` with the
``__Host-`` prefix (the browser then refuses it from anything but this host over TLS).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from starlette.requests import cookie_parser

from roost.clock import Clock

COOKIE = "roost_session"
#: The cookie's name over TLS: the prefix makes the browser insist on Secure, Path=/, no Domain.
SECURE_COOKIE = "__Host-roost_session"
CSRF_HEADER = "x-csrf-token"
MAX_SESSIONS = 10_000
#: Sessions one user may hold; a new one past it ends that user's oldest.
MAX_SESSIONS_PER_USER = 100


@dataclass
class Session:
    user: str
    #: The user's generation at login (``Principal.generation``): a user deleted and made
    #: again, or given a new password, does not inherit the session.
    generation: str
    csrf_token: str
    created_ms: int
    #: Monotonic ms; moved on by each use, never past ``created_ms + max_ms``.
    expires_ms: int
    #: Logged out, expired or evicted: what it opened (the dashboard's stream) ends too.
    ended: bool = False


class Sessions:
    def __init__(
        self, clock: Clock, idle_ms: int, max_ms: int, max_sessions: int = MAX_SESSIONS
    ) -> None:
        self._clock = clock
        self._idle_ms = idle_ms
        self._max_ms = max_ms
        self._max_sessions = max_sessions
        self._per_user = max(1, min(MAX_SESSIONS_PER_USER, max_sessions // 2))
        #: SHA-256 of the cookie's value -> the session; oldest first (insertion order).
        self._live: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._live)

    def create(self, user: str, generation: str = "") -> tuple[str, Session]:
        """A new session for ``user`` of ``generation``: (the cookie's value, the session)."""
        now = self._clock.monotonic_ms()
        self._make_room(now, user)
        session_id = secrets.token_urlsafe(32)
        session = Session(user, generation, secrets.token_urlsafe(32), now, self._expiry(now, now))
        self._live[_digest(session_id)] = session
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """The live session of this cookie value, its idle expiry moved on; None if there is
        none (never was, ended, or expired: it is then forgotten)."""
        key = _digest(session_id)
        session = self._live.get(key)
        if session is None:
            return None
        now = self._clock.monotonic_ms()
        if now >= session.expires_ms:
            del self._live[key]
            session.ended = True
            return None
        session.expires_ms = self._expiry(session.created_ms, now)
        return session

    def end(self, session_id: str) -> None:
        session = self._live.pop(_digest(session_id), None)
        if session is not None:
            session.ended = True

    def _expiry(self, created_ms: int, now_ms: int) -> int:
        return min(now_ms + self._idle_ms, created_ms + self._max_ms)

    def _make_room(self, now_ms: int, user: str) -> None:
        """Room for one more session of ``user``: past its own share, its oldest goes (a user
        logging in again and again cannot push others out); the expired go; then, only if
        the table is still full, the oldest of all."""
        for key in [k for k, s in self._live.items() if now_ms >= s.expires_ms]:
            self._live.pop(key).ended = True
        theirs = [k for k, s in self._live.items() if s.user == user]
        while len(theirs) >= self._per_user:
            self._live.pop(theirs.pop(0)).ended = True
        while len(self._live) >= self._max_sessions:
            self._live.pop(next(iter(self._live))).ended = True


def cookie_value(cookie_header: str, secure: bool) -> str | None:
    """The session cookie's value in a Cookie header, or None. Over TLS only the ``__Host-``
    cookie counts: a plain one could have been planted by a non-TLS page of the same name."""
    found = cookie_parser(cookie_header).get(SECURE_COOKIE if secure else COOKIE)
    return found or None


def set_cookie(session_id: str, secure: bool, max_age_s: int) -> str:
    """A Set-Cookie header value holding ``session_id`` (empty, ``max_age_s`` 0: remove it)."""
    name = SECURE_COOKIE if secure else COOKIE
    attributes = f"{name}={session_id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}"
    return attributes + "; Secure" if secure else attributes


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()
