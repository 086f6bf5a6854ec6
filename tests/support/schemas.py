"""Migrated SQLite test databases in a millisecond instead of an Alembic run each.

Most tests start from a store at the current schema. Each test process migrates one
database the real way (`Store.open`) and copies that file for every test that asks for a
store (50 ms saved a test). Tests of migrating itself (an empty database, a schema behind)
open an empty database themselves. On PostgreSQL the time is the server's DDL, which
replaying the migration's statements did not shorten, so there the store migrates as usual.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

import sqlalchemy as sa

from mailsupport.store.db import Store
from mailsupport.store.files import private_dir, private_file

# One per test process, made on first use.
_sqlite_template: Path | None = None


def migrated(url: str) -> None:
    """Bring an empty SQLite database at `url` to the current schema, as Store.open would
    (which does the same for anything else)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        _copy_sqlite_template(Path(parsed.database))


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
