"""Full-text search over message subjects and texts, one hit per ticket, best first.

The index is made by migration 0006: on SQLite the FTS5 table `messages_fts`, kept in step
with `messages` by triggers; on PostgreSQL the generated tsvector column
`messages.search_document` with a GIN index. Both follow the same rules, so a query finds
the same tickets on either backend:

- words are matched whole, case-insensitively, with ё and е taken as the same letter;
- every word must occur (in the subject or the text of one message); `"two words"` must
  occur together, `word*` matches every word starting so, `-word` must not occur, and `OR`
  (in capitals) separates alternatives;
- anything else a user types (stray quotes, parentheses, colons, FTS or tsquery operators)
  is text, never syntax: each term reaches the database as a bound value, quoted as a
  string literal on SQLite and through phraseto_tsquery on PostgreSQL.

Every message is searched: customers' mail, our replies and agents' internal notes. One
difference remains: FTS5 also folds accents of Latin letters (café finds cafe), PostgreSQL
would need the unaccent extension for that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.errors import UsageError
from mailsupport.store.models import Message, Ticket
from mailsupport.store.tickets import follow_merges
from mailsupport.words import fold_yo

if TYPE_CHECKING:
    from mailsupport.store.db import Store

FTS_TABLE = "messages_fts"  # SQLite; FTS5 adds shadow tables named messages_fts_*
PG_COLUMN = "search_document"  # PostgreSQL: a generated tsvector column of messages
PG_INDEX = "ix_messages_search"  # PostgreSQL: its GIN index
TEXT_CHARS = 100_000  # how much of a message's text is indexed (see migration 0006)
# Subject matches weigh ten times text matches (on PostgreSQL: weights A and D of ts_rank).
SQLITE_WEIGHTS = (10.0, 1.0)
SNIPPET_WORDS = 16
# Snippets come back with the matches between these; callers choose how to show them.
MARK_START, MARK_END = "\x02", "\x03"
_MARKS = re.compile(f"([{MARK_START}{MARK_END}])")
_TERM = re.compile(r'(?P<neg>-?)"(?P<phrase>[^"]*)"?(?P<star>\*?)|(?P<word>\S+)')
_WORD = re.compile(r"[^\W_]+")  # letters and digits
MIN_PREFIX = 3  # letters a prefix needs; shorter ones are searched as whole words
_CHUNK = 500  # tickets looked up per query while picking the hits
# Words, phrases and exclusions a query may have. Each is a node of the SQL expression: with
# some 5,000 PostgreSQL plans for seconds and then stops at its stack depth limit. People
# type a few; a pasted paragraph stays well below.
MAX_TERMS = 200


# -- the query ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # one word or a phrase, folded; matched as text, never as syntax
    prefix: bool = False  # its last word may go on (`счёт*`)


@dataclass(frozen=True, slots=True)
class Clause:
    """All of `include` and none of `exclude`."""

    include: tuple[Term, ...]
    exclude: tuple[Term, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    clauses: tuple[Clause, ...]  # alternatives: any of them

    @property
    def empty(self) -> bool:
        return not self.clauses

    @property
    def terms(self) -> int:
        return sum(len(c.include) + len(c.exclude) for c in self.clauses)


def check_size(query: Query) -> None:
    """Refuse a query too large for the database to plan (UsageError), before it is sent."""
    if query.terms > MAX_TERMS:
        raise UsageError(
            f"the query has {query.terms} words and phrases, more than {MAX_TERMS}: "
            "search for fewer (the rarest words find the most)"
        )


def parse_query(text: str) -> Query:
    """Words, "phrases", word*, -word and OR from what a user typed; never fails.

    Terms without a letter or digit are dropped (they match nothing anyway), and so is an
    alternative with nothing but exclusions: "everything except" is not a search."""
    clauses: list[Clause] = []
    include: list[Term] = []
    exclude: list[Term] = []

    def close_clause() -> None:
        if include:
            clauses.append(Clause(tuple(include), tuple(exclude)))
        include.clear()
        exclude.clear()

    # NUL cannot reach PostgreSQL in a string, and is no word anyway.
    for match in _TERM.finditer(fold_yo(text.replace("\x00", " "))):
        word = match["word"]
        if word == "OR":
            close_clause()
            continue
        if word is None:
            negated, body, prefix = bool(match["neg"]), match["phrase"], bool(match["star"])
        else:
            negated = word.startswith("-") and len(word) > 1
            body = word[1:] if negated else word
            prefix = body.endswith("*")
            body = body.rstrip("*")
        if not any(ch.isalnum() for ch in body):
            continue
        if prefix and len(_WORD.findall(body)[-1]) < MIN_PREFIX:
            prefix = False  # `a*` would read the postings of half the dictionary
        (exclude if negated else include).append(Term(body, prefix))
    close_clause()
    return Query(tuple(clauses))


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One ticket found (the one that lives on) and the message of it to show."""

    number: int
    subject: str  # the ticket's
    status: str
    message_id: str  # the message whose text matches best
    direction: str  # in / out / note
    date: datetime  # that message's Date header, else when it was received
    rank: float  # the ticket's best message's; higher is better, within one search only
    snippet: str  # text around the matches, which are between MARK_START and MARK_END

    def marked_snippet(
        self, start: str = "[", end: str = "]", clean: Callable[[str], str] = str
    ) -> str:
        """The snippet with its marks as `start` and `end`; the mail's text between them
        passed through `clean` (a terminal's cleaner), never the marks."""
        pieces = _MARKS.split(self.snippet)
        marks = {MARK_START: start, MARK_END: end}
        return "".join(marks[p] if p in marks else clean(p) for p in pieces)

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "subject": self.subject,
            "status": self.status,
            "message_id": self.message_id,
            "direction": self.direction,
            "date": self.date.isoformat(),
            "rank": self.rank,
            "snippet": self.marked_snippet(),
        }


def search_store(
    store: Store, text: str, *, status: str | None = None, limit: int = 20
) -> list[Hit]:
    """`search` in a read transaction of its own: for callers that hold a Store."""
    with store.read() as session:
        return search(session, text, status=status, limit=limit)


def search(session: Session, text: str, *, status: str | None = None, limit: int = 20) -> list[Hit]:
    """The tickets whose messages match `text`, best first, at most `limit` of them.

    Merged tickets count as the ticket they were merged into, and `status` filters on that
    ticket. A query with nothing to search for finds nothing."""
    query = parse_query(text)
    if query.empty or limit < 1:
        return []
    check_size(query)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        candidates = _sqlite_best_per_ticket(session, query)
    elif dialect == "postgresql":
        candidates = _pg_best_per_ticket(session, query)
    else:  # pragma: no cover - mailsupport runs on these two only
        raise NotImplementedError(f"no full-text search on {dialect}")
    picked = _pick(session, candidates, status, limit)
    if not picked:
        return []
    pks = [pk for _, pk, _ in picked]
    messages = {
        row.id: row
        for row in session.execute(
            sa.select(
                col(Message.id),
                col(Message.message_id),
                col(Message.direction),
                col(Message.date),
                col(Message.received_at),
                col(Message.text),
            ).where(col(Message.id).in_(pks))
        )
    }
    if dialect == "sqlite":
        snippets = _sqlite_snippets(session, query, pks)
    else:
        snippets = _pg_snippets(session, query, {pk: messages[pk].text for pk in pks})
    hits = []
    for ticket, pk, score in picked:
        message = messages[pk]
        hits.append(
            Hit(
                number=ticket.number or ticket.id or 0,
                subject=ticket.subject,
                status=ticket.status,
                message_id=message.message_id,
                direction=message.direction,
                date=message.date or message.received_at,
                rank=score,
                snippet=" ".join(snippets.get(pk, "").split()),  # one line
            )
        )
    return hits


def _pick(
    session: Session, candidates: Sequence[tuple[int, int, float]], status: str | None, limit: int
) -> list[tuple[Ticket, int, float]]:
    """Resolve merges and the status filter, in rank order, until `limit` tickets are found.

    `candidates` are (message pk, ticket id, score), best first, one per ticket id; a merged
    ticket's best message may beat the survivor's own, so the first one seen wins."""
    picked: list[tuple[Ticket, int, float]] = []
    seen: set[int] = set()
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start : start + _CHUNK]
        ids = {ticket_id for _, ticket_id, _ in chunk}
        tickets = {t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(ids)))}
        for pk, ticket_id, score in chunk:
            ticket = follow_merges(session, tickets.get(ticket_id))
            if ticket is None or ticket.id is None or ticket.id in seen:
                continue
            seen.add(ticket.id)
            if status is not None and ticket.status != status:
                continue
            picked.append((ticket, pk, score))
            if len(picked) >= limit:
                return picked
    return picked


def _best_per_ticket(matches: str) -> str:
    """SQL for (message pk, ticket id, score) per ticket, best ticket first.

    `matches` is a subquery of (id, score, text_score) for every matching message. A ticket
    ranks by its best message; the message shown is the one whose text matches best, since
    every reply repeats the subject and a subject-only match makes a poor snippet."""
    return (
        "SELECT id, ticket_id, score FROM ("
        " SELECT m.id, m.ticket_id, max(f.score) OVER (PARTITION BY m.ticket_id) AS score,"
        "  row_number() OVER (PARTITION BY m.ticket_id"
        "   ORDER BY f.text_score DESC, f.score DESC, m.id DESC) AS n"
        f" FROM ({matches}) AS f JOIN messages AS m ON m.id = f.id"
        ") AS best WHERE n = 1 ORDER BY score DESC, ticket_id DESC"
    )


def _rows(result: sa.Result[Any]) -> list[tuple[int, int, float]]:
    return [(int(pk), int(ticket_id), float(score)) for pk, ticket_id, score in result]


# -- SQLite: FTS5 -------------------------------------------------------------------------


def fts5_query(query: Query) -> str:
    """The FTS5 MATCH expression. Every term is a double-quoted string, so whatever the user
    typed is only ever tokenized as text: quotes inside are doubled, and operators, column
    filters, parentheses and `^` inside a string are plain characters."""

    def term(t: Term) -> str:
        return '"' + t.text.replace('"', '""') + '"' + (" *" if t.prefix else "")

    alternatives = []
    for clause in query.clauses:
        expr = "(" + " AND ".join(term(t) for t in clause.include) + ")"
        for t in clause.exclude:
            expr += " NOT " + term(t)
        alternatives.append(f"({expr})")
    return " OR ".join(alternatives)


def _sqlite_best_per_ticket(session: Session, query: Query) -> list[tuple[int, int, float]]:
    # bm25 is lower for better matches; negated, every backend ranks higher-is-better.
    subject, text = SQLITE_WEIGHTS
    matches = (
        f"SELECT rowid AS id, -bm25({FTS_TABLE}, {subject}, {text}) AS score,"
        f" -bm25({FTS_TABLE}, 0.0, {text}) AS text_score"
        f" FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match"
    )
    result = session.execute(sa.text(_best_per_ticket(matches)), {"match": fts5_query(query)})
    return _rows(result)


def _sqlite_snippets(session: Session, query: Query, pks: list[int]) -> dict[int, str]:
    # Column 1 is the text: the subject is shown anyway. With no match in the text,
    # snippet() gives its first words, which say what the message is about. `+rowid` keeps
    # the ids away from FTS5, which would run the whole query again for each of them (slow
    # for a prefix that expands to many words); SQLite filters the matches instead.
    statement = sa.text(
        f"SELECT rowid, snippet({FTS_TABLE}, 1, :start, :end, '…', {SNIPPET_WORDS})"
        f" FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match AND +rowid IN :pks"
    ).bindparams(sa.bindparam("pks", expanding=True))
    params = {"match": fts5_query(query), "start": MARK_START, "end": MARK_END, "pks": pks}
    return {int(pk): text or "" for pk, text in session.execute(statement, params)}


# -- PostgreSQL: tsvector / tsquery -------------------------------------------------------


def pg_tsquery(query: Query) -> tuple[str, dict[str, str]]:
    """A tsquery expression and its bound values. phraseto_tsquery reads a term as plain
    text (the same parser as the document, so `a.kuznetsov` or `e-mail` match as indexed);
    the operators are put together here, never parsed from user input."""
    params: dict[str, str] = {}

    def term(t: Term) -> str:
        name = f"t{len(params)}"
        params[name] = t.text
        q = f"phraseto_tsquery('simple', :{name})"
        if t.prefix:
            # Its text form is valid tsquery syntax; `:*` makes the last lexeme a prefix.
            q = f"(CASE WHEN numnode({q}) > 0 THEN ({q}::text || ':*')::tsquery ELSE {q} END)"
        return q

    alternatives = []
    for clause in query.clauses:
        include = "(" + " && ".join(term(t) for t in clause.include) + ")"
        if clause.exclude:
            exclude = " && ".join(f"!!{term(t)}" for t in clause.exclude)
            # A term with no lexeme drops out of &&; were all included terms to drop out,
            # "not x" alone would match (and read) nearly every message.
            include = (
                f"(CASE WHEN numnode({include}) = 0 THEN ''::tsquery"
                f" ELSE {include} && {exclude} END)"
            )
        alternatives.append(include)
    return "(" + " || ".join(alternatives) + ")", params


def pg_best_per_ticket_sql(query: Query) -> tuple[str, dict[str, str]]:
    tsquery, params = pg_tsquery(query)
    # Normalization 1 divides by 1 + log(length): a long message does not win by length.
    matches = (
        f"SELECT id, ts_rank({PG_COLUMN}, q.query, 1) AS score,"
        # Weights of D, C, B, A: only the text (D) counts.
        f" ts_rank('{{0.1, 0, 0, 0}}', {PG_COLUMN}, q.query, 1) AS text_score"
        f" FROM messages, (SELECT {tsquery} AS query) AS q WHERE {PG_COLUMN} @@ q.query"
    )
    return _best_per_ticket(matches), params


def _pg_best_per_ticket(session: Session, query: Query) -> list[tuple[int, int, float]]:
    sql, params = pg_best_per_ticket_sql(query)
    return _rows(session.execute(sa.text(sql), params))


def _pg_snippets(session: Session, query: Query, texts: dict[int, str]) -> dict[int, str]:
    tsquery, params = pg_tsquery(query)
    options = (
        f"StartSel={MARK_START}, StopSel={MARK_END}, MaxFragments=1, ShortWord=0, "
        f"MaxWords={SNIPPET_WORDS}, MinWords={SNIPPET_WORDS // 2}"
    )
    # The headline is made from the folded text, the one the query matches, then mapped
    # back onto the original so a customer's ё shows as written.
    statement = sa.text(
        "SELECT id, ts_headline('simple', translate(left(text, :chars), 'Ёё', 'Ее'),"
        f" {tsquery}, :options) FROM messages WHERE id IN :pks"
    ).bindparams(sa.bindparam("pks", expanding=True))
    params |= {"chars": TEXT_CHARS, "options": options, "pks": list(texts)}  # type: ignore[dict-item]
    return {
        int(pk): _onto_original(headline or "", texts[pk][:TEXT_CHARS])
        for pk, headline in session.execute(statement, params)
    }


def _onto_original(headline: str, original: str) -> str:
    """The headline's pieces of text as the original has them, with … where text was left
    out at either end (as SQLite's snippet() marks it). ts_headline copies the text verbatim
    and folding keeps every character in its place, so each piece is found, in order."""
    folded = fold_yo(original)
    out: list[str] = []
    pos = 0
    first: int | None = None
    for piece in _MARKS.split(headline):
        if not piece or piece in (MARK_START, MARK_END):
            out.append(piece)
            continue
        at = folded.find(piece, pos)
        if at < 0:  # not expected; keep the headline's own text
            out.append(piece)
            continue
        first = at if first is None else first
        out.append(original[at : at + len(piece)])
        pos = at + len(piece)
    text = "".join(out)
    if first is None:
        return text
    head, tail = original[:first], original[pos:]
    # ts_headline's fragment leaves out the last word or two of a text when they are a
    # number or punctuation ("…а не на" for "…а не на 300."): those are given back.
    head = head if not any(ch.isalnum() for ch in head) else "…"
    tail = tail if len(tail.split()) <= 2 and len(tail) <= 40 else "…"
    return head + text + tail


# -- the schema -------------------------------------------------------------------------


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's `include_name` hook: the search index is made by migration 0006 in SQL the
    models do not describe (an FTS5 table with its shadow tables; a generated column and its
    index), so comparing the models with the database leaves it out. Used by
    migrations/env.py and the model comparison test."""
    if name is None:
        return True
    if type_ == "table":
        return name != FTS_TABLE and not name.startswith(FTS_TABLE + "_")
    if type_ == "column":
        return not (name == PG_COLUMN and parent_names.get("table_name") == "messages")
    if type_ == "index":
        return name != PG_INDEX
    return True
