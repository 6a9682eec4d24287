"""An idempotent consumer: record each message's key in your own database, in the same
transaction as the message's effects, so a redelivered message changes nothing.

    processed = ProcessedMessages(connection)          # any DB-API 2.0 connection
    processed.create_table()

    async def handle(message: Delivery) -> None:       # e.g. a Worker handler
        try:
            with processed.once(message_key(message)) as fresh:
                if fresh:
                    apply_effects(connection, message)  # on the same connection
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        # returning lets the worker ack: only after the commit

What the caller must do. ``once`` runs its statements on ``connection`` and never commits or
rolls back: the transaction is yours. Commit after the block, then ack. On any exception, roll
back (that removes the key with the effects) and let the message be nacked or redelivered. With
sqlite3, ``with connection, processed.once(key) as fresh:`` does both. Then:

- crash or rollback before the commit: neither effects nor key; the redelivery does the work;
- crash after the commit, before the ack: the redelivery finds the key, ``fresh`` is False;
- two consumers on one key at once (a lease that ran out): the second one's INSERT waits for
  the first transaction, then fails with the driver's ``IntegrityError`` (or, on SQLite, a
  locked database): roll back, and the message comes back to find the key.

Keys are by message position, or by the producer's dedup id when it sent one (``message_key``).
Statements are plain SQL with the driver's ``paramstyle`` (qmark, numeric, named, format,
pyformat); ``create_table`` knows SQLite, PostgreSQL and MySQL. The calls are synchronous:
keep them short, or run the whole transaction in a thread with its own connection.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal, Protocol, cast, runtime_checkable

from roost.client.subscriber import Delivery
from roost.clock import Clock, SystemClock
from roost.errors import InvalidConfig

#: The header carrying a producer's dedup id to consumers (the outbox relay sets it: the
#: broker's own dedup id is not delivered).
DEDUP_HEADER = "roost-dedup-id"
#: Keys longer than this are replaced by a hash of themselves (they must fit an index).
MAX_KEY_CHARS = 255

Dialect = Literal["sqlite", "postgresql", "mysql"]
ParamStyle = Literal["qmark", "numeric", "named", "format", "pyformat"]


class Cursor(Protocol):
    """The part of a DB-API 2.0 cursor these helpers use."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, operation: str, parameters: Any = ..., /) -> object: ...

    def executemany(self, operation: str, seq_of_parameters: Any, /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    def close(self) -> object: ...


@runtime_checkable
class Connection(Protocol):
    """The part of a DB-API 2.0 connection these helpers use."""

    def cursor(self) -> Cursor: ...

    def commit(self) -> object: ...

    def rollback(self) -> object: ...

    def close(self) -> object: ...


def message_key(delivery: Delivery, *, header: str | None = DEDUP_HEADER) -> str:
    """The key under which ``delivery`` is recorded as processed.

    With the dedup header (``header``) set by the producer: subscription, topic and that id.
    It survives a *republish* (a producer's retry after the topic's dedup window, an outbox
    relay replaying, a redrive), which gets a new offset. Without it: subscription, topic,
    partition and offset, which a *redelivery* keeps but a republish does not. The
    subscription is in the key so that two subscriptions of one topic may share a table.

    Offsets restart at 0 when a topic is deleted and made again: use a new table then.
    """
    dedup_id = delivery.message.header(header) if header is not None else None
    if dedup_id is not None:
        try:
            text = dedup_id.decode()
        except UnicodeDecodeError:
            text = "0x" + dedup_id.hex()
        key = f"{delivery.subscription}:{delivery.topic}:id:{text}"
    else:
        where = f"{delivery.topic}/{delivery.partition}@{delivery.offset}"
        key = f"{delivery.subscription}:{where}"
    if len(key) > MAX_KEY_CHARS:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


# -- SQL without a dialect library (shared with roost.client.outbox) -----------------------

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,55}")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_DIALECTS: dict[str, Dialect] = {"sqlite3": "sqlite", "psycopg": "postgresql",
    "psycopg2": "postgresql", "pymysql": "mysql", "MySQLdb": "mysql", "mysql": "mysql"}  # fmt: skip


def check_table(table: str) -> str:
    """A table name is spliced into SQL (and into its indexes' names), so only a plain
    identifier passes; choose the schema with the connection (PostgreSQL's search_path)."""
    if not isinstance(table, str) or _TABLE.fullmatch(table) is None:
        raise InvalidConfig("table", table, "1 to 56 of A-Z a-z 0-9 _, not starting with a digit")
    return table


def _driver(connection: object) -> str:
    return type(connection).__module__.partition(".")[0]


def paramstyle_of(connection: object) -> ParamStyle:
    """The ``paramstyle`` of the DB-API module ``connection`` comes from."""
    module = sys.modules.get(_driver(connection))
    style = getattr(module, "paramstyle", None)
    if style not in ("qmark", "numeric", "named", "format", "pyformat"):
        raise InvalidConfig("paramstyle", style, "pass paramstyle= for this driver")
    return cast(ParamStyle, style)


def dialect_of(connection: object) -> Dialect:
    """SQLite, PostgreSQL or MySQL, by the driver's module name, for the DDL."""
    driver = _driver(connection)
    if driver not in _DIALECTS:
        raise InvalidConfig("dialect", driver, "sqlite, postgresql or mysql: pass dialect=")
    return _DIALECTS[driver]


class SqlTable:
    """One of Roost's tables in the application's database, over its DB-API connection: what
    ``ProcessedMessages`` and ``outbox.Outbox`` share."""

    #: The table's name when the caller gives none.
    default_table: ClassVar[str]

    def __init__(
        self,
        connection: Connection,
        table: str | None = None,
        *,
        paramstyle: ParamStyle | None = None,
        dialect: Dialect | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.connection = connection
        self.table = check_table(table or self.default_table)
        self.sql = SqlParams(paramstyle or paramstyle_of(connection))
        self.dialect = dialect
        self.clock = clock or SystemClock()

    def _dialect(self) -> Dialect:
        return self.dialect or dialect_of(self.connection)

    def _create(self, columns: str, index: str, indexed: str) -> None:
        """CREATE TABLE with ``columns`` and the index ``<table>_<index>`` on ``indexed``, if
        missing, and commit. MySQL has no CREATE INDEX IF NOT EXISTS: it gets the index inline."""
        t = self.table
        if self._dialect() == "mysql":
            statements = [
                f"CREATE TABLE IF NOT EXISTS {t} ({columns}, INDEX {t}_{index} ({indexed}))"
            ]
        else:
            statements = [
                f"CREATE TABLE IF NOT EXISTS {t} ({columns})",
                f"CREATE INDEX IF NOT EXISTS {t}_{index} ON {t} ({indexed})",
            ]
        with self._committing() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def _delete_older(self, column: str, older_than: float) -> int:
        """Delete the rows whose ``column`` (ms) is more than ``older_than`` seconds ago, and
        commit; returns how many."""
        cutoff_ms = self.clock.now_ms() - round(older_than * 1000)
        delete = f"DELETE FROM {self.table} WHERE {column} < {{cutoff}}"
        with self._committing() as cursor:
            cursor.execute(*self.sql.bind(delete, cutoff=cutoff_ms))
            return cursor.rowcount

    @contextmanager
    def _cursor(self) -> Iterator[Cursor]:
        """A cursor in the caller's transaction: closed, never committed."""
        cursor = self.connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def _committing(self) -> Iterator[Cursor]:
        """A cursor whose statements commit together, or roll back on any exception."""
        with self._cursor() as cursor:
            try:
                yield cursor
                self.connection.commit()
            except BaseException:
                self.connection.rollback()
                raise


class SqlParams:
    """Turns ``"... WHERE k = {key}"`` and values into the driver's placeholders and
    parameters: ``?`` (qmark), ``:1`` (numeric), ``:key`` (named), ``%s`` (format) or
    ``%(key)s`` (pyformat). Templates hold no literal ``%``."""

    def __init__(self, paramstyle: ParamStyle) -> None:
        if paramstyle not in ("qmark", "numeric", "named", "format", "pyformat"):
            raise InvalidConfig("paramstyle", paramstyle, "qmark, numeric, named, format, pyformat")
        self.paramstyle = paramstyle

    def bind(
        self, template: str, **values: object
    ) -> tuple[str, Sequence[object] | Mapping[str, object]]:
        """The statement and its parameters."""
        sql, names = self._render(template)
        return sql, self._parameters(names, values)

    def bind_many(
        self, template: str, rows: Sequence[Mapping[str, object]]
    ) -> tuple[str, list[Sequence[object] | Mapping[str, object]]]:
        """The statement and one set of parameters per row, for ``executemany``."""
        sql, names = self._render(template)
        return sql, [self._parameters(names, row) for row in rows]

    def _render(self, template: str) -> tuple[str, list[str]]:
        names: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            names.append(match[1])
            style = self.paramstyle
            if style == "qmark":
                return "?"
            if style == "numeric":
                return f":{len(names)}"
            if style == "named":
                return f":{match[1]}"
            return "%s" if style == "format" else f"%({match[1]})s"

        return _PLACEHOLDER.sub(placeholder, template), names

    def _parameters(
        self, names: list[str], values: Mapping[str, object]
    ) -> Sequence[object] | Mapping[str, object]:
        if self.paramstyle in ("named", "pyformat"):
            return {name: values[name] for name in names}
        return tuple(values[name] for name in names)


# -- the consumer's table ------------------------------------------------------------------


class ProcessedMessages(SqlTable):
    """The keys of messages whose effects are committed; see the module docstring.

    Table (``create_table``): ``message_key VARCHAR(255) PRIMARY KEY`` and
    ``processed_at_ms BIGINT NOT NULL`` (``clock.now_ms()`` at the insert), indexed for
    ``prune``.
    """

    default_table = "roost_processed"

    def create_table(self) -> None:
        """Create the table and its index if missing, and commit."""
        columns = (
            f"message_key VARCHAR({MAX_KEY_CHARS}) PRIMARY KEY, processed_at_ms BIGINT NOT NULL"
        )
        self._create(columns, "at", "processed_at_ms")

    @contextmanager
    def once(self, message_key: str) -> Iterator[bool]:
        """Record ``message_key`` in the caller's transaction; yields whether it is new.

        False: a transaction that committed already recorded it; skip the effects. True: it is
        recorded now, and stays recorded only if the caller commits. Raises the driver's
        ``IntegrityError`` when another transaction inserted the key meanwhile (roll back).
        Never commits or rolls back.
        """
        if not 0 < len(message_key) <= MAX_KEY_CHARS:
            raise InvalidConfig("message_key", message_key, f"1..{MAX_KEY_CHARS} characters")
        with self._cursor() as cursor:
            select = f"SELECT 1 FROM {self.table} WHERE message_key = {{key}}"
            cursor.execute(*self.sql.bind(select, key=message_key))
            fresh = cursor.fetchone() is None
            if fresh:
                columns = "(message_key, processed_at_ms)"
                insert = f"INSERT INTO {self.table} {columns} VALUES ({{key}}, {{at}})"
                cursor.execute(*self.sql.bind(insert, key=message_key, at=self.clock.now_ms()))
        yield fresh

    def prune(self, older_than: float) -> int:
        """Delete keys recorded more than ``older_than`` seconds ago, and commit; returns how
        many. Only prune past the last moment a duplicate can arrive: the topic's retention
        for redeliveries, and how long producers may retry with the same dedup id."""
        return self._delete_older("processed_at_ms", older_than)
