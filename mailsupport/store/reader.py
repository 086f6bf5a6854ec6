"""Plain SQL on the driver itself (sqlite3; psycopg, store/pgread.py), for the commands that
read: `list`, `show`, `search`, `export`, `report`.

Importing SQLAlchemy and SQLModel takes most of a second of a command that should answer in
a fraction of one (docs/benchmarks.md). `reading` opens a `Reader` on the driver when it can
vouch for the schema; when it cannot, the usual `Store` creates the schema or says what is
wrong, as for every other command, and the Reader runs the same SQL on its SQLAlchemy
connection. Module level imports stay light on purpose: SQLAlchemy only in functions.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mailsupport.store import pgread

if TYPE_CHECKING:
    from mailsupport.store.db import Store

# Waiting for a writer's lock, as store.db.SQLITE_BUSY_SECONDS (in WAL mode readers seldom do).
SQLITE_BUSY_SECONDS = 30
# An SQLite URL whose path sqlite3 can open as it is (no query string, no %-escapes).
_SQLITE_URL = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<path>[^?#%]+)")
# Columns converted to Python values the same way on both backends.
_TIME_COLUMNS = frozenset(
    {
        "created_at",
        "updated_at",
        "closed_at",
        "date",
        "received_at",
        "at",
        "sent_at",
        "first_response_at",
        "first_response_due",
        "resolution_due",
    }
)
_JSON_COLUMNS = frozenset({"to", "cc"})
_BOOL_COLUMNS = frozenset({"inline"})


class Record(dict[str, Any]):
    """A result row: columns by name, as keys and as attributes (like the model objects)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Reader:
    """Runs read-only SQL (`:name` parameters) and returns Records with Python values."""

    def __init__(self, connection: Any, *, sqlite: bool, dbapi: bool) -> None:
        self._connection = connection
        self.sqlite = sqlite  # stored times are text in SQLite, JSON is text
        self._dbapi = dbapi  # a driver's connection (sqlite3, psycopg), else SQLAlchemy's
        self._pyformat = dbapi and not sqlite  # psycopg's %(name)s parameters

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Record]:
        names, rows = self._execute(sql, params)
        convert = [self._converter(name) for name in names]
        return [
            Record({n: c(v) if c else v for n, c, v in zip(names, convert, row, strict=True)})
            for row in rows
        ]

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        """The rows as the driver gives them, by position and unconverted (times are text on
        SQLite: see `stored_time`): for reads of many rows, where a Record each costs more
        than the query."""
        return self._execute(sql, params)[1]

    def _execute(
        self, sql: str, params: Mapping[str, Any] | None
    ) -> tuple[list[str], list[Sequence[Any]]]:
        """The column names and the rows of `sql` (`:name` parameters)."""
        params = dict(params or {})
        if self._dbapi:
            if self._pyformat:
                sql = pgread.pyformat(sql)
            cursor = self._connection.execute(sql, params)
            return [d[0] for d in cursor.description], cursor.fetchall()
        from sqlalchemy import text

        result = self._connection.execute(text(sql), params)
        return list(result.keys()), list(result.all())

    def first(self, sql: str, params: Mapping[str, Any] | None = None) -> Record | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def time_param(self, value: datetime) -> Any:
        """A time to compare with stored ones: SQLite keeps naive UTC text."""
        value = value.astimezone(UTC)
        return (
            value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            if self.sqlite
            else value
        )

    def _converter(self, name: str) -> Callable[[Any], Any] | None:
        if name in _TIME_COLUMNS:
            return stored_time
        if name in _JSON_COLUMNS:
            return _json
        if name in _BOOL_COLUMNS:
            return _bool
        return None


def stored_time(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite keeps naive UTC text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


# -- opening a reader ------------------------------------------------------------------------


def schema_revision() -> str:
    """The schema revision this code reads, without importing SQLAlchemy when it can."""
    import mailsupport.store as light

    # A home for the constant that does not import SQLAlchemy makes the SQLite check free;
    # until there is one, store.db has it (and the check costs that import).
    revision = getattr(light, "SCHEMA_REVISION", None)
    if revision is None:
        from mailsupport.store.db import SCHEMA_REVISION as revision
    return str(revision)


def sqlite_file(url: str) -> str | None:
    """The database file of a plain SQLite URL; None for anything else."""
    match = _SQLITE_URL.fullmatch(url)
    if not match or match["path"] == ":memory:":
        return None
    return match["path"]


@contextmanager
def reading(url: str, open_store: Callable[[], Store]) -> Iterator[Reader]:
    """A Reader over one read transaction (a consistent snapshot for all its queries).

    `open_store` opens the usual Store, which creates a brand-new database and refuses one
    whose schema is behind; it is only called when the fast SQLite path cannot vouch for
    the schema itself, and for every database that is not SQLite."""
    path = sqlite_file(url)
    if path is None:
        fast = pgread.connect(url, schema_revision())
        if fast is not None:
            try:
                with pgread.translated():
                    yield Reader(fast, sqlite=False, dbapi=True)
            finally:
                fast.close()  # ends the read-only transaction: nothing to commit
            return
        store = open_store()
        with store.translated(), store.engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield Reader(connection, sqlite=connection.dialect.name == "sqlite", dbapi=False)
        return
    connection = _current_sqlite(path)
    if connection is None:
        open_store()  # creates the database on first use, or says why it cannot be read
        connection = _open_sqlite(path)
    try:
        with _translated():
            connection.execute("BEGIN")
            yield Reader(connection, sqlite=True, dbapi=True)
    finally:
        connection.close()


def _open_sqlite(path: str) -> sqlite3.Connection:
    with _translated():
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_SECONDS, isolation_level=None)
        connection.execute("PRAGMA query_only = ON")  # this path never writes
    return connection


def _current_sqlite(path: str) -> sqlite3.Connection | None:
    """A connection when the file exists and its schema is the one we read, else None."""
    if not os.path.isfile(path):
        return None
    connection = _open_sqlite(path)
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as error:
        connection.close()
        if isinstance(error, sqlite3.OperationalError) and "no such table" not in str(error):
            raise _mapped(error) from error  # locked, say: not something Store can fix
        return None  # no schema yet, or not a database: Store creates it or says what is wrong
    if row is None or row[0] != schema_revision():
        connection.close()
        return None
    return connection


@contextmanager
def _translated() -> Iterator[None]:
    """sqlite3 errors as the Store reports SQLAlchemy's: locked is temporary, and so on."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as error:
        raise _mapped(error) from error


def _mapped(error: sqlite3.OperationalError | OSError) -> BaseException:
    """The user-facing error store.db makes of this one, or the error itself (a bug)."""
    from sqlalchemy import exc

    from mailsupport.store.db import translate_db_error

    wrapped = (
        exc.OperationalError(None, None, error)
        if isinstance(error, sqlite3.OperationalError)
        else error
    )
    return translate_db_error(wrapped) or error
