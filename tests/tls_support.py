"""Certificates for the TLS tests, made by trustme: a CA, a server certificate for 127.0.0.1
and localhost, client certificates, and a second CA nobody trusts."""

from __future__ import annotations

from pathlib import Path

import trustme


class Pki:
    """PEM files under ``directory``: ``ca_file`` signed ``server_cert``/``server_key``;
    ``client(name)`` issues a client certificate whose subject CN is ``name``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA(organization_name="Roost test CA")
        self.other_ca = trustme.CA(organization_name="Someone else's CA")
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca_file = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        server = self.ca.issue_cert("127.0.0.1", "localhost", common_name="roost test broker")
        self.server_cert = self._write(
            "server.pem", b"".join(pem.bytes() for pem in server.cert_chain_pems)
        )
        self.server_key = self._write("server.key", server.private_key_pem.bytes())

    def client(self, name: str, *, other_ca: bool = False) -> tuple[str, str]:
        """(certificate file, key file) of a client certificate for CN=``name``, signed by
        the test CA or, with ``other_ca``, by the CA the broker does not trust."""
        ca = self.other_ca if other_ca else self.ca
        leaf = ca.issue_cert(f"{name}.clients.roost.test", common_name=name)
        stem = f"client-{name}{'-other' if other_ca else ''}"
        cert = self._write(f"{stem}.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
        return cert, self._write(f"{stem}.key", leaf.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)
