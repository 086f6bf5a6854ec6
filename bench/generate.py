"""Builds a SQLite store of many tickets for the benchmark, quickly, and caches it.

The schema comes from the real migrations (`Store.open`), the rows from bulk inserts of
SQLAlchemy Core through the model tables, so the store is what mailsupport itself would
have written: aware times stored the same way, the search index filled by its triggers.
Subjects and bodies are English and Russian; replies quote what they answer, as mail
clients do ("On ... wrote:" or "... пишет:" and "> " lines).

Raw message bytes are kept only for the ticket `show` is timed on: they are never read by
`list` or `show` (only by `show --raw`) and would make the file several times larger.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Bump when the generated data changes, so a cached store is built again.
GENERATOR_VERSION = 2  # 2: tickets say who wrote last
SEED = 20260302
BATCH = 2000  # tickets per transaction
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


def build(path: Path, tickets: int, log: Any = print, raw_all: bool = False) -> int:
    """Write a store of `tickets` tickets to `path` (atomically); returns the number of the
    ticket with SHOW_MESSAGES messages. `raw_all`: a raw_messages row for every message (a
    short placeholder for the bytes), so that the indexes intake searches on every message
    (sha256, Message-ID, references) are as large as a real store's."""
    from mailsupport.store.db import Store

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    os.close(fd)
    os.unlink(partial)  # an empty file would not count as a brand-new database
    started = time.monotonic()
    try:
        store = Store.open(f"sqlite:///{partial}")
        try:
            with store.engine.connect() as conn:
                # Bulk loading a file nobody uses yet: durability buys nothing here. Straight
                # on the driver's connection, outside the transaction the engine begins. No
                # ANALYZE: a desk's own store never gets one, so the plans timed are its plans.
                driver = conn.connection.dbapi_connection
                driver.execute("PRAGMA synchronous=OFF")
                show_number = _fill(conn, tickets, log, raw_all)
                driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            store.engine.dispose()
        os.replace(partial, path)
    finally:
        for leftover in (partial, partial + "-wal", partial + "-shm"):
            Path(leftover).unlink(missing_ok=True)
    log(f"built {path.name} in {time.monotonic() - started:.0f} s")
    return show_number


def show_ticket(tickets: int) -> int:
    """The ticket `show` is timed on: the middle one, given SHOW_MESSAGES messages."""
    return tickets // 2


def _fill(conn: Any, tickets: int, log: Any, raw_all: bool = False) -> int:
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

    rng = random.Random(SEED)
    target = show_ticket(tickets)
    tables = {  # parents before children: foreign keys are enforced
        "tickets": Ticket.__table__,
        "raw_messages": RawMessage.__table__,
        "messages": Message.__table__,
        "message_refs": MessageRef.__table__,
        "participants": Participant.__table__,
        "ticket_events": TicketEvent.__table__,
        "ticket_tags": TicketTag.__table__,
        "outbox": OutboxItem.__table__,
    }
    message_pk = 0
    for first in range(1, tickets + 1, BATCH):
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        for number in range(first, min(first + BATCH, tickets + 1)):
            message_pk = _ticket(rng, number, number == target, message_pk, rows, raw_all)
        with conn.begin():
            for name, table in tables.items():
                if rows[name]:
                    conn.execute(table.insert(), rows[name])
        if (first // BATCH) % 10 == 0:
            log(f"  {min(first + BATCH - 1, tickets)} of {tickets} tickets")
    return target


def _ticket(
    rng: random.Random,
    number: int,
    is_target: bool,
    message_pk: int,
    rows: dict[str, list[dict[str, Any]]],
    raw_all: bool = False,
) -> int:
    russian = rng.random() < 0.4
    first, last = rng.choice(FIRST), rng.choice(LAST)
    name = f"{first} {last}"
    address = f"{first.lower()}.{number}@customer{number % 97}.example.org"
    if not first.isascii():
        address = f"client{number}@mail{number % 89}.example.ru"
    subject = rng.choice(SUBJECTS_RU if russian else SUBJECTS_EN).format(n=rng.randint(1000, 99999))
    created = END - SPAN * rng.random()
    count = SHOW_MESSAGES if is_target else rng.randint(3, 5)
    status = rng.choices(("new", "open", "pending", "closed"), (5, 15, 10, 70))[0]
    agent = rng.choice(AGENTS)
    assigned = status != "new" and rng.random() < 0.7
    when = created
    previous_text, previous_who = "", name
    last_writer = ""
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
                text = body.format(problem=rng.choice(problems), name=first)
            else:
                text = rng.choice(FOLLOWUPS_RU if russian else FOLLOWUPS_EN)
            sender_name, sender = name, address
        if i and previous_text and direction != "note":
            text += "\n\n" + _quote(previous_text, previous_who, when, russian)
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
            previous_text, previous_who = text, sender_name
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
            "last_writer": last_writer,
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


def _quote(text: str, who: str, when: datetime, russian: bool) -> str:
    if russian:
        head = f"{when:%d.%m.%Y %H:%M}, {who} пишет:"
    else:
        head = f"On {when:%a, %d %b %Y at %H:%M}, {who} wrote:"
    return head + "\n" + "\n".join("> " + line if line else ">" for line in text.splitlines())


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


def iter_sizes(path: Path) -> Iterator[tuple[str, int]]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        for table in ("tickets", "messages", "ticket_tags"):
            yield table, conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
