"""Search by word forms: the index gets each message's Snowball stems beside its exact words,
and leaves out our acknowledgements.

`messages` gets `subject_stems` and `text_stems`, computed in Python (mailsupport/store/
stems.py) when a message is written; this migration computes them for the messages already
stored, in batches. The index then has four parts: the exact subject and text as 0006 made
them (quoted phrases and prefixes match these), and the two stem columns (a query's bare
words match these, by their own stems).

SQLite: the FTS5 table `messages_fts` is made again with the four columns, contentless (the
search makes its snippets from `messages`, so FTS5 never reads the text back), kept in step by
triggers that give it the same values when a row is forgotten as when it was indexed.
PostgreSQL: the generated column `search_document` (exact words, as 0006) and a second one,
`search_stems`, each with a GIN index.

Acknowledgements (our mail without an agent, not imported: direction 'out', no author, no
raw bytes) are not indexed at all: their text is ours (templates, knowledge-base articles),
not the ticket's words.

Revision ID: 0014
Revises: 0013
"""

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BATCH = 500  # messages stemmed and written at a time

# Written out here rather than imported, as in 0006: this SQL must not change with the code.
# (The stems themselves are the code's: a change of how words are stemmed would come with a
# migration of its own that computes them again.)
_FOLD = "replace(replace(substr({col}, 1, {n}), 'ё', 'е'), 'Ё', 'Е')"
_AUTOMATIC = "({row}.direction = 'out' AND {row}.author = '' AND {row}.raw_id IS NULL)"
_COLUMNS = "rowid, subject, text, subject_stems, text_stems"


def _values(row: str) -> str:
    subject = _FOLD.format(col=f"{row}.subject", n=1000)
    text = _FOLD.format(col=f"{row}.text", n=100000)
    return f"{row}.id, {subject}, {text}, {row}.subject_stems, {row}.text_stems"


def _index(row: str) -> str:
    return (
        f"INSERT INTO messages_fts ({_COLUMNS}) SELECT {_values(row)} "
        f"WHERE NOT {_AUTOMATIC.format(row=row)}; "
    )


def _forget(row: str) -> str:
    return (
        f"INSERT INTO messages_fts (messages_fts, {_COLUMNS}) SELECT 'delete', {_values(row)} "
        f"WHERE NOT {_AUTOMATIC.format(row=row)}; "
    )


SQLITE_UP = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "subject, text, subject_stems, text_stems, content='', "
    "tokenize='unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN {_index('new')}END",
    f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN {_forget('old')}END",
    # Only a change of what the index holds or of whether a message is ours: moving it to
    # another ticket (merge) or recording its acknowledgement leaves the index alone.
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF id, subject, text, subject_stems, "
    "text_stems, direction, author, raw_id ON messages BEGIN "
    f"{_forget('old')}{_index('new')}END",
    f"INSERT INTO messages_fts ({_COLUMNS}) SELECT {_values('messages')} FROM messages "
    f"WHERE NOT {_AUTOMATIC.format(row='messages')}",
]
SQLITE_DROP = [
    "DROP TRIGGER messages_fts_update",
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_insert",
    "DROP TABLE messages_fts",
]


def _pg_part(column: str, n: int, weight: str) -> str:
    source = f"translate(left({column}, {n}), 'Ёё', 'Ее')" if n else column
    return f"setweight(to_tsvector('simple'::regconfig, {source}), '{weight}')"


def _pg_generated(name: str, document: str) -> str:
    automatic = _AUTOMATIC.format(row="messages").replace("messages.", "")
    return (
        f"ADD COLUMN {name} tsvector GENERATED ALWAYS AS "
        f"(CASE WHEN {automatic} THEN ''::tsvector ELSE {document} END) STORED"
    )


# Subject weight A, text weight D in both: ts_rank counts a subject match ten times a text
# match. The stems are capped already (by the length of what was stemmed). One ALTER TABLE
# for both columns: the table is written anew once.
PG_UP = [
    "ALTER TABLE messages "
    + _pg_generated(
        "search_document", f"{_pg_part('subject', 1000, 'A')} || {_pg_part('text', 100000, 'D')}"
    )
    + ", "
    + _pg_generated(
        "search_stems", f"{_pg_part('subject_stems', 0, 'A')} || {_pg_part('text_stems', 0, 'D')}"
    ),
    "CREATE INDEX ix_messages_search ON messages USING gin (search_document)",
    "CREATE INDEX ix_messages_search_stems ON messages USING gin (search_stems)",
]
PG_DROP = [
    "DROP INDEX ix_messages_search_stems",
    "DROP INDEX ix_messages_search",
    "ALTER TABLE messages DROP COLUMN search_stems",
    "ALTER TABLE messages DROP COLUMN search_document",
]


def _compute_stems() -> None:
    """The stems of every stored message, a batch at a time (the text of a whole store
    would not fit in memory)."""
    from mailsupport.store.stems import stem_columns

    conn = op.get_bind()
    read = sa.text(
        "SELECT id, subject, text, direction, author, raw_id FROM messages "
        "WHERE id > :after ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE messages SET subject_stems = :s, text_stems = :t WHERE id = :id")
    after = 0
    while rows := conn.execute(read, {"after": after, "n": _BATCH}).mappings().all():
        updates = []
        for row in rows:
            stems = stem_columns(row)
            updates.append({"id": row["id"], "s": stems["subject_stems"], "t": stems["text_stems"]})
        conn.execute(write, updates)
        after = rows[-1]["id"]


def _add_stem_columns() -> None:
    for name in ("subject_stems", "text_stems"):
        op.add_column("messages", sa.Column(name, sa.Text(), nullable=False, server_default=""))


def _drop_stem_columns() -> None:
    for name in ("text_stems", "subject_stems"):
        # Not batch mode (see 0009): SQLite 3.35 and later drop a plain column in place.
        op.execute(f"ALTER TABLE messages DROP COLUMN {name}")


def _search_0006():  # type: ignore[no-untyped-def]
    return importlib.import_module("mailsupport.store.migrations.versions.0006_search")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    old = _search_0006()
    # The old index goes first: on PostgreSQL every stored row's update would compute its
    # generated column again, on SQLite the triggers would index the messages twice.
    for statement in old.SQLITE_DOWN if dialect == "sqlite" else old.PG_DOWN:
        op.execute(statement)
    _add_stem_columns()
    _compute_stems()
    for statement in SQLITE_UP if dialect == "sqlite" else PG_UP:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_DROP if dialect == "sqlite" else PG_DROP:
        op.execute(statement)
    _drop_stem_columns()
    old = _search_0006()
    for statement in old.SQLITE_UP if dialect == "sqlite" else old.PG_UP:
        op.execute(statement)
