"""The fast read path on PostgreSQL: psycopg alone, without SQLAlchemy (store/queries.py).

`connect` opens a read-only connection when it can vouch for the schema, `pyformat` turns
the readers' `:name` parameters into psycopg's, `translated` reports psycopg's errors as
the Store reports SQLAlchemy's. psycopg itself is imported only when a PostgreSQL URL is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

# A PostgreSQL URL of psycopg's, which libpq reads as it is once the driver name is gone.
_PG_URL = re.compile(r"postgresql(?:\+psycopg)?://(?P<rest>.*)", re.DOTALL)
# A `:name` parameter (not a `::cast`, nor the minutes of a time in a literal).
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=256)
def pyformat(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s`, a literal % doubled."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def connect(url: str, revision: str) -> Any:
    """A psycopg connection in a read-only REPEATABLE READ transaction (one snapshot, as the
    Store's reader has) when the URL is psycopg's, the server answers and its schema is the
    one we read (`revision`); else None, and the Store will say what is wrong."""
    match = _PG_URL.fullmatch(url)
    if not match:
        return None
    try:
        import psycopg
    except ImportError:  # pragma: no cover - installed with mailsupport
        return None
    try:
        connection = psycopg.connect("postgresql://" + match["rest"])
    except (psycopg.Error, ValueError):
        return None  # the Store's connection fails the same way and says why
    try:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        # A read answers in milliseconds: compiling a big table's plan (JIT) costs more.
        connection.execute("SET jit = off")
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except psycopg.Error:
        connection.close()
        return None  # no schema yet, or not ours: Store creates it or says what is wrong
    if row is None or row[0] != revision:
        connection.close()
        return None
    return connection


@contextmanager
def translated() -> Iterator[None]:
    """psycopg errors as the Store reports SQLAlchemy's (a server gone is temporary...)."""
    import psycopg

    try:
        yield
    except psycopg.Error as error:
        from sqlalchemy import exc

        from mailsupport.store.db import translate_db_error

        kind = exc.IntegrityError if isinstance(error, psycopg.IntegrityError) else exc.DBAPIError
        if isinstance(error, psycopg.OperationalError):
            kind = exc.OperationalError
        mapped = translate_db_error(kind(None, None, error))
        if mapped is None:
            raise
        raise mapped from error
