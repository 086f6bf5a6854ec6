"""Rows written into a store at an older schema revision, as that revision's code wrote them:
for tests of what a migration does to data already stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

# A message with the columns every revision since 0006 has: a customer's or ours, subject
# 'Принтеры', threaded as "new".
_MESSAGE = sa.text(
    "INSERT INTO messages (ticket_id, message_id, direction, in_reply_to, refs,"
    ' from_address, from_name, "to", cc, subject, received_at, text,'
    " thread_reason, defects, author, ack_decision, created_at)"
    " VALUES (:ticket, :mid, :direction, '', '', 'a@example.org', '',"
    " '[]', '[]', 'Принтеры', :t, :text, 'new', '', '', '', :t)"
)


def insert_messages(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Messages of `rows`: each with ticket, mid, direction, text and t (received and
    created at)."""
    conn.execute(_MESSAGE, list(rows))
