"""IMAP ledger: per-folder UIDVALIDITY and high-water UID, and UIDs awaiting their flag.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "imap_folders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("backlog_until", sa.BigInteger(), nullable=False),
        sa.Column("backlog_search", sa.Text(), nullable=False),
        sa.Column("last_poll_at", TIME, nullable=True),
        sa.Column("last_success_at", TIME, nullable=True),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.UniqueConstraint("account", "folder"),
    )
    op.create_table(
        "imap_pending",
        sa.Column("folder_id", sa.Integer(), sa.ForeignKey("imap_folders.id"), primary_key=True),
        sa.Column("uid", sa.BigInteger(), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("imap_pending")
    op.drop_table("imap_folders")
