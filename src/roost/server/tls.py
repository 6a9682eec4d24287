"""TLS for the listeners: the server's ``SSLContext`` from the settings, and who a client
certificate names.

    context = server_context(settings)         # None when no certificate is configured
    await serve_native(host, ..., ssl=context)
    principal = peer_principal(host.identities, stream.get_extra_info("peercert"))

Rules:

- A certificate configured means TLS only: the native and the admin listener both take it,
  and neither speaks plaintext on its port (a plaintext client fails its TLS handshake).
- TLS 1.2 at least; ciphers are OpenSSL's defaults for the Python ``ssl`` module (no RC4, no
  3DES, forward secrecy first).
- Settings are checked when the broker starts, never on the first connection: a missing or
  unreadable file, a file without a certificate or key, a key that is not the certificate's,
  an encrypted key, or client certificates asked for without a CA to check them against
  each raise ``InvalidConfig`` with one line that names the setting and the file.
- ``tls_client_auth``: ``none`` asks for no client certificate; ``optional`` asks, and checks
  the one given against ``tls_ca_file`` (a client without one still connects); ``required``
  refuses a client without a certificate signed by that CA during the handshake.
- Mutual TLS names a user by the certificate's subject common name (CN): a certificate for
  ``CN=ada`` is user ``ada`` of the broker's identities (as PostgreSQL's ``cert`` login and
  RabbitMQ's ``EXTERNAL`` with ``common_name`` do). Only a certificate the handshake verified
  names anyone; a subject with no CN or more than one, or a name that is no user, names
  nobody. What that user may then do is its grants, as for a password login.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from roost.errors import InvalidConfig, NotAuthenticated
from roost.server.access import Principal
from roost.server.identities import Identities

if TYPE_CHECKING:
    from roost.server.serve import Settings

log = logging.getLogger("roost.tls")

CLIENT_AUTH: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class _Encrypted(Exception):
    """Raised by the password callback: the key is encrypted (OpenSSL would prompt)."""


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context both listeners serve TLS with, or None when ``tls_cert_file`` is not set
    (then no other TLS setting may be). Raises ``InvalidConfig`` (see the module doc)."""
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    ca_file, client_auth = settings.tls_ca_file, settings.tls_client_auth
    if client_auth not in CLIENT_AUTH:
        raise InvalidConfig("tls_client_auth", client_auth, f"one of {list(CLIENT_AUTH)}")
    if cert_file is None:
        for name, value in (("tls_key_file", key_file), ("tls_ca_file", ca_file)):
            if value is not None:
                raise InvalidConfig(name, value, "TLS needs tls_cert_file too")
        if client_auth != "none":
            raise InvalidConfig("tls_client_auth", client_auth, "TLS needs tls_cert_file")
        return None
    if client_auth != "none" and ca_file is None:
        raise InvalidConfig(
            "tls_client_auth", client_auth, "client certificates need tls_ca_file to check them"
        )
    if client_auth == "none" and ca_file is not None:
        # Fail closed: whoever set a CA meant clients to be checked against it.
        raise InvalidConfig(
            "tls_ca_file", ca_file, "set tls_client_auth to optional or required to use it"
        )

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, cert_file, key_file)
    if ca_file is not None:
        _readable("tls_ca_file", ca_file)
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as e:
            raise InvalidConfig("tls_ca_file", ca_file, f"no CA certificate in it ({e})") from e
    context.verify_mode = CLIENT_AUTH[client_auth]
    return context


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    """The certificate chain and its key (``key_file`` None: the key is in ``cert_file``)."""
    certificate = _readable("tls_cert_file", cert_file)
    if "-----BEGIN CERTIFICATE-----" not in certificate:
        raise InvalidConfig("tls_cert_file", cert_file, "no PEM certificate in it")
    key_setting, key_path = ("tls_key_file", key_file) if key_file else ("tls_cert_file", cert_file)
    if "PRIVATE KEY-----" not in _readable(key_setting, key_path):
        raise InvalidConfig(key_setting, key_path, "no PEM private key in it")

    def encrypted() -> str:
        raise _Encrypted

    try:
        context.load_cert_chain(cert_file, key_file, password=encrypted)
    except _Encrypted:
        raise InvalidConfig(
            key_setting, key_path, "the key is encrypted: give the broker an unencrypted key"
        ) from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            rule = f"it is not the key of tls_cert_file {cert_file!r}"
            raise InvalidConfig(key_setting, key_path, rule) from e
        rule = f"OpenSSL cannot load the certificate or its key ({e})"
        raise InvalidConfig("tls_cert_file", cert_file, rule) from e


def _readable(setting: str, path: str) -> str:
    """The text of ``path``, or ``InvalidConfig`` saying why it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as e:
        raise InvalidConfig(setting, path, e.strerror or str(e)) from e


def peer_name(peer_certificate: Mapping[str, Any] | None) -> str | None:
    """The user a verified client certificate names: its subject's one CN, else None.

    ``peer_certificate`` is ``SSLSocket.getpeercert()``'s dict (the transport's ``peercert``),
    which Python fills only for a certificate the handshake verified: empty or None means
    none was given or none was checked."""
    if not peer_certificate:
        return None
    names = [
        value
        for rdn in peer_certificate.get("subject", ())
        for attribute, value in rdn
        if attribute == "commonName"
    ]
    return names[0] if len(names) == 1 and names[0] else None


def peer_principal(
    identities: Identities, peer_certificate: Mapping[str, Any] | None
) -> Principal | None:
    """The principal of the user a verified client certificate names (``peer_name``), or
    None: no certificate, or a name that is no user of ``identities``."""
    name = peer_name(peer_certificate)
    if name is None:
        return None
    try:
        return identities.principal(name)
    except NotAuthenticated:
        log.info("a client certificate names %r, who is not a user", name)
        return None


def describe(settings: Settings) -> str:
    """One line for the start-up log: what TLS the listeners speak."""
    if settings.tls_cert_file is None:
        return "TLS off"
    return f"TLS on (certificate {settings.tls_cert_file}, client certificates " + (
        "not asked for)"
        if settings.tls_client_auth == "none"
        else f"{settings.tls_client_auth}, checked against {settings.tls_ca_file})"
    )
