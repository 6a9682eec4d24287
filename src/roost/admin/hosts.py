"""Which names the admin listener answers to: the Host and Origin checks.

    hosts = AllowedHosts(config)
    hosts.host_allowed(b"localhost:7480", server=("127.0.0.1", 7480), scheme="http")   # True
    hosts.origin_allowed(b"http://evil.example", server=..., scheme="http")   # False

Why: a browser enforces the same-origin policy by *name*. With DNS rebinding a page at
``evil.example`` makes its own name resolve to 127.0.0.1, and its scripts then talk to the
broker as "same origin", with ``Host: evil.example``. Refusing every Host the broker does not
know stops that; refusing a foreign ``Origin`` stops a page on another site from sending
requests at all (even ones whose answers it could not read).

A request is answered only if its Host, and its Origin when it has one, name one of:

- a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``) with the port the request came in
  on;
- the address the listener was told to bind, with that port (unless it is a wildcard);
- the IP address the request came in on (``scope["server"]``), with that port: what a browser
  sends for ``http://10.0.0.5:7480/`` when the listener binds ``0.0.0.0``. Only an IP
  literal counts: rebinding needs a name, and an IP origin is the broker itself;
- an entry of ``admin_hosts``: ``name`` (any port: a proxy picks its own) or ``name:port``.

A port left out means the scheme's default (80, 443). The Origin's scheme is not compared
with the request's, because a TLS-terminating proxy turns ``https`` into ``http`` on the way;
its name and port are what identify the site. ``Origin: null`` (a sandboxed frame, a file)
is foreign.
"""

from __future__ import annotations

import ipaddress

from roost.admin.config import AdminConfig

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
Server = tuple[str, int | None] | None


class AllowedHosts:
    def __init__(self, config: AdminConfig) -> None:
        listen = _bare(config.listen.lower())
        self._names = LOOPBACK_NAMES | ({listen} - WILDCARDS)
        #: admin_hosts: name -> the port it must come with, None for any.
        self._extra: dict[str, set[int | None]] = {}
        for entry in config.hosts:
            name, port = split_authority(entry.lower(), None)
            self._extra.setdefault(name, set()).add(port)

    def host_allowed(self, host: bytes | None, server: Server, scheme: str) -> bool:
        """Whether the Host header names this listener (None: the request had none)."""
        if host is None:
            return False
        try:
            name, port = split_authority(host.decode("ascii").lower(), DEFAULT_PORTS[scheme])
        except (UnicodeDecodeError, ValueError, KeyError):
            return False
        return self._allowed(name, port, server, scheme)

    def origin_allowed(self, origin: bytes, server: Server, scheme: str) -> bool:
        """Whether an Origin header names this listener; ``null`` and anything malformed
        does not."""
        try:
            text = origin.decode("ascii").lower()
            origin_scheme, separator, authority = text.partition("://")
            if not separator or "/" in authority or "@" in authority:
                return False
            name, port = split_authority(authority, DEFAULT_PORTS[origin_scheme])
        except (UnicodeDecodeError, ValueError, KeyError):
            return False
        return self._allowed(name, port, server, scheme)

    def _allowed(self, name: str, port: int | None, server: Server, scheme: str) -> bool:
        """``scheme`` is the request's: an ASGI server that knows no port for itself (None)
        is on its scheme's default."""
        if name in self._extra:
            ports = self._extra[name]
            if None in ports or port in ports:
                return True
        if server is None:
            return False
        server_name, server_port = server
        if port != (DEFAULT_PORTS.get(scheme) if server_port is None else server_port):
            return False
        return name in self._names or (name == server_name and _is_ip(name))


def split_authority(authority: str, default_port: int | None) -> tuple[str, int | None]:
    """``"host:port"`` or ``"[v6]:port"`` as (host without brackets, port); ``ValueError``
    for anything else."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(authority)
        name, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(authority)
        port_text = rest[1:] if rest else ""
    else:
        name, _, port_text = authority.partition(":")
    if not name:
        raise ValueError(authority)
    if not port_text:
        return name, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(authority)
    return name, int(port_text)


def _bare(address: str) -> str:
    return address[1:-1] if address.startswith("[") and address.endswith("]") else address


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
