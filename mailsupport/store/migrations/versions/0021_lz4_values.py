"""PostgreSQL: large values compressed with lz4 rather than pglz.

PostgreSQL compresses a value of about 2 KB or more when it stores it: a raw message, a long
text or HTML body, a message's search vectors, a piece of an attachment kept in the
database. Its own method, pglz, is slow: storing the intake benchmark's 10,000 raw messages
cost the server 1.5 s of CPU with it and 0.5 s with lz4, which left them the same size
(81 and 80 MiB). On a machine where the server and the poll share the CPUs, that time is
intake's.

Every column of ours that PostgreSQL may compress gets lz4, where the server has it
(PostgreSQL 14 and newer built with lz4, as Debian's and the PostgreSQL project's packages
are); elsewhere nothing changes. Values stored before keep their compression and read as
before; the change itself only writes the catalog. A column added by a later migration
takes the server's default unless that migration says otherwise.

SQLite: nothing.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Columns PostgreSQL may compress ('x' extended, 'm' main), of the tables in the schema the
# desk's tables are in (several desks may share a database, one schema each).
_COMPRESSIBLE = """
SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage IN ('x', 'm')
  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'alembic_version'::regclass)
ORDER BY c.relname, a.attnum
"""
_HAS_LZ4 = (
    "SELECT coalesce(bool_or(enumvals @> ARRAY['lz4']), false) FROM pg_settings "
    "WHERE name = 'default_toast_compression'"
)


def _set(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.execute(sa.text(_HAS_LZ4)).scalar():
        return
    for table, column in bind.execute(sa.text(_COMPRESSIBLE)).all():
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {method}')


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("default")
