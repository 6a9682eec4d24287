"""Users, tokens and grants in a real metadata store, on a driven clock.

SCRAM is checked against RFC 7677's own exchange (section 3): its user, password, nonces,
salt and iteration count give, through our stored keys and ``scram_server``, exactly the
server messages the RFC prints.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import msgspec
import pytest
import scramp

from roost.clock import ManualClock
from roost.errors import (
    InvalidConfig,
    InvalidName,
    InvalidPattern,
    NotAuthenticated,
    UnknownGrant,
    UnknownToken,
    UnknownUser,
    UserExists,
)
from roost.server.access import Grant, Principal
from roost.server.identities import (
    BASIC_CACHE_MS,
    ITERATIONS,
    TOKENS,
    USERS,
    Identities,
    PasswordCheck,
)
from roost.storage.fs import LOCAL_FS
from roost.storage.metadata import MetadataStore

PASSWORD = "correct horse"
DAY_MS = 86_400_000


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "metadata.json")


@pytest.fixture
def identities(path: str, clock: ManualClock) -> Identities:
    return Identities(MetadataStore.open(LOCAL_FS, path), clock)


def reopened(path: str, clock: ManualClock) -> Identities:
    """Another ``Identities`` over what is on disk, as after a restart."""
    return Identities(MetadataStore.open(LOCAL_FS, path), clock)


def rfc5802_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """StoredKey and ServerKey by RFC 5802 section 3, independently of scramp."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return hashlib.sha256(client_key).digest(), hmac.digest(salted, b"Server Key", "sha256")


# -- SCRAM ----------------------------------------------------------------------------------

RFC_SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_CLIENT_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_reproduces_rfc_7677(path: str) -> None:
    # "pencil" is shorter than add_user allows, so the RFC's user is written as the record
    # format says (docs/security.md), with keys from RFC 5802's formulas.
    salt = base64.b64decode(RFC_SALT)
    stored_key, server_key = rfc5802_keys("pencil", salt, 4096)
    record = {"salt": RFC_SALT, "stored_key": base64.b64encode(stored_key).decode(),
              "server_key": base64.b64encode(server_key).decode(), "iterations": 4096,
              "grants": [], "created_ms": 0}  # fmt: skip
    with MetadataStore.open(LOCAL_FS, path).transaction() as txn:
        txn.put(USERS, "user", record)
    identities = Identities(MetadataStore.open(LOCAL_FS, path), ManualClock())

    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", "pencil", c_nonce=RFC_CLIENT_NONCE)
    server = identities.scram_server(s_nonce=RFC_SERVER_NONCE)
    assert client.get_client_first() == RFC_CLIENT_FIRST
    server.set_client_first(RFC_CLIENT_FIRST)
    assert server.get_server_first() == RFC_SERVER_FIRST
    client.set_server_first(RFC_SERVER_FIRST)
    assert client.get_client_final() == RFC_CLIENT_FINAL
    server.set_client_final(RFC_CLIENT_FINAL)
    assert server.get_server_final() == RFC_SERVER_FINAL
    client.set_server_final(RFC_SERVER_FINAL)  # the client accepts the server's proof


def test_add_user_stores_rfc_5802_keys_and_never_the_password(
    identities: Identities, path: str
) -> None:
    info = identities.add_user("ada", PASSWORD, admin=False)
    assert (info.name, info.admin, info.grants) == ("ada", False, [])
    keys = identities.scram_keys("ada")
    assert keys is not None and keys.iterations == ITERATIONS >= 4096
    assert len(keys.salt) == 32
    assert (keys.stored_key, keys.server_key) == rfc5802_keys(PASSWORD, keys.salt, ITERATIONS)
    on_disk = _on_disk(path)
    assert PASSWORD.encode() not in on_disk
    assert base64.b64encode(PASSWORD.encode()) not in on_disk
    assert set(MetadataStore.open(LOCAL_FS, path, read_only=True).get(USERS, "ada")) == {
        "salt", "stored_key", "server_key", "iterations", "grants", "created_ms", "generation",
    }  # fmt: skip
    identities.add_user("bob", PASSWORD)
    other = identities.scram_keys("bob")
    assert other is not None and other.salt != keys.salt, "a salt per user"


def test_a_scram_exchange_with_a_stored_user(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)

    def exchange(name: str, password: str) -> None:
        client = scramp.ScramClient(["SCRAM-SHA-256"], name, password)
        server = identities.scram_server()
        server.set_client_first(client.get_client_first())
        client.set_server_first(server.get_server_first())
        server.set_client_final(client.get_client_final())
        client.set_server_final(server.get_server_final())  # raises unless "v=" and right

    exchange("ada", PASSWORD)
    with pytest.raises(scramp.ScramException):
        exchange("ada", "wrong password")
    with pytest.raises(scramp.ScramException):
        exchange("nobody", PASSWORD)


def test_unknown_names_get_salts_of_their_own(identities: Identities, path: str) -> None:
    identities.add_user("ada", PASSWORD)
    salts = {name: identities.scram_lookup(name)[0] for name in ("x", "y", "z")}
    assert len(set(salts.values())) == 3, "one salt shared by unknown names would name them"
    assert identities.scram_lookup("x")[0] == salts["x"], "stable, as a real user's is"
    assert reopened(path, ManualClock()).scram_lookup("x")[0] == salts["x"], "across restarts"
    real = identities.scram_lookup("ada")
    assert (len(salts["x"]), identities.scram_lookup("x")[3]) == (len(real[0]), real[3])


# -- passwords ------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_fail_alike(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)
    assert identities.authenticate_password("ada", PASSWORD).name == "ada"
    with pytest.raises(NotAuthenticated) as wrong:
        identities.authenticate_password("ada", "not it at all")
    with pytest.raises(NotAuthenticated) as unknown:
        identities.authenticate_password("nobody", PASSWORD)
    assert (
        str(wrong.value)
        == str(unknown.value)
        == "authentication failed: wrong user name or password"
    )
    with pytest.raises(NotAuthenticated):
        identities.authenticate_password("ada", "bad\x07control")  # SASLprep refuses it


def test_passwords_are_saslprepped_as_scram_does(identities: Identities) -> None:
    identities.add_user("ada", "horse\u00a0battery")  # a no-break space is a space to SCRAM
    assert identities.authenticate_password("ada", "horse battery").name == "ada"
    assert identities.authenticate_password("ada", "horse\u00a0batt\u00adery").name == "ada"


def test_password_rules(identities: Identities) -> None:
    with pytest.raises(InvalidConfig, match="between 8 and 1024"):
        identities.add_user("ada", "short")
    with pytest.raises(InvalidConfig, match="SCRAM") as refused:
        identities.add_user("ada", "bell\x07bell\x07")
    assert "bell" not in str(refused.value), "a refused password is never echoed"
    with pytest.raises(InvalidName):
        identities.add_user("ada lovelace", PASSWORD)
    identities.add_user("ada", PASSWORD)
    with pytest.raises(UserExists):
        identities.add_user("ada", "another password")
    assert not identities.list_users()[0].admin


def test_a_new_password_replaces_the_old_one_at_once(
    identities: Identities, clock: ManualClock
) -> None:
    identities.add_user("ada", PASSWORD)
    identities.grant("ada", Grant.parse("publish", "topic:a"))
    identities.authenticate_password("ada", PASSWORD)  # remembered for BASIC_CACHE_MS
    identities.set_password("ada", "a new password")
    with pytest.raises(NotAuthenticated):
        identities.authenticate_password("ada", PASSWORD)
    assert identities.authenticate_password("ada", "a new password").may("publish", "topic", "a")
    with pytest.raises(UnknownUser):
        identities.set_password("nobody", "a new password")


def test_a_remembered_password_is_not_remembered_for_long(
    identities: Identities, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    identities.add_user("ada", PASSWORD)
    checks: list[bytes] = []
    real = hashlib.pbkdf2_hmac

    def counted(name: str, password: bytes, salt: bytes, rounds: int) -> bytes:
        checks.append(password)
        return real(name, password, salt, rounds)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
    identities.authenticate_password("ada", PASSWORD)
    identities.authenticate_password("ada", PASSWORD)
    assert len(checks) == 1, "the second check is remembered"
    with pytest.raises(NotAuthenticated):
        identities.authenticate_password("ada", "wrong password")
    assert len(checks) == 2, "a wrong one is never remembered"
    clock.advance(60_000)
    identities.authenticate_password("ada", PASSWORD)
    assert len(checks) == 3, "checked again once the minute is over"


# -- tokens ---------------------------------------------------------------------------------


def _on_disk(path: str) -> bytes:
    """Every byte the metadata store keeps: its snapshot (if any) and its journal."""
    files = [Path(path), Path(path + ".journal")]
    return b"".join(file.read_bytes() for file in files if file.exists())


def test_a_token_is_shown_once_and_stored_as_a_hash(identities: Identities, path: str) -> None:
    identities.add_user("ada", PASSWORD)
    token = identities.create_token("ada", description="ci")
    assert token.secret.startswith(f"rst_{token.id}_")
    assert identities.authenticate_token(token.secret).name == "ada"
    on_disk = _on_disk(path).decode("latin-1")  # CRCs are not text
    assert token.secret not in on_disk
    # The random part, whole (it may hold '_' itself: a split on '_' could keep a few chars).
    assert token.secret[len(f"rst_{token.id}_") :] not in on_disk
    stored = MetadataStore.open(LOCAL_FS, path, read_only=True).get(TOKENS, token.id)
    assert stored["sha256"] == hashlib.sha256(token.secret.encode()).hexdigest()
    [listed] = identities.list_tokens("ada")
    assert (listed.id, listed.user, listed.description, listed.expires_ms) == (
        token.id, "ada", "ci", None,
    )  # fmt: skip
    assert "secret" not in msgspec.structs.asdict(listed)
    assert reopened(path, ManualClock()).authenticate_token(token.secret).name == "ada"


def test_tokens_expire(identities: Identities, clock: ManualClock) -> None:
    identities.add_user("ada", PASSWORD)
    token = identities.create_token("ada", expires_ms=clock.now_ms() + DAY_MS)
    clock.advance(DAY_MS - 1)
    assert identities.authenticate_token(token.secret).name == "ada"
    clock.advance(1)
    with pytest.raises(NotAuthenticated, match="invalid, expired or revoked token"):
        identities.authenticate_token(token.secret)
    with pytest.raises(InvalidConfig, match="future"):
        identities.create_token("ada", expires_ms=clock.now_ms())
    with pytest.raises(InvalidConfig, match="200"):
        identities.create_token("ada", description="x" * 201)
    with pytest.raises(UnknownUser):
        identities.create_token("nobody")


def test_revoked_tokens_are_refused(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)
    kept, revoked = identities.create_token("ada"), identities.create_token("ada")
    identities.revoke_token(revoked.id)
    with pytest.raises(NotAuthenticated):
        identities.authenticate_token(revoked.secret)
    assert identities.authenticate_token(kept.secret).name == "ada"
    assert [t.id for t in identities.list_tokens()] == [kept.id]
    with pytest.raises(UnknownToken):
        identities.revoke_token(revoked.id)


@pytest.mark.parametrize(
    "secret",
    ["", "rst_", "rst__", "rst_x", "rst_abc_", "bearer", "rst_\udcff_x", "x" * 10_000,
     "rst_{id}_wrong", "rst_{id}_{rest}x", "RST_{id}_{rest}", "rst_{id}"],
)  # fmt: skip
def test_malformed_or_forged_tokens_are_refused(identities: Identities, secret: str) -> None:
    identities.add_user("ada", PASSWORD)
    token = identities.create_token("ada")
    rest = token.secret.split("_", 2)[2]
    with pytest.raises(NotAuthenticated, match="invalid, expired or revoked token"):
        identities.authenticate_token(secret.format(id=token.id, rest=rest))


def test_deleting_a_user_deletes_their_tokens(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)
    identities.add_user("bob", PASSWORD)
    ada, bob = identities.create_token("ada"), identities.create_token("bob")
    principal = identities.authenticate_token(ada.secret)
    identities.delete_user("ada")
    assert [t.user for t in identities.list_tokens()] == ["bob"]
    with pytest.raises(NotAuthenticated):
        identities.authenticate_token(ada.secret)
    with pytest.raises(NotAuthenticated):
        identities.principal(principal.name)
    assert identities.authenticate_token(bob.secret).name == "bob"
    with pytest.raises(UnknownUser):
        identities.delete_user("ada")
    identities.add_user("ada", PASSWORD)
    with pytest.raises(NotAuthenticated):  # a new ada does not inherit the old one's tokens
        identities.authenticate_token(ada.secret)


# -- grants ---------------------------------------------------------------------------------


def test_grants_and_revokes(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)
    orders = Grant.parse("publish", "topic:orders.*")
    emails = Grant.parse("consume", "queue:emails")
    identities.grant("ada", orders)
    info = identities.grant("ada", emails)
    assert identities.grant("ada", orders) == info, "granting twice changes nothing"
    assert info.grants == [orders, emails]
    assert identities.list_grants("ada") == [orders, emails]
    ada = identities.principal("ada")
    assert ada.may("publish", "topic", "orders.eu") and ada.may("consume", "group", "emails")
    assert not ada.may("publish", "topic", "orders")

    assert identities.revoke("ada", orders).grants == [emails]
    with pytest.raises(UnknownGrant) as unknown:
        identities.revoke("ada", orders)
    assert str(unknown.value) == "user 'ada' holds no grant 'publish topic:orders.*'"
    with pytest.raises(UnknownGrant):  # removed as given, not by what it matches
        identities.revoke("ada", Grant.parse("consume", "queue:*"))
    assert not identities.principal("ada").may("publish", "topic", "orders.eu")
    with pytest.raises(InvalidPattern):
        identities.grant("ada", Grant("publish", "topic", "orders*"))
    with pytest.raises(InvalidConfig):
        identities.grant("ada", Grant("admin", "topic", "x"))
    with pytest.raises(UnknownUser):
        identities.grant("nobody", orders)
    with pytest.raises(UnknownUser):
        identities.list_grants("nobody")


def test_admin_is_the_admin_grant(identities: Identities) -> None:
    assert identities.add_user("root", PASSWORD, admin=True).admin
    assert identities.describe_user("root").grants == [Grant("admin")]
    assert identities.principal("root").may("admin", "broker", "")
    identities.add_user("ada", PASSWORD)
    assert identities.grant("ada", Grant.parse("admin")).admin
    assert identities.principal("ada").admin
    assert not identities.set_admin("ada", False).admin
    assert not identities.set_admin("ada", False).admin, "already so: nothing to do"
    assert not identities.principal("ada").admin
    assert identities.set_admin("ada", True).grants == [Grant("admin")]
    identities.grant("ada", Grant.parse("monitor"))
    ada = identities.revoke("ada", Grant("admin"))
    assert (ada.admin, ada.grants) == (False, [Grant("monitor")])
    assert identities.principal("ada").monitor and not identities.principal("ada").admin


def test_principals_are_cached_until_something_changes(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)
    first = identities.principal("ada")
    assert identities.principal("ada") is first, "cached"
    assert identities.authenticate_password("ada", PASSWORD) is first
    identities.grant("ada", Grant.parse("monitor"))
    second = identities.principal("ada")
    assert second is not first and second.monitor and not first.monitor, "never edited"
    identities.add_user("bob", PASSWORD)  # any change: the cache starts over
    assert identities.principal("ada") is not second
    token = identities.create_token("ada")
    assert identities.authenticate_token(token.secret) is identities.principal("ada")


def test_users_listed_and_described(identities: Identities, clock: ManualClock) -> None:
    assert not identities.any_users and identities.list_users() == []
    identities.add_user("bob", PASSWORD)
    clock.advance(5)
    identities.add_user("ada", PASSWORD, admin=True)
    assert identities.any_users
    assert [(u.name, u.admin) for u in identities.list_users()] == [("ada", True), ("bob", False)]
    assert identities.describe_user("ada").created_ms == clock.now_ms()
    with pytest.raises(UnknownUser, match="unknown user 'nobody'"):
        identities.describe_user("nobody")
    assert identities.scram_keys("nobody") is None


def test_a_password_check_can_run_apart_from_the_identities(
    identities: Identities, clock: ManualClock
) -> None:
    """``begin_password`` on the loop, ``PasswordCheck.run`` anywhere (the PBKDF2), then
    ``end_password`` on the loop: the same answers as ``authenticate_password``."""
    identities.add_user("ada", PASSWORD)
    wrong = identities.begin_password("ada", "not it at all")
    assert isinstance(wrong, PasswordCheck) and wrong.run() is False
    with pytest.raises(NotAuthenticated):
        identities.end_password(wrong, wrong.run())
    nobody = identities.begin_password("nobody", PASSWORD)
    assert isinstance(nobody, PasswordCheck) and nobody.run() is False
    right = identities.begin_password("ada", PASSWORD)
    assert isinstance(right, PasswordCheck) and right.run() is True
    assert identities.end_password(right, True).name == "ada"
    # Remembered: the next login with it needs no PBKDF2, until the memory runs out.
    assert isinstance(identities.begin_password("ada", PASSWORD), Principal)
    clock.advance(BASIC_CACHE_MS + 1)
    assert isinstance(identities.begin_password("ada", PASSWORD), PasswordCheck)


@pytest.mark.parametrize("name", ["anonymous", "unauthenticated", "embedded"])
def test_the_names_of_principals_that_are_no_user_are_reserved(
    identities: Identities, name: str
) -> None:
    with pytest.raises(InvalidName, match="reserved"):
        identities.add_user(name, PASSWORD)


def test_a_password_checked_while_it_changed_is_not_remembered(identities: Identities) -> None:
    identities.add_user("ada", PASSWORD)
    check = identities.begin_password("ada", PASSWORD)
    assert isinstance(check, PasswordCheck)
    matched = check.run()  # off the loop, while...
    identities.set_password("ada", "a new password")  # ...the password changes
    with pytest.raises(NotAuthenticated):
        identities.end_password(check, matched)
    with pytest.raises(NotAuthenticated):
        identities.authenticate_password("ada", PASSWORD)
