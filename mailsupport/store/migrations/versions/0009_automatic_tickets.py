"""Tickets opened by automatic mail say so: `tickets.automatic` holds the kind (bounce,
auto-reply, bulk...), "" for a person's.

Tickets filed before this revision are marked from the acknowledgement decision of their
first message, which names the rule that refused it ("... (bounce)"); their SLA due times
are cleared, as such tickets are no work. (A provider's complaint read as "report" here.)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The acknowledgement rule that refused a ticket's first message -> the ticket's kind.
_KIND_OF_RULE = {
    "bounce": "bounce",
    "report": "report",
    "loop": "loop",
    "auto-submitted": "auto-reply",
    "auto-reply-headers": "auto-reply",
    "auto-reply-subject": "auto-reply",
    "bulk": "bulk",
    "null-sender": "no-reply",
    "noreply-address": "no-reply",
}


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("automatic", sa.Text(), nullable=False, server_default=""))
    # The ticket's first message, when incoming (one of ours opened tickets of our own mail).
    first_decision = (
        "(SELECT m.direction || ' ' || m.ack_decision FROM messages m "
        "WHERE m.ticket_id = tickets.id ORDER BY m.received_at, m.id LIMIT 1)"
    )
    for rule, kind in _KIND_OF_RULE.items():
        op.execute(
            sa.text(
                f"UPDATE tickets SET automatic = :kind, first_response_due = NULL, "
                f"resolution_due = NULL WHERE automatic = '' AND {first_decision} LIKE :rule"
            ).bindparams(kind=kind, rule=f"in no acknowledgement: % ({rule})")
        )


def downgrade() -> None:
    # Not batch mode: on SQLite that rebuilds `tickets`, which other tables' foreign keys
    # forbid. SQLite 3.35 and later drop a plain column in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE tickets DROP COLUMN automatic")
    else:
        op.drop_column("tickets", "automatic")
