"""Builds a store of many tickets for the benchmark, quickly, and caches it: a SQLite file,
or a PostgreSQL database of its own (bench_read_<tickets>).

The schema comes from the real migrations (`Store.open`); the rows go in as bulk inserts
(SQLite: executemany on the driver; PostgreSQL: COPY), each value converted by the model
column's own bind processor, so the store is what mailsupport itself would have written:
aware times stored the same way, the search index filled by the migrations' triggers and
generated columns. Subjects and bodies are English and Russian; replies quote what they
answer, as mail clients do ("On ... wrote:" or "... пишет:" and "> " lines).

The stems search indexes (store/stems.py) are computed here as the column defaults would
compute them, but in pieces: a message's text is its own words, then the quote head, then
the message it quotes, and `stems_of` of text joined at a line break is the stems of each
part joined by a space. Each part's stems are computed once (the quoted message's are
those of the message before), which is what makes 4,000,000 messages take minutes. The
first batch of every build is checked against `stem_columns` row by row.

Generation is streamed: BATCH tickets at a time, so memory stays flat whatever the size.
Raw message bytes are kept only for the ticket `show` is timed on: they are never read by
`list` or `show` (only by `show --raw`) and would make the store several times larger.
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailsupport.topicterms import Terms

# Bump when the generated data changes, so a cached store is built again.
GENERATOR_VERSION = 3  # 2: tickets say who wrote last; 3: and keep their topic terms
SEED = 20260302
BATCH = 5000  # tickets generated and written at a time (one transaction)
SHOW_MESSAGES = 10  # the ticket `show` is timed on has this many messages
AGENTS = ("anna", "boris", "chen", "dmitry", "elena", "farid", "gwen", "hugo")
QUEUES = ("", "", "", "billing", "technical", "sales")
TAGS = ("vip", "invoice", "login", "bug", "refund", "mobile", "вопрос", "urgent-customer")
SUPPORT = {"name": "Example Support", "address": "support@example.com"}
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPAN = timedelta(days=730)

SUBJECTS_EN = (
    "Cannot log in to my account",
    "Invoice {n} is wrong",
    "Password reset link does not work",
    "App crashes on start after the update",
    "How do I export my data?",
    "Refund for order #{n}",
    "Two-factor codes arrive late",
    "Please change the billing address",
    "Sync stopped working on Android",
    "Question about the annual plan",
)
SUBJECTS_RU = (
    "Не приходит счёт за март",
    "Не могу войти в личный кабинет",
    "Ошибка при оплате заказа {n}",
    "Вопрос по тарифу",
    "Приложение не запускается",
    "Верните деньги за заказ №{n}",
    "Не работает синхронизация",
    "Смена реквизитов для счёта",
)
BODY_EN = (
    "Hello,\n\nsince yesterday {problem}. I have tried again this morning and it is the "
    "same. Could you have a look, please?\n\nThanks,\n{name}"
)
BODY_RU = (
    "Здравствуйте!\n\nС позавчерашнего дня {problem}. Пробовал(а) ещё раз сегодня утром — "
    "то же самое. Посмотрите, пожалуйста.\n\nСпасибо,\n{name}"
)
PROBLEMS_EN = (
    "the login page says my password is wrong",
    "the invoice shows the old amount",
    "the app closes right after the splash screen",
    "I do not get any e-mail from you",
    "the export button does nothing",
)
PROBLEMS_RU = (
    "личный кабинет пишет, что пароль неверный",
    "в счёте старая сумма",
    "приложение закрывается сразу после заставки",
    "от вас не приходят письма",
    "кнопка выгрузки ничего не делает",
)
REPLIES_EN = (
    "Hello {name},\n\nthank you for writing. We have looked into it and fixed the account "
    "settings; please try again and tell us how it goes.\n\nBest regards,\n{agent}",
    "Hi {name},\n\ncould you send us a screenshot and the time it happened?\n\n{agent}",
)
REPLIES_RU = (
    "Здравствуйте, {name}!\n\nСпасибо за письмо. Мы исправили настройки, попробуйте ещё раз "
    "и напишите, получилось ли.\n\nС уважением,\n{agent}",
    "{name}, добрый день!\n\nПришлите, пожалуйста, снимок экрана и время, когда это "
    "случилось.\n\n{agent}",
)
FOLLOWUPS_EN = ("It works again, thank you!", "Still the same, see the screenshot.", "Any news?")
FOLLOWUPS_RU = ("Всё заработало, спасибо!", "Всё так же, снимок во вложении.", "Есть новости?")
FIRST = ("Anna", "Ivan", "Maria", "John", "Olga", "Peter", "Светлана", "Дмитрий", "Lena", "Tom")
LAST = ("Petrova", "Smirnov", "Ivanova", "Smith", "Kuznetsova", "Miller", "Соколова", "Brown")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mailsupport-bench"


def store_path(cache_dir: Path, tickets: int, revision: str, raw_all: bool = False) -> Path:
    kind = "-raw" if raw_all else ""
    return cache_dir / f"store-{tickets}{kind}-r{revision}-g{GENERATOR_VERSION}.db"


def pg_database(tickets: int) -> str:
    """The PostgreSQL database of a store of `tickets` tickets (kept between runs)."""
    return f"bench_read_{tickets}"


def pg_stamp(tickets: int) -> str:
    """What the comment of a complete PostgreSQL store says: a build stopped halfway, or made
    for another schema or generator, has another (or none) and is built again."""
    from mailsupport.store.db import SCHEMA_REVISION

    return f"mailsupport bench store: {tickets} tickets, r{SCHEMA_REVISION} g{GENERATOR_VERSION}"


def build(path: Path, tickets: int, log: Any = print, raw_all: bool = False) -> int:
    """Write a store of `tickets` tickets to `path` (atomically); returns the number of the
    ticket with SHOW_MESSAGES messages. `raw_all`: a raw_messages row for every message (a
    short placeholder for the bytes), so that the indexes intake searches on every message
    (sha256, Message-ID, references) are as large as a real store's."""
    import sqlite3

    from mailsupport.store.db import Store

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    os.close(fd)
    os.unlink(partial)  # an empty file would not count as a brand-new database
    started = time.monotonic()
    try:
        store = Store.open(f"sqlite:///{partial}")  # the schema, by the migrations
        dialect = store.engine.dialect
        store.engine.dispose()
        # Bulk loading a file nobody uses yet: durability buys nothing here. No ANALYZE: a
        # desk's own store never gets one, so the plans timed are its plans.
        conn = sqlite3.connect(partial, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes being written
            # The search index is filled at the end, by migration 0014's own statement (as it
            # indexes the messages of a store it upgrades), then the triggers come back: half
            # the time of indexing each message through the triggers as it goes in.
            fts = _sqlite_fts_statements()
            for statement in fts["drop triggers"]:
                conn.execute(statement)

            def write(rows: dict[str, list[dict[str, Any]]]) -> None:
                conn.execute("BEGIN")
                for table, columns, values in _converted(rows, dialect):
                    names = ", ".join(f'"{c}"' for c in columns)
                    marks = ", ".join("?" * len(columns))
                    conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', values)
                conn.execute("COMMIT")

            show_number = _fill(write, tickets, log, raw_all)
            log(f"  rows in after {time.monotonic() - started:.0f} s; the search index")
            for statement in fts["fill"] + fts["create triggers"]:
                conn.execute(statement)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        os.replace(partial, path)
    finally:
        for leftover in (partial, partial + "-wal", partial + "-shm"):
            Path(leftover).unlink(missing_ok=True)
    log(f"built {path.name} in {time.monotonic() - started:.0f} s")
    return show_number


def _sqlite_fts_statements() -> dict[str, list[str]]:
    """The migrations' SQL for the FTS5 index: its triggers dropped, the index filled from
    the messages (0014), the triggers made as 0020 made them last."""
    import importlib

    versions = "mailsupport.store.migrations.versions"
    search = importlib.import_module(f"{versions}.0014_search_stems")
    by_batch = importlib.import_module(f"{versions}.0020_search_index_by_batch")
    drop = [s for s in search.SQLITE_DROP if s.startswith("DROP TRIGGER")]
    create = by_batch.SQLITE_TRIGGERS
    fill = [s for s in search.SQLITE_UP if s.startswith("INSERT INTO messages_fts")]
    assert len(drop) == len(create) == 3 and len(fill) == 1, "migration 0014 or 0020 changed"
    return {"drop triggers": drop, "fill": fill, "create triggers": create}


# The GIN indexes of the search (migration 0014): made after the load, as CREATE INDEX over
# the whole table, which is many times faster than keeping them up to date row by row. The
# index is the same either way.
_PG_LATE_INDEXES = ("ix_messages_search", "ix_messages_search_stems")


def build_postgresql(server: str, tickets: int, log: Any = print) -> int:
    """(Re)create the database pg_database(tickets) on `server` (a SQLAlchemy URL without
    a database) and fill it; returns the number of the ticket with SHOW_MESSAGES messages.
    It is marked complete (pg_stamp, as the database's comment) only at the end."""
    import importlib

    import psycopg
    import sqlalchemy as sa

    from mailsupport.store.db import Store

    name = pg_database(tickets)
    started = time.monotonic()
    admin = _pg_dsn(server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    store = Store.open(url)
    dialect = store.engine.dialect
    store.engine.dispose()
    search = importlib.import_module("mailsupport.store.migrations.versions.0014_search_stems")
    late = [s for s in search.PG_UP if any(f"INDEX {i} " in s for i in _PG_LATE_INDEXES)]
    assert len(late) == len(_PG_LATE_INDEXES), "migration 0014 no longer makes these indexes"
    with psycopg.connect(_pg_dsn(server, name), autocommit=True) as conn:
        for index in _PG_LATE_INDEXES:
            conn.execute(f"DROP INDEX {index}")

        def write(rows: dict[str, list[dict[str, Any]]]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                for table, columns, values in _converted(rows, dialect):
                    names = ", ".join(f'"{c}"' for c in columns)
                    with cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                        for value in values:
                            copy.write_row(value)

        show_number = _fill(write, tickets, log)
        log(f"  rows in after {time.monotonic() - started:.0f} s; the search indexes")
        conn.execute("SET maintenance_work_mem = '1GB'")
        for statement in late:
            conn.execute(statement)
        for table in ("tickets", "raw_messages", "messages", "ticket_events", "outbox"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        # What autovacuum does to a table this size soon after: statistics for the planner
        # and the visibility map (index-only scans). A desk's database has both.
        log("  vacuum analyze")
        conn.execute("VACUUM ANALYZE")
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{pg_stamp(tickets)}'")
    log(f"built PostgreSQL {name} in {time.monotonic() - started:.0f} s")
    return show_number


def _pg_dsn(server: str, database: str) -> str:
    """A libpq connection string for `database` on `server` (a SQLAlchemy URL)."""
    import sqlalchemy as sa

    url = sa.make_url(server).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def pg_store_ready(server: str, tickets: int) -> bool:
    """Whether a complete store of `tickets` tickets, of this schema and generator, is there."""
    import psycopg

    with psycopg.connect(_pg_dsn(server, "postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (pg_database(tickets),),
        ).fetchone()
    return row is not None and row[0] == pg_stamp(tickets)


def _converted(
    rows: dict[str, list[dict[str, Any]]], dialect: Any
) -> Iterator[tuple[str, list[str], list[tuple[Any, ...]]]]:
    """(table, columns, values) of each table with rows, parents first: the columns the rows
    name and those with a default in the model; each value as the model column's bind
    processor gives it to the driver (times, JSON), as SQLAlchemy's INSERT would."""
    for name, table in _tables().items():
        batch = rows[name]
        if not batch:
            continue
        columns = list(batch[0])
        # What SQLAlchemy would add to an INSERT that leaves them out: the model's defaults.
        defaults = {
            c.name: c.default.arg if c.default.is_scalar else c.default.arg(None)
            for c in table.columns
            if c.name not in batch[0] and c.default is not None
        }
        if defaults:
            columns += list(defaults)
            batch = [row | defaults for row in batch]
        processors = [table.c[c].type._cached_bind_processor(dialect) for c in columns]
        pairs = list(zip(columns, processors, strict=True))
        if all(p is None for p in processors):
            values = [tuple(row[c] for c in columns) for row in batch]
        else:
            values = [
                tuple(row[c] if p is None or row[c] is None else p(row[c]) for c, p in pairs)
                for row in batch
            ]
        yield name, columns, values


def _tables() -> dict[str, Any]:
    from mailsupport.store.models import (
        Message,
        MessageRef,
        OutboxItem,
        Participant,
        RawMessage,
        Ticket,
        TicketEvent,
        TicketTag,
    )

    return {  # parents before children: foreign keys are enforced
        "tickets": Ticket.__table__,
        "raw_messages": RawMessage.__table__,
        "messages": Message.__table__,
        "message_refs": MessageRef.__table__,
        "participants": Participant.__table__,
        "ticket_events": TicketEvent.__table__,
        "ticket_tags": TicketTag.__table__,
        "outbox": OutboxItem.__table__,
    }


def show_ticket(tickets: int) -> int:
    """The ticket `show` is timed on: the middle one, given SHOW_MESSAGES messages."""
    return tickets // 2


def generate(tickets: int, raw_all: bool = False) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """The rows of the store, BATCH tickets at a time (a dict of table -> rows)."""
    rng = random.Random(SEED)
    target = show_ticket(tickets)
    stems = _Stems()
    message_pk = 0
    for first in range(1, tickets + 1, BATCH):
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _tables()}
        for number in range(first, min(first + BATCH, tickets + 1)):
            message_pk = _ticket(rng, number, number == target, message_pk, rows, stems, raw_all)
        yield rows


def check_stems(messages: list[dict[str, Any]]) -> None:
    """Raise AssertionError unless each message's stems are those the column defaults would
    give it (store/stems.py)."""
    from mailsupport.store.stems import stem_columns

    for row in messages:
        expected = stem_columns(row)
        got = {name: row[name] for name in expected}
        assert got == expected, f"message {row['message_id']}: stems {got} != {expected}"


def check_terms(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Raise AssertionError unless each ticket's topic terms are those intake would store
    (from its subject and first incoming message: the generator's first message)."""
    from mailsupport.topicterms import ticket_terms

    first = {m["ticket_id"]: m for m in reversed(rows["messages"]) if m["direction"] == "in"}
    for ticket in rows["tickets"]:
        message = first[ticket["id"]]
        expected = ticket_terms(ticket["subject"], message["text"], message["received_at"])
        assert ticket["topic_terms"] == expected, f"ticket {ticket['id']}: topic terms differ"


def _fill(write: Any, tickets: int, log: Any, raw_all: bool = False, report_every: int = 50) -> int:
    for i, rows in enumerate(generate(tickets, raw_all)):
        if i == 0:
            check_stems(rows["messages"])
            check_terms(rows)
        write(rows)
        if i % report_every == 0:
            log(f"  {min((i + 1) * BATCH, tickets)} of {tickets} tickets")
    return show_ticket(tickets)


class _Stems:
    """`stems_of`, once per distinct piece of text (bodies and replies repeat, with a few
    names), and of a text that ends with a quote, from the stems of its parts."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        from mailsupport.words import stems_of

        found = self._known.get(text)
        if found is None:
            found = stems_of(text)
            if len(self._known) < 100_000:
                self._known[text] = found
        return found

    @staticmethod
    def joined(*parts: str) -> str:
        """The stems of texts joined by characters that are no part of a word."""
        return " ".join(p for p in parts if p)


@functools.lru_cache(maxsize=4096)
def _text_terms(text: str) -> Terms:
    from mailsupport.topicterms import text_terms

    return text_terms(text)


def _topic_terms(subject: str, text: str, at: datetime) -> str:
    """`topicterms.ticket_terms`, the terms of each distinct text found once."""
    from mailsupport.topicterms import ticket_terms

    return ticket_terms(subject, text, at, _text_terms(text))


def _ticket(
    rng: random.Random,
    number: int,
    is_target: bool,
    message_pk: int,
    rows: dict[str, list[dict[str, Any]]],
    stems: _Stems,
    raw_all: bool = False,
) -> int:
    from mailsupport.words import stems_of

    russian = rng.random() < 0.4
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    address = f"{first.lower()}.{number}@customer{number % 97}.example.org"
    if not first.isascii():
        address = f"client{number}@mail{number % 89}.example.ru"
    subject = rng.choice(SUBJECTS_RU if russian else SUBJECTS_EN).format(n=rng.randint(1000, 99999))
    subject_stems = stems_of(subject)
    reply_subject_stems = stems.joined(stems("Re:"), subject_stems, str(number))
    created = END - SPAN * rng.random()
    count = SHOW_MESSAGES if is_target else rng.randint(3, 5)
    status = rng.choices(("new", "open", "pending", "closed"), (5, 15, 10, 70))[0]
    agent = rng.choice(AGENTS)
    assigned = status != "new" and rng.random() < 0.7
    when = created
    previous_text, previous_who, previous_stems = "", name, ""
    last_writer = first_text = ""
    for i in range(count):
        message_pk += 1
        ours = i % 2 == 1
        note = ours and rng.random() < 0.1
        mid = f"b{number}.{i}@{'example.com' if ours else 'customer.example.org'}"
        if note:
            direction, text, author = (
                "note",
                f"Called the customer, {rng.choice(AGENTS)} follows up.",
                agent,
            )
            sender_name, sender = agent, ""
            mid = f"note.{number}.{i}@mailsupport.invalid"
        elif ours:
            direction, author = "out", agent
            text = rng.choice(REPLIES_RU if russian else REPLIES_EN).format(name=first, agent=agent)
            sender_name, sender = "Example Support", "support@example.com"
        else:
            direction, author = "in", ""
            if i == 0:
                body = BODY_RU if russian else BODY_EN
                problems = PROBLEMS_RU if russian else PROBLEMS_EN
                text = first_text = body.format(problem=rng.choice(problems), name=first)
            else:
                text = rng.choice(FOLLOWUPS_RU if russian else FOLLOWUPS_EN)
            sender_name, sender = name, address
        text_stems = stems(text)
        if i and previous_text and direction != "note":
            head = _quote_head(previous_who, when, russian)
            text += "\n\n" + head + "\n" + _quoted(previous_text)
            text_stems = stems.joined(text_stems, stems_of(head), previous_stems)
        raw_id = None
        if is_target and direction == "in":
            data = _raw(sender_name, sender, subject, mid, when, text)
            rows["raw_messages"].append(
                {"id": message_pk, "sha256": f"{message_pk:064x}", "size": len(data),
                 "data": data, "origin": "bench", "stored_at": when}
            )  # fmt: skip
            raw_id = message_pk
        elif raw_all and direction != "note":
            rows["raw_messages"].append(
                {"id": message_pk, "sha256": f"{message_pk:064x}", "size": 10,
                 "data": b"(not kept)", "origin": "bench", "stored_at": when}
            )  # fmt: skip
            raw_id = message_pk
        to = {"name": name, "address": address} if ours else SUPPORT
        rows["messages"].append(
            {
                "id": message_pk, "ticket_id": number, "message_id": mid,
                "direction": direction, "from_address": sender, "from_name": sender_name,
                "to": [to],
                "cc": [], "subject": subject if i == 0 else f"Re: {subject} [#{number}]",
                "date": when, "received_at": when, "text": text, "raw_id": raw_id,
                "in_reply_to": f"b{number}.{i - 1}@customer.example.org" if i else "",
                "thread_reason": "new ticket" if i == 0 else "in-reply-to",
                "author": author,
                "ack_decision": "" if ours or i else f"acknowledged to {address}",
                "created_at": when,
                "subject_stems": subject_stems if i == 0 else reply_subject_stems,
                "text_stems": text_stems,
            }
        )  # fmt: skip
        rows["message_refs"].append({"message_id": mid, "ticket_id": number})
        if direction == "out":
            rows["outbox"].append(
                {"ticket_id": number, "message_id": mid, "kind": "reply",
                 "mail_from": "support@example.com", "recipients": [address],
                 "recipient_status": {address: "sent"}, "data": b"(not kept)", "status": "sent",
                 "attempts": 1, "next_attempt_at": when, "created_at": when, "queued_at": when,
                 "sent_at": when}
            )  # fmt: skip
        if direction != "note":
            previous_text, previous_who, previous_stems = text, sender_name, text_stems
            last_writer = "customer" if direction == "in" else "us"
        when += timedelta(minutes=rng.randint(5, 3 * 24 * 60))
    updated = when
    rows["tickets"].append(
        {
            "id": number, "number": number, "subject": subject, "status": status,
            "priority": rng.choices(("low", "normal", "high", "urgent"), (10, 70, 15, 5))[0],
            "requester": address, "requester_name": name, "created_at": created,
            "updated_at": updated, "closed_at": updated if status == "closed" else None,
            "assignee": agent if assigned else None, "queue": rng.choice(QUEUES),
            "last_writer": last_writer, "topic_terms": _topic_terms(subject, first_text, created),
        }
    )  # fmt: skip
    rows["participants"].append(
        {"ticket_id": number, "address": address, "name": name, "role": "requester",
         "first_seen": created}
    )  # fmt: skip
    rows["ticket_events"].append(
        {"ticket_id": number, "at": created, "actor": "system", "action": "created",
         "detail": "new ticket"}
    )  # fmt: skip
    if assigned:
        rows["ticket_events"].append(
            {"ticket_id": number, "at": created + timedelta(minutes=30), "actor": agent,
             "action": "assigned", "detail": f"nobody -> {agent}"}
        )  # fmt: skip
    for tag in rng.sample(TAGS, rng.choice((0, 0, 0, 1, 1, 2))):
        rows["ticket_tags"].append({"ticket_id": number, "tag": tag})
    return message_pk


def _quote_head(who: str, when: datetime, russian: bool) -> str:
    if russian:
        return f"{when:%d.%m.%Y %H:%M}, {who} пишет:"
    return f"On {when:%a, %d %b %Y at %H:%M}, {who} wrote:"


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def _raw(name: str, address: str, subject: str, mid: str, when: datetime, text: str) -> bytes:
    from email.message import EmailMessage
    from email.utils import format_datetime

    msg = EmailMessage()
    msg["From"] = f"{name} <{address}>"
    msg["To"] = "Example Support <support@example.com>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{mid}>"
    msg.set_content(text)
    return msg.as_bytes()


def cached_store(
    tickets: int, cache_dir: Path, fresh: bool = False, log: Any = print, raw_all: bool = False
) -> tuple[Path, int]:
    """The path of a store of `tickets` tickets (built when missing) and the ticket to show."""
    from mailsupport.store.db import SCHEMA_REVISION

    path = store_path(cache_dir, tickets, SCHEMA_REVISION, raw_all)
    if fresh or not path.exists():
        log(f"building a store of {tickets} tickets in {cache_dir} (once; it is cached)")
        build(path, tickets, log, raw_all)
    return path, show_ticket(tickets)


def cached_postgresql(
    tickets: int, server: str, fresh: bool = False, log: Any = print
) -> tuple[str, int]:
    """The SQLAlchemy URL of a PostgreSQL store of `tickets` tickets on `server` (built when
    missing, incomplete or of another schema) and the ticket to show."""
    import sqlalchemy as sa

    if fresh or not pg_store_ready(server, tickets):
        log(f"building PostgreSQL {pg_database(tickets)} (once; it is kept)")
        build_postgresql(server, tickets, log)
    url = sa.make_url(server).set(database=pg_database(tickets))
    return url.render_as_string(hide_password=False), show_ticket(tickets)


def iter_sizes(path: Path) -> Iterator[tuple[str, int]]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        for table in ("tickets", "messages", "ticket_tags"):
            yield table, conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
