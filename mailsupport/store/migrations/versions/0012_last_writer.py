"""Tickets remember who wrote last (`tickets.last_writer`: customer, us, or ""), for `list
--waiting` and `next`, and are indexed by requester for `list --requester`.

Filled from each ticket's latest message that counts: the customer's mail ("in"), or our
mail that an agent wrote ("out" with an author); acknowledgements and notes do not count.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("last_writer", sa.String(16), nullable=False, server_default=""))
    latest = (
        "(SELECT m.direction FROM messages m WHERE m.ticket_id = tickets.id AND "
        "(m.direction = 'in' OR (m.direction = 'out' AND m.author <> '')) "
        "ORDER BY m.received_at DESC, m.id DESC LIMIT 1)"
    )
    op.execute(
        f"UPDATE tickets SET last_writer = CASE {latest} WHEN 'in' THEN 'customer' "
        "WHEN 'out' THEN 'us' ELSE '' END"
    )
    op.create_index("ix_tickets_last_writer_updated_at", "tickets", ["last_writer", "updated_at"])
    op.create_index("ix_tickets_requester_updated_at", "tickets", ["requester", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_tickets_requester_updated_at", "tickets")
    op.drop_index("ix_tickets_last_writer_updated_at", "tickets")
    # Not batch mode (see 0009): SQLite 3.35 and later drop a plain column in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE tickets DROP COLUMN last_writer")
    else:
        op.drop_column("tickets", "last_writer")
