"""Initial schema: tickets, messages, the Message-ID index, raw bytes, quarantine, history.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "raw_messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("stored_at", TIME, nullable=False),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("number", sa.Integer(), nullable=True, unique=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("requester", sa.Text(), nullable=False),
        sa.Column("requester_name", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False, index=True),
        sa.Column("updated_at", TIME, nullable=False, index=True),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("merged_into_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=True),
    )
    op.create_table(
        "message_refs",
        sa.Column("message_id", sa.Text(), primary_key=True),
        sa.Column(
            "ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False, index=True
        ),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False, index=True
        ),
        sa.Column("message_id", sa.Text(), nullable=False, unique=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("in_reply_to", sa.Text(), nullable=False),
        sa.Column("refs", sa.Text(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("from_name", sa.Text(), nullable=False),
        sa.Column("to", sa.JSON(), nullable=False),
        sa.Column("cc", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("date", TIME, nullable=True),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("raw_id", sa.Integer(), sa.ForeignKey("raw_messages.id"), nullable=True),
        sa.Column("thread_reason", sa.Text(), nullable=False),
        sa.Column("defects", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "participants",
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), primary_key=True),
        sa.Column("address", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("first_seen", TIME, nullable=False),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "raw_id", sa.Integer(), sa.ForeignKey("raw_messages.id"), nullable=False, index=True
        ),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("last_retry_at", TIME, nullable=True),
    )
    op.create_table(
        "ticket_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "ticket_id", sa.Integer(), sa.ForeignKey("tickets.id"), nullable=False, index=True
        ),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "message_pk", sa.Integer(), sa.ForeignKey("messages.id"), nullable=False, index=True
        ),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("content_id", sa.Text(), nullable=True),
        sa.Column("inline", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "attachments",
        "ticket_events",
        "quarantine",
        "participants",
        "messages",
        "message_refs",
        "tickets",
        "raw_messages",
    ):
        op.drop_table(table)
