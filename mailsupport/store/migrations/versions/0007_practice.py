"""Support practice: type, line, SLA due times and the first response of each ticket.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("type", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("line", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("first_response_at", TIME, nullable=True))
        batch.add_column(sa.Column("first_response_due", TIME, nullable=True))
        batch.add_column(sa.Column("resolution_due", TIME, nullable=True))
    op.create_index("ix_tickets_line_updated_at", "tickets", ["line", "updated_at"])
    op.create_index("ix_tickets_type_updated_at", "tickets", ["type", "updated_at"])
    op.create_index("ix_tickets_first_response_due", "tickets", ["first_response_due"])
    op.create_index("ix_tickets_resolution_due", "tickets", ["resolution_due"])


def downgrade() -> None:
    for name in ("resolution_due", "first_response_due", "type_updated_at", "line_updated_at"):
        op.drop_index(f"ix_tickets_{name}", table_name="tickets")
    # Not batch mode: on SQLite that rebuilds `tickets`, which the foreign keys of every
    # other table forbid. SQLite 3.35 and later drop a plain column in place.
    for column in ("resolution_due", "first_response_due", "first_response_at", "line", "type"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE tickets DROP COLUMN {column}")
        else:
            op.drop_column("tickets", column)
