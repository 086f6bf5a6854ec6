"""Attachments kept in the database (MAILSUPPORT_ATTACHMENTS=database): blobs and chunks.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachment_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
    )
    op.create_table(
        "attachment_chunks",
        sa.Column(
            "sha256",
            sa.String(64),
            sa.ForeignKey("attachment_blobs.sha256"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("attachment_chunks")
    op.drop_table("attachment_blobs")
