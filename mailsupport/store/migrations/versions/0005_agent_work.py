"""Agent work: assignment, queue, tags, links between tickets, authors of notes and replies.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("assignee", sa.Text(), nullable=True))
        batch.add_column(sa.Column("queue", sa.Text(), nullable=False, server_default=""))
        # A ticket opened by a reply to a ticket closed long ago points at that one.
        batch.add_column(
            sa.Column(
                "follows_id",
                sa.Integer(),
                sa.ForeignKey("tickets.id", name="fk_tickets_follows_id"),
                nullable=True,
            )
        )
    # Every filter of `list` is indexed, each with the default order (updated_at).
    op.create_index("ix_tickets_assignee_updated_at", "tickets", ["assignee", "updated_at"])
    op.create_index("ix_tickets_queue_updated_at", "tickets", ["queue", "updated_at"])
    op.create_index("ix_tickets_priority_updated_at", "tickets", ["priority", "updated_at"])
    op.create_index("ix_tickets_status_updated_at", "tickets", ["status", "updated_at"])
    op.create_table(
        "ticket_tags",
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), primary_key=True),
        sa.Column("tag", sa.Text(), primary_key=True),
    )
    op.create_index("ix_ticket_tags_tag", "ticket_tags", ["tag"])
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("author", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("author")
    op.drop_index("ix_ticket_tags_tag", table_name="ticket_tags")
    op.drop_table("ticket_tags")
    for name in ("status", "priority", "queue", "assignee"):
        op.drop_index(f"ix_tickets_{name}_updated_at", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("follows_id")
        batch.drop_column("queue")
        batch.drop_column("assignee")
