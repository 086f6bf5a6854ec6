"""Full-text search over message subjects and texts (`mailsupport search`).

SQLite: an FTS5 table over `messages` (external content: the text is not stored twice), kept
in step by triggers. PostgreSQL: a generated tsvector column of `messages` with a GIN index.
These are not in the models; the model comparison leaves them out (search.include_name).

Both index the first 1,000 characters of the subject and the first 100,000 of the text, with
ё folded to е (Russian writers use them interchangeably). The text is capped because
PostgreSQL refuses a tsvector over 1 MB, which would make storing a huge message fail; the
cap keeps the two backends alike. mailsupport/search.py queries exactly these objects.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Written out here rather than imported: a migration must not change when the code does.
_FOLD = "replace(replace(substr({col}, 1, {n}), 'ё', 'е'), 'Ё', 'Е')"
_SUBJECT = _FOLD.format(col="{row}.subject", n=1000)
_TEXT = _FOLD.format(col="{row}.text", n=100000)


def _sqlite_values(row: str) -> str:
    return f"{row}.id, {_SUBJECT.format(row=row)}, {_TEXT.format(row=row)}"


# unicode61 folds case in every script (Cyrillic included) and, with remove_diacritics 2,
# accents of Latin letters; it does not fold ё, hence the replace() above. The index gets the
# folded text while snippet() reads the original from `messages`: folding keeps every token
# at the same position, so the matches it marks are the right words.
SQLITE_UP = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "subject, text, content='messages', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    # An external-content FTS5 table must be told the old values to forget a row, and they
    # must be the values it was given: the same folding on both sides.
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    f"INSERT INTO messages_fts (rowid, subject, text) VALUES ({_sqlite_values('new')}); "
    "END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
    f"VALUES ('delete', {_sqlite_values('old')}); "
    "END",
    # Only a change of the indexed columns: moving a message to another ticket (merge) or
    # recording its acknowledgement leaves the index alone.
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF id, subject, text ON messages BEGIN "
    "INSERT INTO messages_fts (messages_fts, rowid, subject, text) "
    f"VALUES ('delete', {_sqlite_values('old')}); "
    f"INSERT INTO messages_fts (rowid, subject, text) VALUES ({_sqlite_values('new')}); "
    "END",
    # Backfill. Not the 'rebuild' command: that would index the unfolded text of `messages`.
    "INSERT INTO messages_fts (rowid, subject, text) "
    f"SELECT {_sqlite_values('messages')} FROM messages",
]
SQLITE_DOWN = [
    "DROP TRIGGER messages_fts_update",
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_insert",
    "DROP TABLE messages_fts",
]

# PostgreSQL keeps the document as a stored generated column with a GIN index on it, not
# only an expression index: ts_rank needs the tsvector of every matching message, and
# recomputing it from the text made a common word take over a second on 100,000 messages
# (a stored column: under 0.1 s). It costs disk space, and PostgreSQL 12 or newer.
# 'simple' (lower-casing, no stemming, no stop words) rather than 'russian' or 'english': a
# desk gets mail in several languages and one message mixes them, a language's stemmer
# mangles words of the others, and it matches what FTS5 does on SQLite, so a search finds
# the same tickets on both backends. Word forms are found with a prefix query (`счёт*`).
# Subject weight A, text weight D: ts_rank counts a subject match ten times a text match.
PG_DOCUMENT = (
    "setweight(to_tsvector('simple'::regconfig, "
    "translate(left(subject, 1000), 'Ёё', 'Ее')), 'A') || "
    "setweight(to_tsvector('simple'::regconfig, "
    "translate(left(text, 100000), 'Ёё', 'Ее')), 'D')"
)
PG_UP = [
    "ALTER TABLE messages ADD COLUMN search_document tsvector "
    f"GENERATED ALWAYS AS ({PG_DOCUMENT}) STORED",
    "CREATE INDEX ix_messages_search ON messages USING gin (search_document)",
]
PG_DOWN = [
    "DROP INDEX ix_messages_search",
    "ALTER TABLE messages DROP COLUMN search_document",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in PG_UP:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in PG_DOWN:
            op.execute(statement)
