"""Each ticket keeps the words and phrases the report counts (`tickets.topic_terms`), and
messages get an index of our people's answers.

The report's most frequent problems worked out the terms of every ticket's subject and first
incoming message at each run: most of two minutes over a year of a million-ticket desk.
Intake now stores them with the ticket (mailsupport/topicterms.py); this migration works them
out for the tickets already stored, a batch at a time. A ticket with no incoming message
keeps none (NULL): the report treats it as before.

`ix_messages_agent_answers`, partial: the messages in which a person on our side answered
(an agent's reply, or our mail imported from a Sent folder), by ticket and time. The report
looks up the first one for each ticket that has no stored first response; without it, it
read every message of every such ticket (3 s at a million tickets).

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_BATCH = 1000  # tickets read and written at a time
# As store.AGENT_ANSWERS is today (a migration keeps its own copy: that one may change).
_ANSWERS = "direction = 'out' AND (thread_reason LIKE 'reply by %' OR raw_id IS NOT NULL)"


def upgrade() -> None:
    op.add_column("tickets", sa.Column("topic_terms", sa.Text(), nullable=True))
    _compute_terms()
    where = sa.text(_ANSWERS)
    op.create_index(
        "ix_messages_agent_answers",
        "messages",
        ["ticket_id", "received_at"],
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_agent_answers", table_name="messages")
    op.drop_column("tickets", "topic_terms")


def _compute_terms() -> None:
    """The terms of every ticket from its subject and the text of its first incoming
    message (by when it was written, then by id: as the report picks it)."""
    from mailsupport.store.reader import stored_time
    from mailsupport.topicterms import ticket_terms

    conn = op.get_bind()
    first = (
        "(SELECT m.{column} FROM messages m WHERE m.ticket_id = t.id AND m.direction = 'in' "
        "ORDER BY m.received_at, m.id LIMIT 1)"
    )
    read = sa.text(
        f"SELECT t.id, t.subject, {first.format(column='text')} AS text, "
        f"{first.format(column='received_at')} AS at FROM tickets t "
        "WHERE t.id > :after ORDER BY t.id LIMIT :n"
    )
    write = sa.text("UPDATE tickets SET topic_terms = :terms WHERE id = :id")
    after = 0
    while rows := conn.execute(read, {"after": after, "n": _BATCH}).all():
        updates = [
            {"id": row.id, "terms": ticket_terms(row.subject, row.text or "", stored_time(row.at))}
            for row in rows
            if row.at is not None
        ]
        if updates:
            conn.execute(write, updates)
        after = rows[-1].id
