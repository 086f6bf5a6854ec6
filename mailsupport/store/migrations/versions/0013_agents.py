"""Agents known to the desk (`agent add`) and what they are told (`notifications`); the
index that finds an agent's waiting tickets (`next`, `list --waiting --mine`).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False, unique=True),
        sa.Column("email", sa.Text(), nullable=False, unique=True),
        sa.Column("queues", sa.JSON(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("notify", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_notifications_ticket_id", "notifications", ["ticket_id"])
    op.create_index("ix_notifications_agent_sent_at", "notifications", ["agent", "sent_at"])
    op.create_index(
        "ix_tickets_waiting_assignee", "tickets", ["last_writer", "assignee", "updated_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_waiting_assignee", "tickets")
    op.drop_table("notifications")
    op.drop_table("agents")
