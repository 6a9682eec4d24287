"""Users, API tokens and grants, kept in the data directory's metadata store.

    identities = Identities(engine.metadata, clock)
    identities.add_user("ada", "correct horse", admin=False)
    identities.grant("ada", Grant.parse("publish", "topic:orders.*"))
    token = identities.create_token("ada", expires_ms=None)   # shown once
    principal = identities.authenticate_token(token.secret)

Rules:

- A password is never stored: only its SCRAM-SHA-256 keys (RFC 5802/7677: salt, iteration
  count, StoredKey, ServerKey), which let the native handshake prove a password without it
  crossing the wire, and let HTTP basic auth check one. Anyone who reads ``metadata.json``
  can still mount an offline guessing attack on a weak password: keep the directory private.
- A token is ``rst_<id>_<secret>``: the id finds its record, the secret is kept only as its
  SHA-256 (a random 256-bit secret needs no slow hash). It is shown once, when created.
- Every comparison of secrets is constant-time; an unknown user costs the same PBKDF2 as a
  known one, and both answer the same ``NotAuthenticated``, so names cannot be probed.
- Principals are cached per metadata version: any change (a grant, a revoked token, a deleted
  user) makes the next authentication and the next ``principal`` see it.

Records, in namespace ``users`` (name -> record) and ``tokens`` (id -> record), are JSON; the
format is in docs/security.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any, Final

import msgspec
import scramp

from roost.clock import Clock
from roost.errors import (
    InvalidConfig,
    NotAuthenticated,
    UnknownToken,
    UnknownUser,
    UserExists,
)
from roost.server.access import Grant, Principal
from roost.storage.config import check_name
from roost.storage.metadata import MetadataStore

USERS: Final = "users"
TOKENS: Final = "tokens"
MECHANISM: Final = "SCRAM-SHA-256"
#: RFC 7677 asks for at least 4096; each login costs one PBKDF2 of this many rounds.
ITERATIONS: Final = 4096
TOKEN_PREFIX: Final = "rst_"
#: Passwords checked by HTTP basic auth are remembered this long (a hash of them, never the
#: password), so a script's every request does not pay a PBKDF2.
BASIC_CACHE_MS: Final = 60_000
_SCRAM = scramp.ScramMechanism(MECHANISM)
#: Keys of a user nobody has, checked against when the name is unknown: the same work either way.
_NOBODY: tuple[bytes, bytes, bytes, int] = _SCRAM.make_auth_info(
    secrets.token_hex(16), iteration_count=ITERATIONS
)
#: Keys the stand-in salt of each unknown name (``scram_lookup``).
_NOBODY_SALTS = secrets.token_bytes(32)


class UserInfo(msgspec.Struct, frozen=True):
    name: str
    admin: bool
    grants: list[str]
    created_ms: int


class TokenInfo(msgspec.Struct, frozen=True):
    id: str
    user: str
    created_ms: int
    expires_ms: int | None
    description: str


class NewToken(msgspec.Struct, frozen=True):
    """A token just created: ``secret`` is the whole token, shown this once."""

    id: str
    user: str
    secret: str
    expires_ms: int | None


class ScramKeys(msgspec.Struct, frozen=True):
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


class _User(msgspec.Struct):
    salt: str
    stored_key: str
    server_key: str
    iterations: int
    admin: bool = False
    grants: list[tuple[str, str, str]] = msgspec.field(default_factory=list)
    created_ms: int = 0

    def keys(self) -> ScramKeys:
        return ScramKeys(_unb64(self.salt), _unb64(self.stored_key), _unb64(self.server_key),
                         self.iterations)  # fmt: skip


class _Token(msgspec.Struct):
    user: str
    sha256: str
    created_ms: int
    expires_ms: int | None = None
    description: str = ""


class Identities:
    def __init__(self, store: MetadataStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._principals: dict[str, Principal] = {}
        self._basic: dict[bytes, tuple[str, int]] = {}  # hash of name+password -> (name, until)
        self._version = -1

    # -- reading --------------------------------------------------------------------------

    @property
    def any_users(self) -> bool:
        """With none, listeners on loopback serve anonymously (docs/security.md)."""
        return bool(self._store.names(USERS))

    def list_users(self) -> list[UserInfo]:
        return [self._info(name, self._user(name)) for name in self._store.names(USERS)]

    def describe_user(self, name: str) -> UserInfo:
        return self._info(name, self._user(name))

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        found = []
        for token_id in self._store.names(TOKENS):
            token = msgspec.convert(self._store.get(TOKENS, token_id), _Token)
            if user is None or token.user == user:
                found.append(TokenInfo(token_id, token.user, token.created_ms, token.expires_ms,
                                       token.description))  # fmt: skip
        return found

    def scram_keys(self, name: str) -> ScramKeys | None:
        """The stored SCRAM keys of ``name``, or None for an unknown user."""
        record = self._store.get(USERS, name)
        return None if record is None else msgspec.convert(record, _User).keys()

    def scram_lookup(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        """For ``scramp``'s server: a user's keys, or a stand-in's for an unknown name (the
        exchange then fails at the proof, as a wrong password does)."""
        keys = self.scram_keys(name)
        if keys is None:
            # A salt of this name's own, the same on every try: the server-first message
            # shows the salt, and one salt shared by every unknown name would tell them
            # apart from users, who each have their own.
            salt = hmac.digest(_NOBODY_SALTS, name.encode(), "sha256")[: len(_NOBODY[0])]
            return salt, _NOBODY[1], _NOBODY[2], _NOBODY[3]
        return keys.salt, keys.stored_key, keys.server_key, keys.iterations

    def principal(self, name: str) -> Principal:
        """What ``name`` may do now; raises ``NotAuthenticated`` if the user is gone."""
        self._refresh()
        principal = self._principals.get(name)
        if principal is None:
            record = self._store.get(USERS, name)
            if record is None:
                raise NotAuthenticated("the user no longer exists")
            user = msgspec.convert(record, _User)
            grants = tuple(Grant(*grant) for grant in user.grants)
            principal = self._principals[name] = Principal(name, grants, user.admin)
        return principal

    # -- authenticating -------------------------------------------------------------------

    def authenticate_password(self, name: str, password: str) -> Principal:
        """Check a password against the stored keys (HTTP basic auth, the dashboard's login);
        ``NotAuthenticated`` for a wrong password and an unknown user alike."""
        self._refresh()
        remembered = hashlib.sha256(f"{name}\0{password}".encode()).digest()
        cached = self._basic.get(remembered)
        now = self._clock.monotonic_ms()
        if cached is not None and cached[1] > now:
            return self.principal(cached[0])
        salt, stored_key, _, iterations = self.scram_lookup(name)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        matches = hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
        if not matches or self._store.get(USERS, name) is None:
            raise NotAuthenticated("wrong user name or password")
        if len(self._basic) > 1024:
            self._basic.clear()
        self._basic[remembered] = (name, now + BASIC_CACHE_MS)
        return self.principal(name)

    def authenticate_token(self, secret: str) -> Principal:
        """The principal of a token's user; ``NotAuthenticated`` if it is malformed, unknown,
        revoked or expired (one message for all: nothing to probe)."""
        token_id, secret_hash = _split_token(secret)
        record = self._store.get(TOKENS, token_id) if token_id else None
        # Compared even when there is no record, against a digest nobody has: same work.
        stored = msgspec.convert(record, _Token).sha256 if record else "0" * 64
        if not hmac.compare_digest(stored, secret_hash) or record is None:
            raise NotAuthenticated("invalid, expired or revoked token")
        token = msgspec.convert(record, _Token)
        if token.expires_ms is not None and self._clock.now_ms() >= token.expires_ms:
            raise NotAuthenticated("invalid, expired or revoked token")
        return self.principal(token.user)

    def scram_server(self) -> Any:
        """A ``scramp`` server for one SCRAM-SHA-256 exchange against these users."""
        return _SCRAM.make_server(self.scram_lookup)

    # -- changing -------------------------------------------------------------------------

    def add_user(self, name: str, password: str, admin: bool = False) -> UserInfo:
        check_name("user", name)
        _check_password(password)
        if self._store.get(USERS, name) is not None:
            raise UserExists(name)
        user = _new_user(password, admin, self._clock.now_ms())
        self._put_user(name, user)
        return self._info(name, user)

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        old = self._user(name)
        user = _new_user(password, old.admin, old.created_ms)
        user.grants = old.grants
        self._put_user(name, user)

    def set_admin(self, name: str, admin: bool) -> UserInfo:
        user = self._user(name)
        user.admin = admin
        self._put_user(name, user)
        return self._info(name, user)

    def delete_user(self, name: str) -> None:
        """Delete ``name`` and every token of theirs."""
        self._user(name)
        tokens = [t.id for t in self.list_tokens(name)]
        with self._store.transaction() as txn:
            txn.delete(USERS, name)
            for token_id in tokens:
                txn.delete(TOKENS, token_id)

    def grant(self, name: str, grant: Grant) -> UserInfo:
        user = self._user(name)
        row = (grant.check().operation, grant.kind, grant.pattern)
        if row not in user.grants:
            user.grants.append(row)
            self._put_user(name, user)
        return self._info(name, user)

    def revoke(self, name: str, grant: Grant) -> UserInfo:
        """Remove ``grant`` from ``name``; revoking what was never granted changes nothing."""
        user = self._user(name)
        row = (grant.operation, grant.kind, grant.pattern)
        if row in user.grants:
            user.grants.remove(row)
            self._put_user(name, user)
        return self._info(name, user)

    def create_token(
        self, user: str, expires_ms: int | None = None, description: str = ""
    ) -> NewToken:
        """A new token for ``user``, valid until ``expires_ms`` (wall clock, ms) if given."""
        self._user(user)
        if expires_ms is not None and expires_ms <= self._clock.now_ms():
            raise InvalidConfig("expires_ms", expires_ms, "a time in the future")
        token_id = secrets.token_hex(8)
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = _Token(user, _split_token(secret)[1], self._clock.now_ms(), expires_ms,
                        description)  # fmt: skip
        with self._store.transaction() as txn:
            txn.put(TOKENS, token_id, msgspec.to_builtins(record))
        return NewToken(token_id, user, secret, expires_ms)

    def revoke_token(self, token_id: str) -> None:
        if self._store.get(TOKENS, token_id) is None:
            raise UnknownToken(token_id)
        with self._store.transaction() as txn:
            txn.delete(TOKENS, token_id)

    # -- helpers --------------------------------------------------------------------------

    def _user(self, name: str) -> _User:
        record = self._store.get(USERS, name)
        if record is None:
            raise UnknownUser(name)
        return msgspec.convert(record, _User)

    def _put_user(self, name: str, user: _User) -> None:
        with self._store.transaction() as txn:
            txn.put(USERS, name, msgspec.to_builtins(user))

    def _refresh(self) -> None:
        if self._store.version != self._version:
            self._principals.clear()
            self._basic.clear()
            self._version = self._store.version

    @staticmethod
    def _info(name: str, user: _User) -> UserInfo:
        grants = [str(Grant(*grant)) for grant in user.grants]
        return UserInfo(name, user.admin, grants, user.created_ms)


def _new_user(password: str, admin: bool, created_ms: int) -> _User:
    salt, stored_key, server_key, iterations = _SCRAM.make_auth_info(
        password, iteration_count=ITERATIONS
    )
    return _User(_b64(salt), _b64(stored_key), _b64(server_key), iterations, admin,
                 created_ms=created_ms)  # fmt: skip


def _check_password(password: str) -> None:
    if not 8 <= len(password) <= 1024:
        raise InvalidConfig("password", "(hidden)", "between 8 and 1024 characters")


def _split_token(secret: str) -> tuple[str, str]:
    """(id, SHA-256 hex of the whole token); id empty when it is not shaped as a token."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if not secret.startswith(TOKEN_PREFIX):
        return "", digest
    token_id, underscore, rest = secret[len(TOKEN_PREFIX) :].partition("_")
    return (token_id if underscore and rest else ""), digest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
