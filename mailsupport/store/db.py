"""The database connection: engine setup, sessions, error translation, schema version."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlmodel import Session

from mailsupport.errors import (
    ConfigError,
    MailSupportError,
    PermanentError,
    SchemaError,
    TemporaryError,
)
from mailsupport.store import SCHEMA_REVISION
from mailsupport.store.files import private_dir, private_file

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_SECONDS = 30
# PostgreSQL writers take this transaction-level advisory lock first, so they take turns as
# SQLite's BEGIN IMMEDIATE makes them: threading reads the Message-ID index and then writes
# it, and two interleaved writers could split a conversation or merge past each other.
# Advisory locks belong to the whole database, so the key is made from the schema the desk's
# tables are in (current_schema(), set by search_path in the URL): desks that share a
# database in schemas of their own do not wait on each other's writers. Computed by the
# server in the same statement, so it costs no round trip.
_WRITERS_KEY = (
    "('x' || left(md5('mailsupport writers ' || coalesce(current_schema(), '')), 16))"
    "::bit(64)::bigint"
)
WRITE_LOCK = sa.text(f"SELECT pg_advisory_xact_lock({_WRITERS_KEY})")
# Intake takes the same lock shared: intake transactions run side by side, each locking
# the tickets it reads and writes (store/claims.py), and any other writer still runs alone.
INTAKE_LOCK = sa.text(f"SELECT pg_advisory_xact_lock_shared({_WRITERS_KEY})")
# PostgreSQL errors that mean the settings are wrong, not that the server is away.
CONFIG_SQLSTATES = {"3D000", "28P01", "28000", "3F000"}  # no such database or schema, login
# PostgreSQL errors that end a transaction because another one was in the way: the work was
# rolled back and succeeds when simply run again, as after SQLite's "database is locked".
RETRY_SQLSTATES = {
    "55P03": "database is locked by another process",  # lock_not_available: lock_timeout
    "40P01": "database deadlock with another process",  # deadlock_detected
    "40001": "database conflict with another process",  # serialization_failure
}
# Other PostgreSQL errors that a retry can cure, by SQLSTATE class (its first two characters):
# the connection (08), another transaction in the way (40), the server short of memory, disk
# or connections (53), a restart or a cancelled statement (57), an I/O error on the server
# (58), a snapshot too old (72); and a few single codes of other classes.
TEMPORARY_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58", "72"}
TEMPORARY_SQLSTATES = {
    "55006",  # object_in_use
    "25006",  # read_only_sql_transaction: a standby, as during a failover
    "0A000",  # feature_not_supported: "cached plan must not change result type" after a
    # migration, gone on the next connection (mailsupport uses no feature a server lacks)
}
# Any other SQLSTATE is the server's answer to this statement on this data, and the same
# statement meets it again: a program limit (54, "stack depth limit exceeded"), a data
# exception (22), a syntax or access rule (42), ... Retrying cannot help: exit 1, not 75.
PERMANENT_SQLSTATE_CLASSES = {
    "22": "the database refused a value",
    "42": "the database refused the statement",
    "54": "the request is too large for the database",
}
# SQLite's primary result codes (sqlite3 errors carry them) that a retry cannot cure: an
# error in the statement or beyond a limit, such as "Expression tree is too large" (1),
# too big (18), type mismatch (20), bind index out of range (25), a damaged or foreign file
# (11, 26), a file it may not write (8, 3). Busy, locked, full, I/O and the rest stay
# temporary.
SQLITE_PERMANENT_CODES = {1, 3, 8, 11, 18, 20, 25, 26}


def create_db_engine(url: str) -> sa.Engine:
    """An engine with our connection settings; SQLite gets WAL and a busy timeout.

    No error here repeats the URL, or SQLAlchemy's words about it: they can hold the password
    (a password with an unencoded @ turns its tail into the "port" that int() complains of)."""
    try:
        parsed = sa.engine.make_url(url)
    except (exc.ArgumentError, ValueError):
        raise ConfigError(
            "invalid setting MAILSUPPORT_DATABASE_URL: not a valid URL; write "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME, with an @ in the password written "
            "as %40 and a % as %25"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (exc.NoSuchModuleError, ImportError):
        raise ConfigError(
            f"invalid setting MAILSUPPORT_DATABASE_URL: no driver for {parsed.drivername}: "
            "use postgresql:// (psycopg, which mailsupport installs), or leave it empty for SQLite"
        ) from None
    except (exc.ArgumentError, ValueError) as e:
        detail = _without_password(str(e).splitlines()[0] if str(e) else type(e).__name__, parsed)
        raise ConfigError(f"invalid setting MAILSUPPORT_DATABASE_URL: {detail}") from None


def _without_password(text: str, url: sa.URL) -> str:
    """The text with the URL's password blanked out, as written and as decoded."""
    password = url.password
    if password:
        for form in {str(password), quote(str(password), safe="")}:
            text = text.replace(form, "***")
    return text


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database and url.database != ":memory:" and not url.query.get("uri"):
        path = Path(url.database)
        try:
            private_dir(path.parent)
            # Created here, 0600, before SQLite makes it 0644 less the umask: its -wal and
            # -shm files take the database's mode, so every file of it stays private.
            private_file(path)
        except OSError as e:
            raise ConfigError(
                f"cannot create the database {url.database} or its directory: {e.strerror} "
                "(check MAILSUPPORT_DATA_DIR)"
            ) from None
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's own handling breaks SAVEPOINT).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, so marking mail processed upstream is safe.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the lock up front; a deferred reader upgrading later could fail at once.
        write = conn.get_execution_options().get("mailsupport_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def translate_db_error(error: BaseException) -> MailSupportError | None:
    """A user-facing error for database and disk failures, or None if it is a bug.

    Temporary (exit 75: cron and MTAs retry) when retrying can help: locks, conflicts, the
    connection, a full disk. Permanent (exit 1) when the database answered that it cannot
    do this at all, by SQLSTATE class on PostgreSQL and result code on SQLite. Integrity
    errors are left to the code that made them (the pipeline tells duplicates by them)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TemporaryError(f"disk full: {error.strerror}; free space and try again")
    if isinstance(error, exc.TimeoutError):  # every pooled connection busy: many threads
        return TemporaryError("no database connection came free in time; try again")
    if not isinstance(error, exc.DBAPIError) or isinstance(error, exc.IntegrityError):
        return None
    detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
    detail = detail or type(error.orig or error).__name__
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in RETRY_SQLSTATES:
        return TemporaryError(f"{RETRY_SQLSTATES[sqlstate]} ({detail}); try again")
    if sqlstate in CONFIG_SQLSTATES:
        return ConfigError(f"cannot use the database: {detail} (check MAILSUPPORT_DATABASE_URL)")
    if sqlstate and (sqlstate[:2] in TEMPORARY_SQLSTATE_CLASSES or sqlstate in TEMPORARY_SQLSTATES):
        return TemporaryError(f"database unavailable: {detail}")
    if sqlstate:
        what = PERMANENT_SQLSTATE_CLASSES.get(sqlstate[:2], "the database refused the request")
        return PermanentError(f"{what}: {detail} (SQLSTATE {sqlstate}; trying again will not help)")
    code = getattr(error.orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in SQLITE_PERMANENT_CODES:
        name = getattr(error.orig, "sqlite_errorname", f"code {code}")
        return PermanentError(f"database error: {detail} ({name}; trying again will not help)")
    if isinstance(error, exc.DataError):  # a value the driver itself refuses (a NUL, say)
        return PermanentError(f"the database refused a value: {detail}")
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        low = detail.lower()
        wrong_settings = (
            "does not exist",
            "authentication failed",
            "invalid sslmode",
            "invalid dsn",
        )
        if any(text in low for text in wrong_settings):
            return ConfigError(
                f"cannot use the database: {detail} (check MAILSUPPORT_DATABASE_URL)"
            )
        if "unable to open database" in low:
            return ConfigError(f"cannot open the database: {detail} (check MAILSUPPORT_DATA_DIR)")
        if "locked" in low or "busy" in low:
            return TemporaryError(f"database is locked by another process ({detail}); try again")
        if "disk" in low and "full" in low:
            return TemporaryError(f"database disk is full ({detail}); free space and try again")
        return TemporaryError(f"database unavailable: {detail}")
    return None


class Store:
    """Owns the engine. Sessions come from `read()` and `write()`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(mailsupport_write=True)
        self._serialize = engine.dialect.name == "postgresql"
        # PostgreSQL's advisory locks on IMAP folders (locks.py) live in connections of their
        # own, outside the pool: a lock keeps its connection for as long as it is held (a
        # daemon holds one per mailbox folder), and closing it for good is what frees it.
        self.lock_engine = (
            sa.create_engine(engine.url, poolclass=sa.pool.NullPool) if self._serialize else engine
        )

    @classmethod
    def open(cls, url: str, *, check_schema: bool = True) -> Store:
        store = cls(create_db_engine(url))
        if check_schema:
            store.ensure_schema()
        return store

    @contextmanager
    def write(self, *, intake: bool = False) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error. An
        `intake` transaction shares the database with other intake transactions on
        PostgreSQL, locking the tickets it touches as it goes (store/claims.py)."""
        with (
            self.translated(),
            Session(self._writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            if self._serialize:
                session.execute(INTAKE_LOCK if intake else WRITE_LOCK)
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.translated(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @staticmethod
    @contextmanager
    def translated() -> Iterator[None]:
        try:
            yield
        except (exc.DBAPIError, exc.TimeoutError, OSError) as error:
            mapped = translate_db_error(error)
            if mapped is None:
                raise
            raise mapped from error

    # -- schema -----------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The Alembic revision in the database; "" when it has no tables at all."""
        with self.translated(), self.engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = set(inspector.get_table_names())
            if "alembic_version" not in tables:
                return "" if not tables else None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def ensure_schema(self) -> None:
        """Create the schema in an empty database; refuse one that is behind or unknown."""
        revision = self.current_revision()
        if revision == SCHEMA_REVISION:
            return
        if revision == "":
            self.upgrade()
            # One line of ours in place of Alembic's, which logs.log_to_stderr keeps quiet.
            log.info("created the database schema (revision %s)", SCHEMA_REVISION)
            return
        if revision is None:
            raise SchemaError("the database has tables but is not a mailsupport database")
        raise SchemaError(
            f"the database schema is at revision {revision}, this mailsupport needs "
            f"{SCHEMA_REVISION}: run `mailsupport db upgrade` (back up the database first)"
        )

    def upgrade(self, target: str = "head") -> None:
        from alembic import command  # imported here: only migrations need Alembic
        from alembic.util.exc import CommandError

        try:
            # Writers' lock: two first runs on an empty database must not both create it.
            with self.translated(), self._writer.begin() as conn:
                if self._serialize:
                    conn.execute(WRITE_LOCK)
                config = alembic_config()
                config.attributes["connection"] = conn
                command.upgrade(config, target)
        except CommandError as error:
            raise SchemaError(
                f"cannot upgrade the database: {error} (was it written by a newer mailsupport?)"
            ) from None


def alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config
