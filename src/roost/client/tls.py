"""TLS for ``roosts://`` URLs: the ``SSLContext`` a client connects with.

    context = client_tls("roosts", ca_file="ca.pem")                # private CA
    context = client_tls("roosts", cert_file="me.pem", key_file="me.key")   # mutual TLS
    context = client_tls("roosts", ssl=my_context)                   # yours, as it is
    client_tls("roost")                                              # None: plaintext

Rules:

- The server's certificate is always checked, and must name the host of the URL (hostname
  checking on, as a browser's): against the system's trust store by default, or against
  ``ca_file`` alone when it is given. TLS 1.2 at least.
- ``cert_file`` (with ``key_file`` when the key is in a file of its own) is this client's
  certificate for mutual TLS; the broker takes its subject CN as the user's name.
- ``ssl`` is a context made by the caller and used unchanged; it excludes the file options.
- A ``roost://`` URL is plaintext: TLS options with it are a mistake, refused with
  ``ValueError`` rather than silently ignored. A file that cannot be read raises ``OSError``
  (``FileNotFoundError``, ...) naming it; one without the PEM it should hold, or a key that is
  not the certificate's, ``ValueError``; both at once, not on the first connection.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Callable

SCHEMES = {"roost": False, "roosts": True}


def client_tls(
    scheme: str,
    *,
    ssl: _ssl.SSLContext | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> _ssl.SSLContext | None:
    """The context to connect with for a URL of ``scheme``: None for ``roost``."""
    files = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    given = [name for name, value in files.items() if value is not None]
    if not SCHEMES[scheme]:
        if ssl is not None or given:
            options = ", ".join(["ssl"] * (ssl is not None) + given)
            raise ValueError(f"{options} given for a plaintext roost:// URL: use roosts://")
        return None
    if ssl is not None:
        if given:
            raise ValueError(f"give either ssl= or {', '.join(given)}, not both")
        return ssl
    if key_file is not None and cert_file is None:
        raise ValueError("key_file is the key of a client certificate: give cert_file too")
    for path in filter(None, files.values()):
        with open(path, "rb"):  # OpenSSL's errors name no file: an OSError from open() does
            pass
    # PROTOCOL_TLS_CLIENT: certificate and hostname checked (create_default_context's
    # settings); trusted, either the system's store (and SSL_CERT_FILE / SSL_CERT_DIR, as
    # OpenSSL reads them) or, given ca_file, that CA alone.
    context = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _ssl.TLSVersion.TLSv1_2
    if ca_file is None:
        context.load_default_certs(_ssl.Purpose.SERVER_AUTH)
    else:
        _load("ca_file", ca_file, lambda: context.load_verify_locations(cafile=ca_file))
    if cert_file is not None:
        _load("cert_file", cert_file, lambda: context.load_cert_chain(cert_file, key_file))
    return context


def _load(option: str, path: str, load: Callable[[], None]) -> None:
    """Run ``load``; an error says which option and file it is about (OpenSSL's do not)."""
    try:
        load()
    except _ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"key_file is not the key of cert_file {path!r}") from e
        raise ValueError(f"{option} {path!r}: no PEM it can use ({e.reason or e})") from e
