"""The stems search indexes of a message, computed in Python when the message is written.

Neither database can stem as words.py does (Snowball, Russian or English by each word's
script), so the stems are two columns of `messages`, `subject_stems` and `text_stems`, and
the index (migration 0014: FTS5 on SQLite, a tsvector on PostgreSQL) reads them like any
column. The same Python computes them for both backends, so a word finds the same messages
on either.

They are computed wherever a message row is written through the model:
- an INSERT that leaves them out (store_message's statement, the ORM's `session.add`, bulk
  inserts through the model's table) gets them from the column defaults below;
- a change of the subject or text through the ORM recomputes them (`restem`, a
  before_update listener).
An UPDATE statement that sets `subject` or `text` directly does not: it must set the stems
too. (mailsupport never rewrites a stored message's text that way.)

Our automatic mail is not the ticket's words: an acknowledgement (our mail without an
agent, not imported from our Sent folder) gets no stems, and the index leaves out its text
too (the same rule in SQL, `AUTOMATIC`), so a knowledge-base article it quotes never makes
a ticket match. Agents' notifications are never stored as ticket messages at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mailsupport.words import INDEXED_SUBJECT_CHARS, INDEXED_TEXT_CHARS, stems_of

# How much of a message is indexed (the exact text too, see migration 0006).
SUBJECT_CHARS = INDEXED_SUBJECT_CHARS
TEXT_CHARS = INDEXED_TEXT_CHARS
# The rule of `automatic` as SQL over a `messages` row, for queries that read messages
# without the index. Migration 0014 writes its own copy into the index's SQL.
AUTOMATIC = "(direction = 'out' AND author = '' AND raw_id IS NULL)"


def automatic(direction: str, author: str, raw_id: int | None) -> bool:
    """Mail we wrote with nobody's words in it: an acknowledgement. (Our mail an agent wrote
    has an author; our mail imported from the Sent folder has raw bytes; a customer's is
    "in" and a note "note".)"""
    return direction == "out" and not author and raw_id is None


_SOURCES = {"subject_stems": ("subject", SUBJECT_CHARS), "text_stems": ("text", TEXT_CHARS)}


def _stems(row: Mapping[str, Any], name: str) -> str:
    if automatic(row.get("direction") or "", row.get("author") or "", row.get("raw_id")):
        return ""
    source, chars = _SOURCES[name]
    return stems_of((row.get(source) or "")[:chars])


def stem_columns(row: Mapping[str, Any]) -> dict[str, str]:
    """`subject_stems` and `text_stems` of a message (a mapping of its columns: subject,
    text, direction, author, raw_id); empty for automatic mail."""
    return {name: _stems(row, name) for name in _SOURCES}


def column_default(name: str) -> Callable[[Any], str]:
    """The default of column `name` (subject_stems or text_stems): computed from the other
    values of the row being inserted, which SQLAlchemy hands over in the execution context."""
    return lambda context: _stems(context.get_current_parameters(), name)


_INPUTS = ("subject", "text", "direction", "author", "raw_id")


def restem(mapper: Any, connection: Any, target: Any) -> None:
    """before_update listener of Message: new stems when what they depend on changed."""
    import sqlalchemy as sa

    state = sa.inspect(target)
    if any(state.attrs[name].history.has_changes() for name in _INPUTS):
        row = {name: getattr(target, name) for name in _INPUTS}
        for name, value in stem_columns(row).items():
            setattr(target, name, value)
