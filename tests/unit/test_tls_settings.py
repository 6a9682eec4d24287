"""``roost.server.tls``: the server context from the settings, each bad setting refused with
one line naming it, and the user a client certificate names."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from roost.errors import InvalidConfig
from roost.server.serve import Settings
from roost.server.tls import peer_name, server_context
from tests.tls_support import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_a_context_for_tls_only_from_the_settings(pki: Pki) -> None:
    assert server_context(Settings()) is None, "no certificate: no TLS"
    context = server_context(Settings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key))
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
    for client_auth, mode in (("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)):
        mutual = server_context(
            Settings(
                tls_cert_file=pki.server_cert,
                tls_key_file=pki.server_key,
                tls_ca_file=pki.ca_file,
                tls_client_auth=client_auth,
            )
        )
        assert mutual is not None
        assert mutual.verify_mode is mode
        assert mutual.cert_store_stats()["x509_ca"] == 1, "the CA alone, not the system's"


def test_the_key_may_be_in_the_certificate_file(pki: Pki, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_text(Path(pki.server_cert).read_text() + Path(pki.server_key).read_text())
    assert server_context(Settings(tls_cert_file=str(both))) is not None


def _encrypted_key(pki: Pki, path: Path) -> str:
    key = serialization.load_pem_private_key(Path(pki.server_key).read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return str(path)


def test_each_bad_setting_is_one_line_naming_it(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = str(tmp_path / "missing.pem")
    other_key = pki.client("someone")[1]
    cert, key, ca = pki.server_cert, pki.server_key, pki.ca_file
    cases: list[tuple[dict[str, str], str]] = [
        ({"tls_cert_file": missing}, "tls_cert_file=.*missing.pem.*No such file"),
        ({"tls_cert_file": cert, "tls_key_file": missing}, "tls_key_file=.*No such file"),
        ({"tls_cert_file": str(garbage), "tls_key_file": key}, "no PEM certificate in it"),
        ({"tls_cert_file": cert, "tls_key_file": str(garbage)}, "no PEM private key in it"),
        ({"tls_cert_file": cert}, "tls_cert_file=.*no PEM private key in it"),
        ({"tls_cert_file": cert, "tls_key_file": other_key}, "not the key of tls_cert_file"),
        (
            {"tls_cert_file": cert, "tls_key_file": _encrypted_key(pki, tmp_path / "enc.key")},
            "tls_key_file=.*encrypted",
        ),
        ({"tls_key_file": key}, "tls_key_file=.*needs tls_cert_file"),
        ({"tls_ca_file": ca}, "tls_ca_file=.*needs tls_cert_file"),
        ({"tls_client_auth": "required"}, "tls_client_auth=.*needs tls_cert_file"),
        (
            {"tls_cert_file": cert, "tls_key_file": key, "tls_client_auth": "required"},
            "tls_client_auth='required': client certificates need tls_ca_file",
        ),
        (
            {"tls_cert_file": cert, "tls_key_file": key, "tls_ca_file": ca},
            "tls_ca_file=.*set tls_client_auth to optional or required",
        ),
        ({"tls_client_auth": "sometimes"}, "tls_client_auth='sometimes': one of"),
        (
            {
                "tls_cert_file": cert, "tls_key_file": key, "tls_ca_file": str(garbage),
                "tls_client_auth": "optional",
            },
            "tls_ca_file=.*no CA certificate in it",
        ),
    ]  # fmt: skip
    for values, message in cases:
        with pytest.raises(InvalidConfig, match=message) as refused:
            server_context(Settings(**values))
        assert "\n" not in str(refused.value), "one line"


def _subject(*attributes: tuple[str, str]) -> dict[str, object]:
    return {"subject": tuple((attribute,) for attribute in attributes)}


def test_a_verified_certificate_names_the_user_of_its_one_common_name() -> None:
    assert peer_name(_subject(("organizationName", "Roost"), ("commonName", "ada"))) == "ada"
    assert peer_name(None) is None, "no TLS"
    assert peer_name({}) is None, "no certificate, or one nobody verified"
    assert peer_name(_subject(("organizationName", "Roost"))) is None, "no CN"
    assert peer_name(_subject(("commonName", "ada"), ("commonName", "bob"))) is None, "two"
    assert peer_name(_subject(("commonName", ""))) is None
