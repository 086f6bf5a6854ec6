"""Acknowledgements only where safe: who and which domain each one answered, and an index
to tell whether an address is known to the desk.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PARTIAL = {
    "ack_from": sa.text("ack_from IS NOT NULL"),
    "ack_domain": sa.text("ack_domain IS NOT NULL"),
}


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("ack_from", sa.Text(), nullable=True))
        batch.add_column(sa.Column("ack_domain", sa.Text(), nullable=True))
    # Counting acknowledgements per sender (ACK_LIMIT) and per domain (ACK_DOMAIN_LIMIT);
    # partial, as only acknowledged messages have a value.
    for column, where in _PARTIAL.items():
        op.create_index(
            f"ix_messages_{column}_created_at",
            "messages",
            [column, "created_at"],
            sqlite_where=where,
            postgresql_where=where,
        )
    # Acknowledgements sent before this revision count too, so the limits hold across the
    # upgrade. The domain is what follows the first @ (wrong only for a quoted local part
    # holding an @, and only until those acknowledgements leave the window).
    after_at = (
        "substr(from_address, instr(from_address, '@') + 1)"
        if op.get_bind().dialect.name == "sqlite"
        else "split_part(from_address, '@', 2)"
    )
    op.execute(
        "UPDATE messages SET ack_from = lower(from_address), "
        f"ack_domain = lower({after_at}) "
        "WHERE ack_to IS NOT NULL AND from_address LIKE '%@%'"
    )
    # Whether an address takes part in some ticket: one index lookup.
    op.create_index("ix_participants_address", "participants", ["address"])


def downgrade() -> None:
    op.drop_index("ix_participants_address", table_name="participants")
    for column in _PARTIAL:
        op.drop_index(f"ix_messages_{column}_created_at", table_name="messages")
    # Not batch mode: on SQLite that rebuilds `messages`, which the foreign key of
    # `attachments` forbids. SQLite 3.35 and later drop a plain column in place.
    for column in ("ack_domain", "ack_from"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE messages DROP COLUMN {column}")
        else:
            op.drop_column("messages", column)
