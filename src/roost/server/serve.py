"""``roost serve``: one process, one data directory, the native protocol on a port.

Settings come from a TOML file, then environment variables, then flags, each overriding the
one before (docs/operations.md lists them). On SIGTERM or SIGINT the broker stops accepting
connections, lets in-flight confirms finish, flushes and closes the data directory cleanly.

With a certificate configured (the ``[tls]`` table, ``ROOST_TLS_*``, ``--tls-*``) every
listener speaks TLS only (``roost.server.tls``); bad TLS settings stop ``run`` before the data
directory is opened, with ``InvalidConfig``.

Other things served from the same process and loop (the HTTP admin API) are passed in as
``services``: this layer may not import the layers above it, so the command line, which
may, hands them over. Each is started once the host and the native listener are up and
closed, in reverse order, before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Protocol, TypeVar

import msgspec

from roost.errors import InvalidConfig
from roost.server.exposure import check_exposure
from roost.server.host import Host
from roost.server.memory import DEFAULT_MAX_MEMORY, budget_bytes, mib
from roost.server.native_server import NativeListener, close_native, serve_native
from roost.server.process_tuning import (
    DefinitionFreezer,
    collector_paused,
    collector_tuned,
    raise_fd_limit,
)
from roost.server.settings_errors import explained
from roost.server.tls import describe, server_context
from roost.server.watchdog import Timeouts
from roost.storage.fd_pool import MIN_MAX_OPEN

log = logging.getLogger("roost.serve")
T = TypeVar("T")


#: A TCP port; 0 asks the system for a free one (the log says which).
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
#: The tables a config file may have, and what they hold.
TABLES = ("server", "tls")


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data: str = "./data"
    listen: str = "127.0.0.1"
    port: Port = 7420
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=4096, le=1 << 30)] = 16 * 1024 * 1024
    max_connections: Positive = 10_000
    #: The HTTP admin API: served unless ``admin`` is false.
    admin: bool = True
    admin_listen: str = "127.0.0.1"
    admin_port: Port = 7480
    # -- security (docs/security.md) --
    #: Serve without authentication on a non-loopback address (logged as a warning).
    allow_anonymous: bool = False
    #: Ask for a token (or a user) on /metrics; open by default, as Prometheus scrapers expect.
    metrics_auth: bool = False
    #: Names the admin API answers to in Host and Origin, besides its listen address and
    #: localhost (a proxy's public name, say); anything else is refused (DNS rebinding).
    admin_hosts: list[str] = msgspec.field(default_factory=list)
    max_connections_per_user: Positive = 1_000
    #: A connection must finish its handshake (and authentication) this soon, or is closed.
    handshake_timeout_ms: Positive = 10_000
    # -- bounds (docs/operations.md, "Memory and connection bounds") --
    #: The broker's memory budget: bytes (``512MiB``, ``2GB``), a fraction of the machine's
    #: memory (``0.4``, RabbitMQ's default watermark), or ``0`` for none. Over it, publishing
    #: connections are not read (and told so) until memory falls back.
    max_memory: str = DEFAULT_MAX_MEMORY
    #: A frame that has started to arrive must be whole this soon, or the connection ends.
    frame_timeout_ms: Positive = 30_000
    #: Told to clients in the WELCOME: a version-5 client PINGs this often, and one silent for
    #: twice this is closed.
    heartbeat_ms: Positive = 10_000
    #: TLS on the native and admin listeners: PEM files (the ``[tls]`` table of the TOML file).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: Client certificates are checked against this CA bundle (mutual TLS).
    tls_ca_file: str | None = None
    #: ``none``, ``optional`` or ``required``: whether clients must present a certificate.
    tls_client_auth: str = "none"
    #: Publishes are refused below this much free space (None: 2x the largest segment +
    #: 1 GiB; 0: off). See server/disk_space.py.
    min_free_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: Descriptors storage keeps open at most (segment files; idle ones are closed and opened
    #: again on use). None: three quarters of the open files limit (storage/fd_pool.py).
    max_open_files: Annotated[int, msgspec.Meta(ge=MIN_MAX_OPEN)] | None = None
    #: Reads and writes per second of a compaction pass (storage/compaction.py); 0: no limit.
    compaction_bytes_per_s: Annotated[int, msgspec.Meta(ge=0)] = 32 * 1024 * 1024


#: Environment variables and the setting each sets.
ENVIRONMENT = {
    "ROOST_DATA": "data",
    "ROOST_LISTEN": "listen",
    "ROOST_PORT": "port",
    "ROOST_MAX_FRAME_BYTES": "max_frame_bytes",
    "ROOST_MAX_CONNECTIONS": "max_connections",
    "ROOST_ADMIN": "admin",
    "ROOST_ADMIN_LISTEN": "admin_listen",
    "ROOST_ADMIN_PORT": "admin_port",
    "ROOST_ALLOW_ANONYMOUS": "allow_anonymous",
    "ROOST_METRICS_AUTH": "metrics_auth",
    "ROOST_MAX_CONNECTIONS_PER_USER": "max_connections_per_user",
    "ROOST_HANDSHAKE_TIMEOUT_MS": "handshake_timeout_ms",
    "ROOST_MAX_MEMORY": "max_memory",
    "ROOST_FRAME_TIMEOUT_MS": "frame_timeout_ms",
    "ROOST_HEARTBEAT_MS": "heartbeat_ms",
    "ROOST_TLS_CERT_FILE": "tls_cert_file",
    "ROOST_TLS_KEY_FILE": "tls_key_file",
    "ROOST_TLS_CA_FILE": "tls_ca_file",
    "ROOST_TLS_CLIENT_AUTH": "tls_client_auth",
    "ROOST_MIN_FREE_BYTES": "min_free_bytes",
    "ROOST_MAX_OPEN_FILES": "max_open_files",
    "ROOST_COMPACTION_BYTES_PER_S": "compaction_bytes_per_s",
}


class Service(Protocol):
    async def aclose(self) -> None: ...


#: Starts a service on the host (None: the settings turn it off).
StartService = Callable[[Host, Settings], Awaitable[Service | None]]


def settings(
    config_file: str | None, environ: Mapping[str, str], flags: Mapping[str, object]
) -> Settings:
    """File, then environment, then flags (None flags are not given). Raises
    ``InvalidConfig`` naming the file or the setting for a file that cannot be read or is not
    TOML, a ``[server]`` or ``[tls]`` that is not a table, an unknown setting, or a value of
    the wrong type."""
    values: dict[str, object] = {}
    #: Where each value came from, for the error that names it.
    sources: dict[str, str] = {}
    if config_file is not None:
        document = _read_config(config_file)
        _check_tables(document, config_file)
        server = _table(document, "server", config_file)
        values.update(server)
        sources.update(dict.fromkeys(server, f"{config_file} [server]"))
        tls = _table(document, "tls", config_file)
        values.update({f"tls_{name}": value for name, value in tls.items()})
        sources.update({f"tls_{name}": f"{config_file} [tls]" for name in tls})
    for variable, name in ENVIRONMENT.items():
        if variable in environ:
            values[name], sources[name] = environ[variable], variable
    for name, value in flags.items():
        if value is not None:
            values[name], sources[name] = value, "--" + name.replace("_", "-")
    if "max_memory" in values:  # a TOML number (0.4) is as good as the string
        values["max_memory"] = str(values["max_memory"])
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise explained(e, values, sources, Settings) from None


def _read_config(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise InvalidConfig("config file", path, f"cannot be read: {e.strerror}") from None
    except ValueError as e:  # not TOML (TOMLDecodeError), or not UTF-8 (UnicodeDecodeError)
        raise InvalidConfig("config file", path, f"not TOML: {e}") from None


def _check_tables(document: dict[str, object], path: str) -> None:
    """A setting outside any table, or a table of another name, is a mistake (a missing
    ``[server]`` line, ``[sever]``): refused, never silently ignored."""
    for name, value in document.items():
        if name in TABLES:
            continue
        if isinstance(value, dict):
            raise InvalidConfig(
                f"[{name}]", "(a table)",
                f"unknown table in {path}; its tables are " + ", ".join(f"[{t}]" for t in TABLES),
            )  # fmt: skip
        raise InvalidConfig(
            name, value, f"is outside any table in {path}: settings go under [server] (or [tls])"
        )


def _table(document: dict[str, object], name: str, path: str) -> dict[str, object]:
    table = document.get(name, {})
    if not isinstance(table, dict):
        raise InvalidConfig(f"[{name}]", table, f"must be a table in {path}")
    return table


async def _listening(setting: str, address: str, port: int, starting: Awaitable[T]) -> T:
    """``starting`` (a listener coming up), with a failure to bind said in one line: the
    address and port, why, and which setting moves it."""
    try:
        return await starting
    except OSError as e:
        flag = "--" + setting.replace("_", "-")
        hint = (
            f"another process listens there (another roost serve?): stop it or choose {flag}"
            if e.errno == errno.EADDRINUSE
            else f"check the address, or choose another {flag}"
        )
        raise InvalidConfig(setting, port, f"cannot listen on {address}:{port}: "
                            f"{_reason(e)}; {hint}") from None  # fmt: skip


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def bounds(config: Settings) -> tuple[Timeouts, int | None]:
    """The listener's timeouts and the memory budget in bytes (None: none); raises
    ``InvalidConfig`` for a setting it cannot use."""
    for name in ("frame_timeout_ms", "heartbeat_ms", "handshake_timeout_ms"):
        if getattr(config, name) <= 0:
            raise InvalidConfig(name, getattr(config, name), "must be a positive number of ms")
    timeouts = Timeouts(frame_timeout_ms=config.frame_timeout_ms, heartbeat_ms=config.heartbeat_ms)
    return timeouts, budget_bytes(config.max_memory)


async def run(
    config: Settings,
    ready: Callable[[str, int], None] | None = None,
    services: Sequence[StartService] = (),
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. Raises ``InvalidConfig``
    for TLS settings that cannot work, before anything is opened."""
    tls = server_context(config)
    timeouts, budget = bounds(config)
    # Once the settings are known to be good (a bad one stops serve with one line), and before
    # the data directory is opened: the storage's ceiling derives from the limit.
    raise_fd_limit()
    with collector_paused():  # recovery's objects live on: collected once, then frozen
        try:
            host = await Host.start(
                config.data,
                min_free_bytes=config.min_free_bytes,
                max_open_files=config.max_open_files,
                compaction_bytes_per_s=config.compaction_bytes_per_s,
            )
        except OSError as e:  # made or opened: a path under a file, no permission
            raise InvalidConfig("data", config.data, f"cannot be used: {_reason(e)}") from None
    if collector_tuned():
        host.definitions_watch = DefinitionFreezer(host.engine.metadata.version).poll
    listeners = {"native": config.listen}
    if config.admin:
        listeners["admin"] = config.admin_listen
    try:
        check_exposure(listeners, host.identities.any_users, config.allow_anonymous)
    except BaseException:
        await host.aclose()
        raise
    server: NativeListener | None = None
    started: list[Service] = []
    try:
        server = await _listening("port", config.listen, config.port, serve_native(
            host, config.listen, config.port, config.max_frame_bytes, config.max_connections,
            ssl=tls,
            ssl_handshake_timeout_s=config.handshake_timeout_ms / 1000,
            allow_anonymous=config.allow_anonymous,
            max_connections_per_user=config.max_connections_per_user,
            handshake_timeout_ms=config.handshake_timeout_ms,
            timeouts=timeouts, max_memory=config.max_memory,
        ))  # fmt: skip
        for start in services:
            service = await _listening(
                "admin_port", config.admin_listen, config.admin_port, start(host, config)
            )
            if service is not None:
                started.append(service)
        address, port = server.sockets[0].getsockname()[:2]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "roost listening on %s:%d, data in %s, %s, memory budget %s, "
            "at most %d storage files open (max_open_files)",
            address,
            port,
            os.path.abspath(config.data),
            describe(config),
            "none (max_memory=0)"
            if budget is None
            else f"{mib(budget)} (max_memory={config.max_memory})",
            host.engine.pool.max_open,
        )
        if ready is not None:
            ready(address, port)
        await stop.wait()
    finally:
        log.info("roost shutting down")
        host.stop_waiting()
        for service in reversed(started):
            try:
                await service.aclose()
            except Exception:
                log.exception("roost: closing %r failed", service)
        if server is not None:
            await close_native(server)
        with contextlib.suppress(Exception):
            await host.aclose()
