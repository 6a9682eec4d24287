"""Users, API tokens and grants, kept in the data directory's metadata store.

    identities = Identities(engine.metadata, clock)
    identities.add_user("ada", "correct horse", admin=False)
    identities.grant("ada", Grant.parse("publish", "topic:orders.*"))
    token = identities.create_token("ada", expires_ms=None)   # token.secret: shown once
    principal = identities.authenticate_token(token.secret)

Rules:

- A password is never stored: only its SCRAM-SHA-256 keys (RFC 5802/7677: salt, iteration
  count, StoredKey, ServerKey), which let the native handshake prove a password without it
  crossing the wire, and let HTTP basic auth check one. Passwords are SASLprepped first, as
  SCRAM does, so both ways accept the same passwords. Anyone who reads ``metadata.json`` can
  still mount an offline guessing attack on a weak password: keep the directory private.
- A token is ``rst_<id>_<secret>``: the id finds its record, the secret is kept only as the
  SHA-256 of the whole token (a random 256-bit secret needs no slow hash). It is shown once,
  when created; a deleted user's tokens go in the same transaction.
- Names cannot be probed: a wrong password and an unknown user answer the same
  ``NotAuthenticated`` after the same PBKDF2, and SCRAM offers an unknown name a salt of its
  own (an HMAC of the name under a key stored with the users), stable like a real one, never
  one salt shared by every unknown name. Every comparison of secrets is constant-time.
- ``admin`` is a grant like the others (``Grant("admin")``): ``add_user(admin=True)`` grants
  it and revoking it takes it away; there is no second flag to disagree with it.
- Principals are cached per metadata version: any change (a grant, a revoked token, a deleted
  user, a new password) makes the next authentication and the next ``principal`` see it.

Records are JSON in namespaces ``users`` (name -> ``{"salt", "stored_key", "server_key"``:
base64, ``"iterations", "grants": [[operation, kind, pattern], ...], "created_ms"}``),
``tokens`` (id -> ``{"user", "sha256"``: hex of the whole token, ``"created_ms",
"expires_ms", "description"}``) and ``security`` (``mock_salt_key``: base64 of 32 random
bytes, written with the first user).

Methods run on the thread that owns the metadata store (the host's loop, or the CLI).
Changes fsync the metadata file; authentication reads only, and costs one PBKDF2 for a
password (then ``BASIC_CACHE_MS`` of nothing), one SHA-256 for a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any, Final

import msgspec
import scramp
from scramp.utils import saslprep  # type: ignore[import-untyped]  # "scramp" alone is in the mypy overrides

from roost.clock import Clock
from roost.errors import (
    InvalidConfig,
    InvalidName,
    NotAuthenticated,
    UnknownGrant,
    UnknownToken,
    UnknownUser,
    UserExists,
)
from roost.server.access import Grant, Principal
from roost.storage.config import check_name
from roost.storage.metadata import MetadataStore

USERS: Final = "users"
TOKENS: Final = "tokens"
SECURITY: Final = "security"
MOCK_SALT_KEY: Final = "mock_salt_key"
MECHANISM: Final = "SCRAM-SHA-256"
#: RFC 7677 asks for at least 4096; each login costs one PBKDF2 of this many rounds.
ITERATIONS: Final = 4096
#: As long as the salts scramp makes, so a mock salt does not stand out by its length.
SALT_BYTES: Final = 32
TOKEN_PREFIX: Final = "rst_"
MIN_PASSWORD_CHARS: Final = 8
MAX_PASSWORD_CHARS: Final = 1024
MAX_DESCRIPTION_CHARS: Final = 200
#: Passwords checked by HTTP basic auth are remembered this long (a hash of them, never the
#: password), so a script's every request does not pay a PBKDF2.
BASIC_CACHE_MS: Final = 60_000
#: Remembered passwords at most; past it the memory starts over.
MAX_BASIC_CACHE: Final = 1024
ADMIN: Final = Grant("admin")
#: The names of the principals that are no user (access.py): a user by one of them could be
#: mistaken for it in logs, counts and checks.
RESERVED_NAMES: Final = frozenset({"anonymous", "unauthenticated", "embedded"})
_SCRAM = scramp.ScramMechanism(MECHANISM)
#: Keys no password gives, for the names nobody has: checking against them fails as a wrong
#: password does, after the same work.
_MOCK_KEY: Final = secrets.token_bytes(32)


class UserInfo(msgspec.Struct, frozen=True):
    name: str
    #: Holds the ``admin`` grant: may do everything.
    admin: bool
    grants: list[Grant]
    created_ms: int


class TokenInfo(msgspec.Struct, frozen=True):
    id: str
    user: str
    created_ms: int
    #: Wall-clock ms after which it is refused; null: never.
    expires_ms: int | None
    description: str


class NewToken(msgspec.Struct, frozen=True):
    """A token just created: ``secret`` is the whole token, shown this once."""

    id: str
    user: str
    secret: str
    created_ms: int
    expires_ms: int | None
    description: str


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
    grants: list[tuple[str, str, str]] = msgspec.field(default_factory=list)
    created_ms: int = 0
    #: Random, new with the user and with each new password (``Principal.generation``).
    generation: str = ""

    def keys(self) -> ScramKeys:
        return ScramKeys(_unb64(self.salt), _unb64(self.stored_key), _unb64(self.server_key),
                         self.iterations)  # fmt: skip

    def granted(self) -> list[Grant]:
        return [Grant(*row) for row in self.grants]


class _Token(msgspec.Struct):
    user: str
    sha256: str
    created_ms: int
    expires_ms: int | None = None
    description: str = ""


class PasswordCheck(msgspec.Struct, frozen=True):
    """One password against one user's stored keys: the PBKDF2 (thousands of rounds) that a
    password login costs, kept apart so it can run off the event loop."""

    name: str
    #: The password SASLprepped and encoded; None when SCRAM accepts no such password.
    prepared: bytes | None
    keys: ScramKeys
    remembered: tuple[str, bytes]

    def run(self) -> bool:
        """Whether the password matches (constant-time; the same work for any outcome)."""
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.prepared or b"", self.keys.salt, self.keys.iterations
        )
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored = hashlib.sha256(client_key).digest()
        return hmac.compare_digest(stored, self.keys.stored_key) and self.prepared is not None


class Identities:
    def __init__(self, store: MetadataStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._principals: dict[str, Principal] = {}
        #: (name, SHA-256 of the password) -> until when (monotonic ms) it was right.
        self._basic: dict[tuple[str, bytes], int] = {}
        self._version = -1

    # -- reading --------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Changes whenever users, tokens or grants may have changed (any metadata change)."""
        return self._store.version

    @property
    def any_users(self) -> bool:
        """With none, listeners on loopback serve anonymously (docs/security.md)."""
        return bool(self._store.names(USERS))

    def list_users(self) -> list[UserInfo]:
        return [self._info(name, self._user(name)) for name in self._store.names(USERS)]

    def describe_user(self, name: str) -> UserInfo:
        """``UnknownUser`` if there is none."""
        return self._info(name, self._user(name))

    def list_grants(self, name: str) -> list[Grant]:
        """``name``'s grants in the order given; ``UnknownUser`` if there is none."""
        return self._user(name).granted()

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Every token (of ``user``), oldest first, without their secrets."""
        found = []
        for token_id in self._store.names(TOKENS):
            token = msgspec.convert(self._store.get(TOKENS, token_id), _Token)
            if user is None or token.user == user:
                found.append(TokenInfo(token_id, token.user, token.created_ms, token.expires_ms,
                                       token.description))  # fmt: skip
        return sorted(found, key=lambda t: (t.created_ms, t.id))

    def scram_keys(self, name: str) -> ScramKeys | None:
        """The stored SCRAM keys of ``name``, or None for an unknown user."""
        record = self._store.get(USERS, name)
        return None if record is None else msgspec.convert(record, _User).keys()

    def scram_lookup(self, name: str) -> tuple[bytes, bytes, bytes, int]:
        """For ``scramp``'s server: a user's keys, or mock keys for an unknown name (the
        exchange then fails at the proof, as a wrong password does)."""
        keys = self.scram_keys(name) or self._mock_keys(name)
        return keys.salt, keys.stored_key, keys.server_key, keys.iterations

    def principal(self, name: str) -> Principal:
        """What ``name`` may do now; ``NotAuthenticated`` if the user is gone."""
        self._refresh()
        principal = self._principals.get(name)
        if principal is None:
            record = self._store.get(USERS, name)
            if record is None:
                raise NotAuthenticated("the user no longer exists")
            user = msgspec.convert(record, _User)
            principal = Principal(name, tuple(user.granted()), generation=user.generation)
            self._principals[name] = principal
        return principal

    # -- authenticating -------------------------------------------------------------------

    def authenticate_password(self, name: str, password: str) -> Principal:
        """Check a password against the stored keys (HTTP basic auth, the dashboard's login);
        ``NotAuthenticated`` for a wrong password and an unknown user alike. Blocking for a
        PBKDF2 unless remembered: on an event loop, use ``begin_password`` and run the check
        in a thread (``roost.admin.auth`` does)."""
        begun = self.begin_password(name, password)
        if isinstance(begun, Principal):
            return begun
        return self.end_password(begun, begun.run())

    def begin_password(self, name: str, password: str) -> Principal | PasswordCheck:
        """The first step of ``authenticate_password``: the principal, when this password
        was checked lately; else the ``PasswordCheck`` to run (anywhere: it touches nothing
        shared) and hand to ``end_password``."""
        self._refresh()
        try:
            prepared = saslprep(password).encode()
        except scramp.ScramException:
            prepared = None  # no password SCRAM accepts: wrong, after the same work below
        remembered = (name, hashlib.sha256(prepared or b"").digest())
        now = self._clock.monotonic_ms()
        if prepared is not None and self._basic.get(remembered, now) > now:
            return self.principal(name)
        keys = self.scram_keys(name) or self._mock_keys(name)
        return PasswordCheck(name, prepared, keys, remembered)

    def end_password(self, check: PasswordCheck, matched: bool) -> Principal:
        """The last step: the principal if ``check`` matched, remembered for a while."""
        if not matched:
            raise NotAuthenticated("wrong user name or password")
        keys = self.scram_keys(check.name)
        if keys is None or not hmac.compare_digest(keys.stored_key, check.keys.stored_key):
            # The password changed (or the user went) while this one was being checked.
            raise NotAuthenticated("wrong user name or password")
        if len(self._basic) >= MAX_BASIC_CACHE:
            self._basic.clear()
        self._basic[check.remembered] = self._clock.monotonic_ms() + BASIC_CACHE_MS
        return self.principal(check.name)

    def authenticate_token(self, secret: str) -> Principal:
        """The principal of a token's user; ``NotAuthenticated`` if it is malformed, unknown,
        revoked or expired (one message for all: nothing to probe)."""
        token_id, secret_hash = _split_token(secret)
        record = self._store.get(TOKENS, token_id) if token_id else None
        # Compared even when there is no record, against a digest nobody has: same work.
        token = msgspec.convert(record, _Token) if record is not None else None
        stored = token.sha256 if token is not None else "0" * 64
        if not hmac.compare_digest(stored, secret_hash) or token is None:
            raise NotAuthenticated("invalid, expired or revoked token")
        if token.expires_ms is not None and self._clock.now_ms() >= token.expires_ms:
            raise NotAuthenticated("invalid, expired or revoked token")
        return self.principal(token.user)

    def scram_server(
        self,
        s_nonce: str | None = None,
        lookup: Callable[[str], tuple[bytes, bytes, bytes, int]] | None = None,
    ) -> Any:
        """A ``scramp`` server for one SCRAM-SHA-256 exchange against these users.

        ``lookup`` stands in for ``scram_lookup`` (the native handshake's notes the name it is
        asked for). ``s_nonce`` is for tests that replay a published exchange: a server's nonce
        must be fresh and random for each exchange, which is what None gives."""
        return _SCRAM.make_server(lookup or self.scram_lookup, s_nonce=s_nonce)

    # -- changing -------------------------------------------------------------------------

    def add_user(self, name: str, password: str, admin: bool = False) -> UserInfo:
        """A new user, with the ``admin`` grant if ``admin``; ``UserExists``, ``InvalidName``,
        or ``InvalidConfig`` for a password SCRAM cannot take or shorter than 8."""
        check_name("user", name)
        if name in RESERVED_NAMES:
            raise InvalidName("user", name, f"reserved: {sorted(RESERVED_NAMES)} name no user")
        if self._store.get(USERS, name) is not None:
            raise UserExists(name)
        user = _new_user(password, self._clock.now_ms())
        if admin:
            user.grants.append(_row(ADMIN))
        with self._store.transaction() as txn:
            txn.put(USERS, name, msgspec.to_builtins(user))
            if txn.get(SECURITY, MOCK_SALT_KEY) is None:
                txn.put(SECURITY, MOCK_SALT_KEY, _b64(secrets.token_bytes(32)))
        return self._info(name, user)

    def set_password(self, name: str, password: str) -> None:
        """New keys (and a new salt) for ``name``; grants and tokens stay."""
        old = self._user(name)
        user = _new_user(password, old.created_ms)
        user.grants = old.grants
        self._put_user(name, user)

    def set_admin(self, name: str, admin: bool) -> UserInfo:
        """Grant or revoke ``admin``; already so: nothing changes."""
        if admin:
            return self.grant(name, ADMIN)
        user = self._user(name)
        return self.revoke(name, ADMIN) if _row(ADMIN) in user.grants else self._info(name, user)

    def delete_user(self, name: str) -> None:
        """Delete ``name`` and every token of theirs, together."""
        self._user(name)
        tokens = [t.id for t in self.list_tokens(name)]
        with self._store.transaction() as txn:
            txn.delete(USERS, name)
            for token_id in tokens:
                txn.delete(TOKENS, token_id)

    def grant(self, name: str, grant: Grant) -> UserInfo:
        """Add ``grant`` (checked) to ``name``; granting it again changes nothing."""
        user = self._user(name)
        row = _row(grant.check())
        if row not in user.grants:
            user.grants.append(row)
            self._put_user(name, user)
        return self._info(name, user)

    def revoke(self, name: str, grant: Grant) -> UserInfo:
        """Remove ``grant`` from ``name``. Grants are removed as given, never by what they
        match: revoking ``topic:orders.*`` does not take away ``topic:orders.eu``, and
        revoking what ``name`` does not hold is ``UnknownGrant`` (a typo is not a success)."""
        user = self._user(name)
        row = _row(grant)
        if row not in user.grants:
            raise UnknownGrant(name, str(grant))
        user.grants.remove(row)
        self._put_user(name, user)
        return self._info(name, user)

    def create_token(
        self, user: str, expires_ms: int | None = None, description: str = ""
    ) -> NewToken:
        """A new token for ``user``, valid until ``expires_ms`` (wall clock, ms) if given."""
        self._user(user)
        now_ms = self._clock.now_ms()
        if expires_ms is not None and expires_ms <= now_ms:
            raise InvalidConfig("expires_ms", expires_ms, "a time in the future")
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidConfig(
                "description", description[:20] + "...", f"{MAX_DESCRIPTION_CHARS} chars at most"
            )
        token_id = secrets.token_hex(8)
        while self._store.get(TOKENS, token_id) is not None:  # 64 bits: never, but cheap
            token_id = secrets.token_hex(8)
        # token_urlsafe may hold "_": the id (hex) ends at the first one after the prefix.
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = _Token(user, _split_token(secret)[1], now_ms, expires_ms, description)
        with self._store.transaction() as txn:
            txn.put(TOKENS, token_id, msgspec.to_builtins(record))
        return NewToken(token_id, user, secret, now_ms, expires_ms, description)

    def revoke_token(self, token_id: str) -> None:
        """``UnknownToken`` if there is none (already revoked, or its user deleted)."""
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

    def _mock_keys(self, name: str) -> ScramKeys:
        """Keys for a name nobody has: a salt that is the name's own and stays the same (as a
        real user's does), keys that no password matches."""
        stored = self._store.get(SECURITY, MOCK_SALT_KEY)
        key = _unb64(stored) if stored is not None else _MOCK_KEY
        salt = hmac.digest(key, name.encode("utf-8", "surrogatepass"), "sha256")[:SALT_BYTES]
        nothing = hmac.digest(_MOCK_KEY, b"no password gives this", "sha256")
        return ScramKeys(salt, nothing, nothing, ITERATIONS)

    def _refresh(self) -> None:
        if self._store.version != self._version:
            self._principals.clear()
            self._basic.clear()
            self._version = self._store.version

    @staticmethod
    def _info(name: str, user: _User) -> UserInfo:
        grants = user.granted()
        return UserInfo(name, ADMIN in grants, grants, user.created_ms)


def _new_user(password: str, created_ms: int) -> _User:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidConfig(
            "password", "(hidden)", f"between {MIN_PASSWORD_CHARS} and {MAX_PASSWORD_CHARS} chars"
        )
    try:
        salt, stored_key, server_key, iterations = _SCRAM.make_auth_info(
            password, iteration_count=ITERATIONS
        )
    except scramp.ScramException as e:  # SASLprep refuses it (control characters, say)
        raise InvalidConfig("password", "(hidden)", f"not usable with SCRAM: {e}") from None
    return _User(_b64(salt), _b64(stored_key), _b64(server_key), iterations,
                 created_ms=created_ms, generation=secrets.token_hex(8))  # fmt: skip


def _row(grant: Grant) -> tuple[str, str, str]:
    return grant.operation, grant.kind, grant.pattern


def _split_token(secret: str) -> tuple[str, str]:
    """(id, SHA-256 hex of the whole token); id empty when it is not shaped as a token."""
    digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    if not secret.startswith(TOKEN_PREFIX):
        return "", digest
    token_id, underscore, rest = secret[len(TOKEN_PREFIX) :].partition("_")
    return (token_id if underscore and rest else ""), digest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
