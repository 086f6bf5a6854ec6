"""Full-text search over message subjects and texts, one hit per ticket, best first.

The index is made by migration 0014 (after 0006): on SQLite the contentless FTS5 table
`messages_fts`, kept in step with `messages` by triggers; on PostgreSQL the generated
tsvector columns `messages.search_document` and `messages.search_stems` with GIN indexes.
Each has a message's exact words and, beside them, their Snowball stems (Russian or English
by each word's script), which Python computes when the message is written (store/stems.py),
so a query finds the same tickets on either backend:

- a word is found in any of its forms, whole, case-insensitively, with ё and е taken as
  the same letter: `принтеры` finds «принтер», `printers` finds "printer", `страница`
  finds «страницы»;
- every word must occur (in the subject or the text of one message); `"two words"` must
  occur together exactly as written (no other forms), `word*` matches every word starting
  so, `-word` must not occur (in any form), and `OR` (in capitals) separates alternatives;
- a word that is an e-mail address (`ivan@example.org`, `<ivan@example.org>`) finds the
  tickets that address takes part in (as their customer, in Cc, or seen on their mail), and
  `-ivan@example.org` leaves them out; quoted, `"ivan@example.org"` is text again;
- anything else a user types (stray quotes, parentheses, colons, FTS or tsquery operators)
  is text, never syntax: each term reaches the database as a bound value, quoted as a
  string literal on SQLite and through phraseto_tsquery on PostgreSQL.

Ranking is over the newest NEWEST_MATCHES (10,000) matching messages: a word that matches
more, a common one on a big desk, finds the best of the latest ones (ranking them all would
take seconds), and a narrower query finds older ones.

Customers' mail, our replies and agents' internal notes are searched. Our automatic mail is
not the ticket's words and is not indexed: acknowledgements (with the knowledge-base
articles they quote) are left out (store/stems.py says how they are told), and agents'
notifications are never stored as ticket messages. One difference remains: FTS5 also folds
accents of Latin letters (café finds cafe), PostgreSQL would need the unaccent extension.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailsupport.errors import UsageError
from mailsupport.snippets import MARK_END, MARK_START, Phrase, make_snippet
from mailsupport.store import EXPRESSION_INDEXES
from mailsupport.store.reader import Reader, Record
from mailsupport.store.stems import AUTOMATIC, TEXT_CHARS
from mailsupport.words import SEARCH_WORD, fold_yo, normalise, stems_of

if TYPE_CHECKING:
    from sqlmodel import Session

    from mailsupport.store.db import Store

FTS_TABLE = "messages_fts"  # SQLite; FTS5 adds shadow tables named messages_fts_*
# Its columns: the exact words, then the stems, each of the subject and of the text.
EXACT_COLUMNS = "{subject text}"
STEM_COLUMNS = "{subject_stems text_stems}"
PG_COLUMN = "search_document"  # PostgreSQL: a generated tsvector column of messages
PG_STEMS = "search_stems"  # PostgreSQL: its twin for the stems
PG_INDEX = "ix_messages_search"  # PostgreSQL: their GIN indexes
PG_STEMS_INDEX = "ix_messages_search_stems"
# Subject matches weigh ten times text matches (on PostgreSQL: weights A and D of ts_rank).
SQLITE_WEIGHTS = (10.0, 1.0)
_MARKS = re.compile(f"([{MARK_START}{MARK_END}])")
_TERM = re.compile(r'(?P<neg>-?)"(?P<phrase>[^"]*)"?(?P<star>\*?)|(?P<word>\S+)')
_WORD = SEARCH_WORD  # letters and digits
# An address as typed or pasted: `ivan@example.org`, `<ivan@example.org>,`.
_ADDRESS = re.compile(r'[^\s@<>()"*]+@[^\s@<>()"*]+')
MIN_PREFIX = 3  # letters a prefix needs; shorter ones are searched as whole words
_CHUNK = 500  # tickets looked up per query while picking the hits
# A query matching more messages than this ranks the newest this many of them (a common word
# on a big desk: ranking every match, hundreds of thousands, takes seconds). Ids grow as mail
# is stored, so these are the latest, and a match older than all of them is not listed.
NEWEST_MATCHES = 10_000
FIRST_CANDIDATES = 200  # best tickets read at first, see search_reader
PG_PHRASE_WORK_MEM = "64MB"  # see search_reader
CANDIDATES_PER_HIT = 10  # or this many for each hit asked for, when that is more
# Words, phrases, addresses and exclusions a query may have. Each is a node of the SQL
# expression: with some 5,000 PostgreSQL plans for seconds and then stops at its stack depth
# limit. People type a few; a pasted paragraph stays well below.
MAX_TERMS = 200


# -- the query ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # one word or a phrase, folded; matched as text, never as syntax
    prefix: bool = False  # its last word may go on (`счёт*`)
    exact: bool = False  # matched as written (a phrase, a prefix), else by the words' stems

    @property
    def stems(self) -> str:
        """What a word is looked up as among the stems: each of its words' stem."""
        return stems_of(self.text)


@dataclass(frozen=True, slots=True)
class Clause:
    """All of `include` and none of `exclude`, in one message; and a ticket that every one
    of `addresses` takes part in, and none of `not_addresses`."""

    include: tuple[Term, ...]
    exclude: tuple[Term, ...] = ()
    addresses: tuple[str, ...] = ()  # lowercased
    not_addresses: tuple[str, ...] = ()

    def terms(self, exact: bool) -> tuple[tuple[Term, ...], tuple[Term, ...]]:
        """The included and the excluded terms matched exactly (or by stems)."""
        return (
            tuple(t for t in self.include if t.exact == exact),
            tuple(t for t in self.exclude if t.exact == exact),
        )


@dataclass(frozen=True, slots=True)
class Query:
    clauses: tuple[Clause, ...]  # alternatives: any of them

    @property
    def empty(self) -> bool:
        return not self.clauses

    @property
    def terms(self) -> int:
        return sum(
            len(c.include) + len(c.exclude) + len(c.addresses) + len(c.not_addresses)
            for c in self.clauses
        )

    def includes(self, exact: bool) -> list[Term]:
        """Every included term matched exactly (or by stems), in any clause."""
        return [t for c in self.clauses for t in c.include if t.exact == exact]


def check_size(query: Query) -> None:
    """Refuse a query too large for the database to plan (UsageError), before it is sent."""
    if query.terms > MAX_TERMS:
        raise UsageError(
            f"the query has {query.terms} words and phrases, more than {MAX_TERMS}: "
            "search for fewer (the rarest words find the most)"
        )


def parse_query(text: str) -> Query:
    """Words, "phrases", word*, -word, addresses and OR from what a user typed; never fails.

    Terms without a letter or digit are dropped (they match nothing anyway), and so is an
    alternative with nothing but exclusions: "everything except" is not a search."""
    clauses: list[Clause] = []
    include: list[Term] = []
    exclude: list[Term] = []
    addresses: list[str] = []
    not_addresses: list[str] = []

    def close_clause() -> None:
        if include or addresses:
            clauses.append(Clause(*map(tuple, (include, exclude, addresses, not_addresses))))
        for parts in (include, exclude, addresses, not_addresses):
            parts.clear()

    # NUL cannot reach PostgreSQL in a string, and is no word anyway.
    original = text.replace("\x00", " ")
    for match in _TERM.finditer(fold_yo(original)):
        word = match["word"]
        if word == "OR":
            close_clause()
            continue
        if word is None:
            negated, body, prefix = bool(match["neg"]), match["phrase"], bool(match["star"])
            exact = True
        else:
            negated = word.startswith("-") and len(word) > 1
            address = _address(original[match.start() + negated : match.end()])
            if address:  # as typed, ё included: addresses are not folded
                (not_addresses if negated else addresses).append(address)
                continue
            body = word[1:] if negated else word
            prefix = body.endswith("*")
            body = body.rstrip("*")
            exact = prefix
        if not any(ch.isalnum() for ch in body):
            continue
        if prefix and len(_WORD.findall(body)[-1]) < MIN_PREFIX:
            prefix = False  # `a*` would read the postings of half the dictionary
        (exclude if negated else include).append(Term(body, prefix, exact))
    close_clause()
    return Query(tuple(clauses))


def _address(word: str) -> str:
    """The address a word is, lowercased, or ""."""
    word = word.rstrip(",;.").strip("<>")
    return word.lower() if _ADDRESS.fullmatch(word) else ""


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
    connection = session.connection()
    sqlite = connection.dialect.name == "sqlite"
    return search_reader(Reader(connection, sqlite=sqlite, dbapi=False), text, status, limit)


def search_reader(
    reader: Reader, text: str, status: str | None = None, limit: int = 20
) -> list[Hit]:
    """`search` through a Reader (store/queries.py): plain SQL, so that the `search` command
    reads the way `list` does, without loading SQLAlchemy and the models."""
    query = parse_query(text)
    if query.empty or limit < 1:
        return []
    check_size(query)
    sql, params = (sqlite_best_per_ticket_sql if reader.sqlite else pg_best_per_ticket_sql)(query)
    if not reader.sqlite and _has_phrase(query):
        # Room for the phrase's candidates as an exact bitmap (at the default 4 MB it turns
        # lossy, and every message of a lossy page is read and checked again), for this
        # read transaction only.
        reader.all("SELECT set_config('work_mem', :mem, true)", {"mem": PG_PHRASE_WORK_MEM})
    # The best tickets first: enough for `limit` unless many are merged away or filtered
    # out by status, and then all of them. A common word matches a good part of a big desk,
    # and every row more is a row more to send and convert.
    first = max(FIRST_CANDIDATES, CANDIDATES_PER_HIT * limit)
    candidates = _rows(reader.all(sql, {**params, "candidates": first}))
    picked = _pick(reader, candidates, status, limit)
    if len(picked) < limit and len(candidates) == first:
        every = -1 if reader.sqlite else None  # LIMIT -1 on SQLite, LIMIT NULL on PostgreSQL
        candidates = _rows(reader.all(sql, {**params, "candidates": every}))
        picked = _pick(reader, candidates, status, limit)
    if not picked:
        return []
    marks = ", ".join(f":m{i}" for i in range(len(picked)))
    messages = {
        row.id: row
        for row in reader.all(
            "SELECT id, message_id, direction, date, received_at, text FROM messages"
            f" WHERE id IN ({marks})",
            {f"m{i}": pk for i, (_, pk, _) in enumerate(picked)},
        )
    }
    stems = {s for t in query.includes(exact=False) for s in t.stems.split()}
    phrases = [
        Phrase(tuple(_WORD.findall(normalise(t.text))), t.prefix)
        for t in query.includes(exact=True)
    ]
    hits = []
    for ticket, pk, score in picked:
        message = messages[pk]
        snippet = make_snippet(message.text[:TEXT_CHARS], stems, phrases)
        hits.append(
            Hit(
                number=ticket.number or ticket.id or 0,
                subject=ticket.subject,
                status=ticket.status,
                message_id=message.message_id,
                direction=message.direction,
                date=message.date or message.received_at,
                rank=score,
                snippet=" ".join(snippet.split()),  # one line
            )
        )
    return hits


_TICKET = "SELECT id, number, subject, status, merged_into_id FROM tickets"


def _pick(
    reader: Reader, candidates: Sequence[tuple[int, int, float]], status: str | None, limit: int
) -> list[tuple[Record, int, float]]:
    """Resolve merges and the status filter, in rank order, until `limit` tickets are found.

    `candidates` are (message pk, ticket id, score), best first, one per ticket id; a merged
    ticket's best message may beat the survivor's own, so the first one seen wins."""
    picked: list[tuple[Record, int, float]] = []
    seen: set[int] = set()
    for start in range(0, len(candidates), _CHUNK):
        chunk = candidates[start : start + _CHUNK]
        ids = sorted({ticket_id for _, ticket_id, _ in chunk})
        marks = ", ".join(f":i{i}" for i in range(len(ids)))
        rows = reader.all(
            f"{_TICKET} WHERE id IN ({marks})", {f"i{i}": v for i, v in enumerate(ids)}
        )
        tickets = {t.id: t for t in rows}
        for pk, ticket_id, score in chunk:
            ticket = _follow_merges(reader, tickets.get(ticket_id))
            if ticket is None or ticket.id in seen:
                continue
            seen.add(ticket.id)
            if status is not None and ticket.status != status:
                continue
            picked.append((ticket, pk, score))
            if len(picked) >= limit:
                return picked
    return picked


def _follow_merges(reader: Reader, ticket: Record | None) -> Record | None:
    """The ticket that lives on after `ticket` was merged (itself when it was not)."""
    seen: set[int] = set()
    while ticket is not None and ticket.merged_into_id is not None and ticket.id not in seen:
        seen.add(ticket.id)
        ticket = reader.first(f"{_TICKET} WHERE id = :id", {"id": ticket.merged_into_id})
    return ticket


def _best_per_ticket(matches: str, with_ticket: bool = False) -> str:
    """SQL for (message pk, ticket id, score) per ticket, best ticket first; at most
    :candidates rows, a bound value the caller gives (all of them: -1 on SQLite, None on
    PostgreSQL).

    `matches` is a subquery of (id, score, text_score) for every matching message, and its
    ticket_id when `with_ticket` (else it is looked up in messages). A ticket ranks by its
    best message; the message shown is the one whose text matches best, since every reply
    repeats the subject and a subject-only match makes a poor snippet."""
    source = (
        f"({matches}) AS m" if with_ticket else f"({matches}) AS f JOIN messages AS m USING (id)"
    )
    return (
        "SELECT id, ticket_id, score FROM ("
        " SELECT id, m.ticket_id, max(score) OVER (PARTITION BY m.ticket_id) AS score,"
        "  row_number() OVER (PARTITION BY m.ticket_id"
        "   ORDER BY text_score DESC, score DESC, id DESC) AS n"
        f" FROM {source}"
        ") AS best WHERE n = 1 ORDER BY score DESC, ticket_id DESC LIMIT :candidates"
    )


def _lowest_of_newest(newest: str, column: str) -> str:
    """SQL for the lowest message id among the NEWEST_MATCHES first rows of `newest` (the
    matching messages' ids, newest first), 0 when there are none: the messages ranked."""
    return (
        f"SELECT coalesce(min({column}), 0) FROM ({newest} LIMIT {int(NEWEST_MATCHES)}) AS newest"
    )


def _rows(result: Sequence[Record]) -> list[tuple[int, int, float]]:
    return [(int(r["id"]), int(r["ticket_id"]), float(r["score"])) for r in result]


# -- which tickets an address takes part in ------------------------------------------------


def _address_filter(clause: Clause, bind: Callable[[str], str]) -> str:
    """SQL over a message's `ticket_id`: its ticket has every address of the clause among its
    participants, and none of its excluded ones ("" when the clause names none)."""

    def takes_part(address: str) -> str:
        return f"ticket_id IN (SELECT ticket_id FROM participants WHERE address = {bind(address)})"

    tests = [takes_part(a) for a in clause.addresses]
    tests += [f"NOT {takes_part(a)}" for a in clause.not_addresses]
    return " AND ".join(tests)


class _Params(dict[str, str]):
    """Bound values of one statement, named in order: each call binds one more."""

    def __call__(self, value: str) -> str:
        name = f"t{len(self)}"
        self[name] = value
        return f":{name}"


# -- SQLite: FTS5 -------------------------------------------------------------------------


def fts5_term(t: Term) -> str:
    """One term as an FTS5 expression over its columns. Every term is a double-quoted
    string, so whatever the user typed is only ever tokenized as text: quotes inside are
    doubled, and operators, column filters, parentheses and `^` inside a string are plain
    characters."""
    if not t.exact:
        return f'{STEM_COLUMNS} : "{t.stems}"'  # letters, digits and spaces only
    return EXACT_COLUMNS + ' : "' + t.text.replace('"', '""') + '"' + (" *" if t.prefix else "")


def fts5_query(clause: Clause) -> str:
    """The FTS5 MATCH expression of one alternative's words (there must be some)."""
    expr = "(" + " AND ".join(fts5_term(t) for t in clause.include) + ")"
    for t in clause.exclude:
        expr += f" NOT ({fts5_term(t)})"
    return expr


def sqlite_best_per_ticket_sql(query: Query) -> tuple[str, dict[str, str]]:
    """One FTS5 MATCH for the alternatives of words alone, and one SELECT more for each
    alternative that names addresses (a condition on tickets, not on the index: FTS5 takes
    one MATCH a SELECT, never within an OR)."""
    params = _Params()
    # bm25 is lower for better matches; negated, every backend ranks higher-is-better.
    subject, text = SQLITE_WEIGHTS
    selects = []
    words_only = [c for c in query.clauses if not (c.addresses or c.not_addresses)]
    groups = [words_only] if words_only else []  # one MATCH for all of them
    groups += [[c] for c in query.clauses if c.addresses or c.not_addresses]
    for group in groups:
        clause = group[0]
        addresses = _address_filter(clause, params)
        if clause.include:
            match = " OR ".join(f"({fts5_query(c)})" for c in group)
            where = f"{FTS_TABLE} MATCH {params(match)}"
            if addresses:
                where += f" AND rowid IN (SELECT id FROM messages WHERE {addresses})"
            # FTS5 walks the matches newest first and stops; the rowid bound then limits
            # the ranking (bm25 reads each match's column sizes) to those.
            newest = f"SELECT rowid FROM {FTS_TABLE} WHERE {where} ORDER BY rowid DESC"
            where += f" AND rowid >= ({_lowest_of_newest(newest, 'rowid')})"
            selects.append(
                f"SELECT rowid AS id, -bm25({FTS_TABLE}, {subject}, {text}, {subject}, {text})"
                f" AS score, -bm25({FTS_TABLE}, 0.0, {text}, 0.0, {text}) AS text_score"
                f" FROM {FTS_TABLE} WHERE {where}"
            )
            continue
        # Addresses alone: every message of their tickets but ours, the latest shown.
        where = f"NOT {AUTOMATIC} AND {addresses}"
        if clause.exclude:
            excluded = " OR ".join(f"({fts5_term(t)})" for t in clause.exclude)
            where += f" AND id NOT IN (SELECT rowid FROM {FTS_TABLE}"
            where += f" WHERE {FTS_TABLE} MATCH {params(excluded)})"
        selects.append(f"SELECT id, 0.0 AS score, 0.0 AS text_score FROM messages WHERE {where}")
    return _best_per_ticket(" UNION ALL ".join(selects)), params


# -- PostgreSQL: tsvector / tsquery -------------------------------------------------------


def pg_tsquery(
    terms: Sequence[Term], bind: Callable[[str], str], op: str = " && ", loose: bool = False
) -> str:
    """The terms' tsqueries joined by `op`. phraseto_tsquery reads a term as plain text (the
    same parser as the document, so `a.kuznetsov` or `e-mail` match as indexed); the
    operators are put together here, never parsed from user input. `loose`: a phrase as its
    words anywhere in the message (plainto_tsquery), which the index answers without
    reading each message's positions: every message the phrase matches, and others."""

    def term(t: Term) -> str:
        words = "plainto_tsquery" if loose and t.exact and not t.prefix else "phraseto_tsquery"
        q = f"{words}('simple', {bind(t.text if t.exact else t.stems)})"
        if t.prefix:
            # Its text form is valid tsquery syntax; `:*` makes the last lexeme a prefix.
            q = f"(CASE WHEN numnode({q}) > 0 THEN ({q}::text || ':*')::tsquery ELSE {q} END)"
        return q

    return "(" + op.join(term(t) for t in terms) + ")"


def _pg_match(
    column: str, include: Sequence[Term], exclude: Sequence[Term], bind: Any, loose: bool
) -> str:
    """`column` matches all of `include` (`loose`: see pg_tsquery) and none of `exclude`
    (terms of its kind)."""
    excluded = " && ".join(f"!!{pg_tsquery([t], bind)}" for t in exclude)
    if not include:  # the alternative includes words of the other kind, or addresses
        return f"{column} @@ ({excluded})"
    query = pg_tsquery(include, bind, loose=loose)
    if exclude:
        # A term with no lexeme drops out of &&; were all included terms to drop out,
        # "not x" alone would match (and read) nearly every message.
        query = f"(CASE WHEN numnode({query}) = 0 THEN ''::tsquery ELSE {query} && {excluded} END)"
    return f"{column} @@ {query}"


def _pg_where(query: Query, params: _Params, loose: bool = False) -> str:
    """SQL over a message's columns: it matches `query` (`loose`: see pg_tsquery)."""
    alternatives = []
    for clause in query.clauses:
        tests = []
        for column, exact in ((PG_COLUMN, True), (PG_STEMS, False)):
            include, exclude = clause.terms(exact)
            if include or exclude:
                tests.append(_pg_match(column, include, exclude, params, loose))
        if not clause.include:  # addresses alone: every message of their tickets but ours
            tests.append(f"NOT {AUTOMATIC}")
        tests.append(_address_filter(clause, params))
        alternatives.append("(" + " AND ".join(t for t in tests if t) + ")")
    return " OR ".join(alternatives)


def _has_phrase(query: Query) -> bool:
    return any(" " in t.text for t in query.includes(exact=True))


def pg_best_per_ticket_sql(query: Query) -> tuple[str, dict[str, str]]:
    params = _Params()
    # Normalization 1 divides by 1 + log(length): a long message does not win by length.
    # Weights of D, C, B, A: for the text score only the text (D) counts.
    score, text_score = ["0.0"], ["0.0"]
    for column, exact in ((PG_COLUMN, True), (PG_STEMS, False)):
        terms = query.includes(exact)
        if terms:
            any_term = pg_tsquery(terms, params, " || ")
            score.append(f"ts_rank({column}, {any_term}, 1)")
            text_score.append(f"ts_rank('{{0.1, 0, 0, 0}}', {column}, {any_term}, 1)")
    where = _pg_where(query, params)
    newest = f"SELECT id FROM messages WHERE {where} ORDER BY id DESC LIMIT {int(NEWEST_MATCHES)}"
    if _has_phrase(query):
        # A phrase: the index finds the messages with its words at once, but checking that
        # they stand together reads each one's positions (2.3 s for a common phrase at a
        # million tickets, all ~300,000 candidates). So: the candidates newest first, each
        # checked in turn, until the newest NEWEST_MATCHES are found.
        candidates = f"SELECT id FROM messages WHERE {_pg_where(query, params, loose=True)}"
        newest = (
            f"SELECT c.id FROM ({candidates} ORDER BY id DESC) AS c"
            f" WHERE (SELECT {where} FROM messages WHERE messages.id = c.id)"
            f" LIMIT {int(NEWEST_MATCHES)}"
        )
    # The newest matches' ids in one backward walk of the key, then their rows by key: a
    # second walk over the ids they span, checking each message again, took as long again
    # (a word at a million tickets: 0.23 -> 0.16 s).
    matches = (
        f"SELECT m.id, m.ticket_id, {' + '.join(score)} AS score,"
        f" {' + '.join(text_score)} AS text_score"
        f" FROM ({newest}) AS newest JOIN messages AS m USING (id)"
    )
    return _best_per_ticket(matches, with_ticket=True), params


# -- the schema -------------------------------------------------------------------------


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's `include_name` hook: the search index is made by migrations 0006 and 0014 in
    SQL the models do not describe (an FTS5 table with its shadow tables; generated columns
    and their indexes), so comparing the models with the database leaves it out. (The stem
    columns it reads are the models'.) So are the indexes on expressions (those of the
    priority order): SQLite cannot give them back, PostgreSQL gives them back rewritten.
    Used by migrations/env.py and the model comparison test."""
    if name is None:
        return True
    if type_ == "table":
        return name != FTS_TABLE and not name.startswith(FTS_TABLE + "_")
    if type_ == "column":
        generated = name in (PG_COLUMN, PG_STEMS)
        return not (generated and parent_names.get("table_name") == "messages")
    if type_ == "index":
        return name not in (PG_INDEX, PG_STEMS_INDEX, *EXPRESSION_INDEXES)
    return True


def include_object(item: Any, name: str | None, type_: str, *_: Any) -> bool:
    """Alembic's `include_object` hook: include_name's rule for the models' side, where the
    indexes on expressions are declared."""
    return not (type_ == "index" and name in EXPRESSION_INDEXES)
