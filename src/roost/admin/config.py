"""What the admin listener needs to know about itself to decide who may talk to it.

    config = AdminConfig.from_settings(settings)     # roost serve
    config = AdminConfig()                           # tests, embedding: loopback, defaults

``roost serve``'s ``Settings`` hold the operator's choices (``admin_listen``, ``admin_hosts``,
``allow_anonymous``, ``metrics_auth``); this is the part of them the HTTP layer reads, plus
the knobs of its sessions, so ``build_app`` can be built in a test without a whole ``Settings``.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.server.exposure import is_loopback
from roost.server.serve import Settings

#: A dashboard session ends after this long without a request...
SESSION_IDLE_MS = 60 * 60 * 1000
#: ...and after this long whatever happens: a stolen cookie is not good forever.
SESSION_MAX_MS = 12 * 60 * 60 * 1000
#: A wrong password (login or basic auth) is answered this much later: it slows a guesser
#: working one attempt after another, and costs a user who mistyped one second.
FAILED_LOGIN_DELAY_MS = 1_000


@dataclass(frozen=True)
class AdminConfig:
    #: The address the admin listener is bound to (a name or an IP, maybe a wildcard).
    listen: str = "127.0.0.1"
    #: Other names (``name`` for any port, ``name:port`` for one) the listener answers to in
    #: Host and Origin: a reverse proxy's public name, say.
    hosts: tuple[str, ...] = ()
    #: With no users defined, serve everyone as the anonymous administrator even though
    #: ``listen`` is not a loopback address.
    allow_anonymous: bool = False
    #: ``/metrics`` asks for a credential with ``monitor``; else it is open (as scrapers expect).
    metrics_auth: bool = False
    session_idle_ms: int = SESSION_IDLE_MS
    session_max_ms: int = SESSION_MAX_MS
    failed_login_delay_ms: int = FAILED_LOGIN_DELAY_MS

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminConfig:
        return cls(
            listen=settings.admin_listen,
            hosts=tuple(settings.admin_hosts),
            allow_anonymous=settings.allow_anonymous,
            metrics_auth=settings.metrics_auth,
        )

    @property
    def anonymous_allowed(self) -> bool:
        """Whether, with no users defined, requests are served as ``access.ANONYMOUS``: only
        on a loopback listener (nobody else can connect) or when the operator said so."""
        return self.allow_anonymous or is_loopback(self.listen)
