"""Migrated SQLite test databases in a millisecond instead of an Alembic run each.

Most tests start from a store at the current schema. Each test process migrates one
database the real way (`Store.open`) and copies that file for every test that asks for a
store (50 ms saved a test). Tests of migrating itself (an empty database, a schema behind)
open an empty database themselves.

On PostgreSQL the time is the server's DDL: replaying the migrations' statements did not
shorten it, but the schema they end with, as `pg_dump --schema-only` writes it (one CREATE
for each table and index), takes a third of the time (0.14 s against 0.45-0.8 s). Each test
process migrates one template schema, dumps it, drops it, and writes the dump into the
empty schema of each test that asks for a store. Without pg_dump, the store migrates as
usual.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

from mailsupport.store.db import Store
from mailsupport.store.files import private_dir, private_file

# One per test process, made on first use.
_sqlite_template: Path | None = None
# The dumped template schema (its name, the SQL, the Alembic revision); False: no pg_dump.
_postgresql_template: tuple[str, str, str] | bool | None = None


def migrated(url: str) -> None:
    """Bring an empty SQLite database at `url` to the current schema, as Store.open would
    (which does the same for anything else)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        _copy_sqlite_template(Path(parsed.database))
    elif parsed.get_backend_name() == "postgresql":
        _write_postgresql_template(parsed)


def _write_postgresql_template(url: sa.URL) -> None:
    """The current schema into the empty schema that `url`'s search_path names."""
    global _postgresql_template
    options = str(url.query.get("options", ""))
    if not options.startswith("-csearch_path="):
        return
    schema = options.removeprefix("-csearch_path=")
    server = url.difference_update_query(["options"])
    engine = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        if _postgresql_template is None:
            _postgresql_template = _dump_postgresql_template(engine, server) or False
        if _postgresql_template is False:
            return
        name, sql, revision = _postgresql_template  # type: ignore[misc]
        with engine.begin() as conn:
            tables = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %(s)s", {"s": schema}
            ).scalar()
            if tables:
                return  # not empty: Store.open decides what to do with it
            # On the driver without parameters: the dump's SQL has '%' of its own (LIKE).
            conn.connection.driver_connection.execute(sql.replace(name, schema))  # type: ignore[union-attr]
            conn.exec_driver_sql(
                f"INSERT INTO {schema}.alembic_version VALUES (%(r)s)", {"r": revision}
            )
    finally:
        engine.dispose()


def _dump_postgresql_template(engine: sa.Engine, server: sa.URL) -> tuple[str, str, str] | None:
    name = "tmpl_" + uuid.uuid4().hex[:12]  # found nowhere else in the dump
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    try:
        options = {"options": f"-csearch_path={name}"}
        template = server.update_query_dict(options).render_as_string(hide_password=False)
        Store.open(template).engine.dispose()
        with engine.connect() as conn:
            revision = conn.exec_driver_sql(f"SELECT version_num FROM {name}.alembic_version")
            version = str(revision.scalar())
        libpq = server.set(drivername="postgresql").render_as_string(hide_password=False)
        dump = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--schema", name, libpq],
            capture_output=True,
            text=True,
        )
    except OSError:  # no pg_dump
        return None
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
    if dump.returncode != 0:
        return None
    # Without psql's own commands (\restrict) and the schema's CREATE (the test made it).
    lines = [line for line in dump.stdout.splitlines() if not line.startswith("\\")]
    sql = "\n".join(lines).replace(f"CREATE SCHEMA {name};", "")
    return name, sql, version


def _copy_sqlite_template(path: Path) -> None:
    global _sqlite_template
    if path.exists() and path.stat().st_size:
        return  # not empty: Store.open decides what to do with it
    if _sqlite_template is None:
        directory = Path(tempfile.mkdtemp(prefix="mailsupport-template-"))
        atexit.register(shutil.rmtree, directory, True)
        template = directory / "mailsupport.db"
        Store.open(f"sqlite:///{template}").engine.dispose()
        conn = sqlite3.connect(template)  # everything in the file, nothing left in a -wal
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        _sqlite_template = template
    # The copy keeps the mode Store.open would give it (0600 in a 0700 directory).
    private_dir(path.parent)
    private_file(path)
    shutil.copyfile(_sqlite_template, path)
