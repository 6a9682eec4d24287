"""uvicorn serving the admin app as a task on the broker's own event loop.

    admin = await AdminServer.start(host, "127.0.0.1", 7480)
    print(admin.address)           # ("127.0.0.1", 7480); port 0 picks a free one
    await admin.aclose()           # stop accepting, let requests finish, then return

Rules:

- One loop, one process: the handlers call the core directly, as the native listener does,
  so no core state is ever touched from two threads.
- The socket is bound here, before uvicorn starts, so a port in use fails ``start`` at once
  and the bound port is known (port 0) before anything is served.
- With ``ssl`` (``roost.server.tls``'s context, the native listener's settings) the API,
  ``/metrics`` and the dashboard are HTTPS only. uvicorn's own ``ssl_*`` options would build
  a context of their own (cipher list "TLSv1", no minimum version), so the context is handed
  in whole through ``ssl_context_factory``; uvicorn wraps the passed socket with it.
- Every request passes the gate (auth.py) with ``config`` (an ``AdminConfig``; ``start_admin``
  makes it from the settings), whose ``listen`` is always the address actually bound.
- uvicorn does not install signal handlers: ``roost serve`` owns SIGTERM and SIGINT and closes
  the admin server with the native listener.
- ``aclose`` first runs the ``closing`` callbacks, which end responses that would otherwise
  never finish (the dashboard's event streams), then lets requests in flight finish for up to
  ``GRACE_S``, then cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence

import uvicorn
from starlette.routing import BaseRoute

from roost.admin.app import build_app
from roost.admin.config import AdminConfig
from roost.admin.dashboard import Dashboard
from roost.admin.metrics import metrics_route
from roost.server.host import Host
from roost.server.serve import Settings
from roost.server.tls import server_context

log = logging.getLogger("roost.admin")

#: How long requests in flight may take to finish once the server is closing.
GRACE_S = 5
DEFAULT_PORT = 7480
#: Called at the start of ``aclose``.
Closing = Callable[[], Awaitable[None]]


class _LoopServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the broker's process owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminServer:
    def __init__(
        self, server: _LoopServer, sock: socket.socket, closing: Sequence[Closing] = ()
    ) -> None:
        self._server = server
        self._closing = closing
        self._socket = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.scheme = "https" if server.config.is_ssl else "http"
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return "{}://{}:{}".format(self.scheme, *self.address)

    @classmethod
    async def start(
        cls,
        host: Host,
        listen: str,
        port: int,
        extra_routes: Sequence[BaseRoute] = (),
        closing: Sequence[Closing] = (),
        config: AdminConfig | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
    ) -> AdminServer:
        """Bind ``listen:port`` and serve the admin app there until ``aclose``, over TLS
        only with ``ssl`` (a context for this server alone: its ALPN is set to HTTP/1.1);
        ``closing`` runs first thing in ``aclose``. ``config`` (default: its defaults) is what
        the gate checks requests against; its ``listen`` is ``listen``, whatever it said."""
        admin_config = dataclasses.replace(config or AdminConfig(), listen=listen)
        factory = None
        if ssl is not None:
            # uvicorn's HTTP/1.1 is all this server speaks: say so to a client offering h2.
            ssl.set_alpn_protocols(["http/1.1"])
            factory = _handing(ssl)
        sock = _bind(listen, port)
        uvicorn_config = uvicorn.Config(
            build_app(host, extra_routes, admin_config),
            lifespan="off",
            log_config=None,  # the process's logging as it is
            access_log=False,
            timeout_graceful_shutdown=GRACE_S,
            ssl_context_factory=factory,
        )
        admin = cls(_LoopServer(uvicorn_config), sock, closing)
        admin._task = asyncio.create_task(admin._server.serve([sock]), name="roost-admin")
        while not admin._server.started:
            if admin._task.done():
                await admin._task  # raises what stopped it
                raise RuntimeError("the admin server stopped while starting")
            await asyncio.sleep(0.01)  # uvicorn says it has started only through this flag
        return admin

    async def aclose(self) -> None:
        """End endless responses (``closing``), stop accepting, let requests in flight
        finish (``GRACE_S`` at most), stop."""
        if self._task is None:
            return
        for close in self._closing:
            await close()
        self._server.should_exit = True
        task, self._task = self._task, None
        await task
        self._socket.close()


async def start_admin(host: Host, settings: Settings) -> AdminServer | None:
    """The admin API, ``/metrics`` and the dashboard as ``roost serve`` runs them: per the
    settings, or None when turned off."""
    if not settings.admin:
        return None
    dashboard = Dashboard(host)
    routes = [metrics_route(host), *dashboard.routes]
    config = AdminConfig.from_settings(settings)
    admin = await AdminServer.start(
        host,
        settings.admin_listen,
        settings.admin_port,
        routes,
        closing=[dashboard.aclose],
        config=config,
        ssl=server_context(settings),  # checked already: ``serve.run`` built one first
    )
    if not host.identities.any_users and not config.anonymous_allowed:
        log.warning(
            "roost admin API: no users are defined and %s is not a loopback address, so "
            "every request but /healthz and /readyz is refused until a user is added",
            settings.admin_listen,
        )
    log.info("roost admin API on %s (dashboard at /, metrics at /metrics)", admin.url)
    return admin


def _handing(
    context: _ssl.SSLContext,
) -> Callable[[uvicorn.Config, Callable[[], _ssl.SSLContext]], _ssl.SSLContext]:
    """An ``ssl_context_factory`` for uvicorn that hands it ``context``, ignoring its own."""
    return lambda _config, _default: context


def _bind(listen: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
