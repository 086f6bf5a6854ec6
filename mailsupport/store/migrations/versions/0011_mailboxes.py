"""Tickets remember the mailbox the customer wrote to (`tickets.mailbox`), and outbox items
the mailbox whose SMTP server sends them (`outbox.mailbox`); "" = the default mailbox, as
for everything filed before. IMAP folders keep their last error for `status`.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    for table in ("tickets", "outbox"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("mailbox", sa.Text(), nullable=False, server_default=""))
    op.create_index("ix_tickets_mailbox_updated_at", "tickets", ["mailbox", "updated_at"])
    with op.batch_alter_table("imap_folders") as batch:
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("last_error_at", TIME, nullable=True))


def downgrade() -> None:
    op.drop_index("ix_tickets_mailbox_updated_at", "tickets")
    # Not batch mode: on SQLite that rebuilds the table, which foreign keys forbid. SQLite
    # 3.35 and later drop a plain column in place.
    for table, column in (
        ("imap_folders", "last_error_at"),
        ("imap_folders", "last_error"),
        ("outbox", "mailbox"),
        ("tickets", "mailbox"),
    ):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)
