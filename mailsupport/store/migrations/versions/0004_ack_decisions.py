"""Acknowledgements: the decision recorded on each incoming message, and whom it went to.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("ack_decision", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("ack_to", sa.Text(), nullable=True))
    # Counting a sender's recent acknowledgements (ACK_LIMIT within ACK_WINDOW).
    op.create_index("ix_messages_ack_to_created_at", "messages", ["ack_to", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_ack_to_created_at", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("ack_to")
        batch.drop_column("ack_decision")
