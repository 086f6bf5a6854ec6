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

from mailsupport.errors import ConfigError, MailSupportError, SchemaError, TemporaryError
from mailsupport.store import SCHEMA_REVISION

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_SECONDS = 30
# PostgreSQL writers take this transaction-level advisory lock first, so they take turns as
# SQLite's BEGIN IMMEDIATE makes them: threading reads the Message-ID index and then writes
# it, and two interleaved writers could split a conversation or merge past each other.
WRITE_LOCK_KEY = 0x6D61696C73757070  # "mailsupp"
# PostgreSQL errors that mean the settings are wrong, not that the server is away.
CONFIG_SQLSTATES = {"3D000", "28P01", "28000"}  # no such database, login refused
# PostgreSQL errors that end a transaction because another one was in the way: the work was
# rolled back and succeeds when simply run again, as after SQLite's "database is locked".
RETRY_SQLSTATES = {
    "55P03": "database is locked by another process",  # lock_not_available: lock_timeout
    "40P01": "database deadlock with another process",  # deadlock_detected
    "40001": "database conflict with another process",  # serialization_failure
}


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
    if url.database and url.database != ":memory:":
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cannot create the data directory for {url.database}: {e.strerror}"
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
    """A user-facing error for database and disk failures, or None if it is a bug."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TemporaryError(f"disk full: {error.strerror}; free space and try again")
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        detail = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        low = detail.lower()
        sqlstate = getattr(error.orig, "sqlstate", None)
        wrong_settings = (
            "does not exist",
            "authentication failed",
            "invalid sslmode",
            "invalid dsn",
        )
        if sqlstate in RETRY_SQLSTATES:
            return TemporaryError(f"{RETRY_SQLSTATES[sqlstate]} ({detail}); try again")
        if sqlstate in CONFIG_SQLSTATES or any(text in low for text in wrong_settings):
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

    @classmethod
    def open(cls, url: str, *, check_schema: bool = True) -> Store:
        store = cls(create_db_engine(url))
        if check_schema:
            store.ensure_schema()
        return store

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with (
            self.translated(),
            Session(self._writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            if self._serialize:
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(WRITE_LOCK_KEY)))
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
        except (exc.OperationalError, exc.InterfaceError, OSError) as error:
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
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(WRITE_LOCK_KEY)))
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
