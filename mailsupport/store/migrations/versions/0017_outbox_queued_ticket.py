"""An index of each ticket's queued outbox items, for delivery's order check.

Delivery claims an item only when no earlier queued item of its ticket waits (outbox/
delivery.py). Without this index PostgreSQL, planning with statistics from before a burst
of queued acknowledgements, checked that for each candidate by scanning every queued item:
1.1 s a claim with 3,710 queued, growing with the square of the queue. With it, a lookup
of the ticket's few queued items whatever the statistics say.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index(
        "ix_outbox_queued_ticket_id",
        "outbox",
        ["ticket_id", "id"],
        sqlite_where=_QUEUED,
        postgresql_where=_QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_queued_ticket_id", table_name="outbox")
