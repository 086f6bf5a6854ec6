"""`mailsupport search`: FTS5 on SQLite, tsvector on PostgreSQL, the same answers on both."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailsupport import agent
from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.search import Hit, parse_query, search
from mailsupport.store.db import Store, alembic_config
from mailsupport.store.models import Message, Ticket
from tests.support.mailfactory import BASE_TIME, make_message
from tests.support.paths import FIXTURES

MAIL = FIXTURES / "mail"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
FILLER = " ".join(f"word{i}" for i in range(300))  # a long body that says nothing

Ingest = Callable[..., int]


@pytest.fixture
def ingest(settings: Settings, store: Store) -> Ingest:
    """Stores one message through the pipeline, as mail arrives; returns its ticket number."""
    pipeline = Pipeline(settings, store)

    def ingest_one(raw: bytes) -> int:
        outcome = pipeline.ingest(Incoming(raw, "test", NOW), NOW)
        assert outcome.ticket_number is not None, outcome
        return outcome.ticket_number

    return ingest_one


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def find(store: Store, text: str, **options: object) -> list[Hit]:
    with store.read() as session:
        return search(session, text, **options)  # type: ignore[arg-type]


def numbers(store: Store, text: str, **options: object) -> list[int]:
    return [hit.number for hit in find(store, text, **options)]


def ticket_id(store: Store, number: int) -> int:
    with store.read() as session:
        found = session.exec(select(Ticket.id).where(Ticket.number == number)).one()
    assert found is not None
    return found


# -- finding ------------------------------------------------------------------------------


def test_a_russian_word_is_found_in_koi8r_and_cp1251_mail(store: Store, ingest: Ingest) -> None:
    invoice = ingest(mail("koi8r.eml"))  # "Счёт на оплату тарифа", KOI8-R
    login = ingest(mail("cp1251_qp.eml"))  # "Ошибка входа в личный кабинет", windows-1251 QP
    ingest(make_message("en@customer.example.org", subject="Printer", body="It is offline."))

    assert numbers(store, "тарифа") == [invoice]
    assert numbers(store, "ТАРИФА") == [invoice]  # case folds in Cyrillic too
    assert numbers(store, "пароль") == [login]
    assert numbers(store, "Пароль ДОГОВОР") == [login]
    # ё and е are one letter, whichever way round the customer and the agent wrote it.
    assert numbers(store, "счёт") == numbers(store, "счет") == numbers(store, "СЧЕТ") == [invoice]
    cyrillic_e = make_message(
        "ru@customer.example.org", subject="Вопрос", body="Нужен новый счет, ёлки.",
        charset="koi8-r",
    )  # fmt: skip
    plain = ingest(cyrillic_e)
    assert set(numbers(store, "счёт")) == {invoice, plain}
    assert numbers(store, "елки") == [plain]


def test_an_english_word_is_found(store: Store, ingest: Ingest) -> None:
    number = ingest(make_message(body="Hello, I cannot log in since yesterday."))
    ingest(make_message("other@customer.example.org", subject="VPN", body="The VPN drops."))
    [hit] = find(store, "Yesterday")
    assert hit.number == number
    assert hit.subject == "Cannot log in"
    assert hit.status == "new"
    assert hit.message_id == "m1@customer.example.org"
    assert hit.direction == "in"
    assert hit.date == BASE_TIME
    assert "[yesterday]" in hit.marked_snippet()
    assert numbers(store, "nowhere") == []


def test_a_subject_match_ranks_above_one_word_in_a_long_body(store: Store, ingest: Ingest) -> None:
    # The weaker match comes first, so the order is not the order of arrival.
    in_body = ingest(
        make_message(
            "body@customer.example.org", subject="A question",
            body=f"{FILLER} By the way, where is my invoice? {FILLER}",
        )
    )  # fmt: skip
    in_subject = ingest(
        make_message("subject@customer.example.org", subject="Invoice missing", body="Hi.")
    )
    hits = find(store, "invoice")
    assert [h.number for h in hits] == [in_subject, in_body]
    assert hits[0].rank > hits[1].rank


@pytest.mark.slow
def test_the_snippet_shows_the_match_in_its_context(store: Store, ingest: Ingest) -> None:
    body = f"{FILLER} Мой логин не подходит к личному кабинету. {FILLER}"
    ingest(make_message(subject="Вход", body=body))
    [hit] = find(store, "ЛОГИН")
    snippet = hit.marked_snippet()
    assert "Мой [логин] не подходит" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")  # cut from a long text
    assert len(snippet) < 200
    assert "\n" not in snippet
    assert "<b>" not in hit.marked_snippet("<b>", "</b>").replace("<b>логин</b>", "")


def test_the_snippet_keeps_the_letter_e_with_dots_as_written(store: Store, ingest: Ingest) -> None:
    ingest(make_message(subject="Оплата", body="Пришёл счёт на 500 рублей, а не на 300."))
    [hit] = find(store, "счет")
    assert hit.marked_snippet() == "Пришёл [счёт] на 500 рублей, а не на 300."


def test_a_ticket_is_listed_once_with_its_best_message(store: Store, ingest: Ingest) -> None:
    first = make_message(
        "q1@customer.example.org", subject="Refund", body=f"Refund please. {FILLER}"
    )
    reply = make_message(
        "q2@customer.example.org", subject="Re: Refund", in_reply_to="<q1@customer.example.org>",
        body="Still waiting for the refund, refund, refund!",
        date=BASE_TIME + timedelta(hours=1),
    )  # fmt: skip
    thanks = make_message(
        "q3@customer.example.org", subject="Re: Refund", in_reply_to="<q2@customer.example.org>",
        body="Thanks!", date=BASE_TIME + timedelta(hours=2),
    )  # fmt: skip
    number = ingest(first)
    assert ingest(reply) == number
    assert ingest(thanks) == number
    [hit] = find(store, "refund")
    # Every reply repeats the subject; the message shown is the one whose text matches best.
    assert hit.message_id == "q2@customer.example.org"
    assert hit.marked_snippet().startswith("Still waiting for the [refund]")


# -- what users type ----------------------------------------------------------------------


HOSTILE = [
    '"', "*", "AND OR NOT", "(", "-x", ":", "subject:login", "NEAR(a b)", "a AND", "OR",
    "x OR", "-", "--", "'", "\\", "^log", '""""', 'log"in', "()", "{a b}", "%_", "+log",
    "'; DROP TABLE messages; --", "log\x00in", "*log*", "a:*", "!log", "<->", "login & !x",
    "\x02\x03", "ё" * 3000, "log " * 200,
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("text", HOSTILE)
def test_odd_input_never_errors(store: Store, ingest: Ingest, text: str) -> None:
    ingest(make_message(body='I cannot log in: "AND" (OR) NOT x-ray * subject: login^2'))
    hits = find(store, text)
    assert all(isinstance(hit, Hit) for hit in hits)


def test_operators_typed_by_the_user_are_only_words(store: Store, ingest: Ingest) -> None:
    number = ingest(make_message(body="Terms AND conditions apply (NOT ours): subject: terms."))
    ingest(make_message("m2@customer.example.org", subject="Other", body="conditions only"))
    assert numbers(store, "AND conditions") == [number]
    assert numbers(store, "(NOT") == [number]
    # Not a column filter (the subject is "Cannot log in"): the words "subject terms".
    assert numbers(store, "subject:terms") == [number]
    # Nothing searchable at all: no query, no results, no error.
    for text in ['"', "*", "(", ":", "-x", "-", "OR", ""]:
        assert parse_query(text).empty
        assert find(store, text) == []


def test_phrases_prefixes_exclusions_and_or(store: Store, ingest: Ingest) -> None:
    wrong = ingest(make_message("a@c.example.org", subject="Вход", body="Пишет неверный пароль."))
    turned = ingest(make_message("b@c.example.org", subject="Вход", body="Пароль неверный вроде."))
    forms = ingest(make_message("c@c.example.org", subject="Сброс", body="Нет пароля от почты."))
    english = ingest(make_message("d@c.example.org", subject="Reset", body="Password reset."))

    assert sorted(numbers(store, "неверный пароль")) == [wrong, turned]
    assert numbers(store, '"неверный пароль"') == [wrong]
    assert numbers(store, '"неверный пар"*') == [wrong]  # the phrase's last word as a prefix
    # A bare word finds every form of it; quoted, only the form written.
    assert sorted(numbers(store, "пароля")) == [wrong, turned, forms]
    assert numbers(store, '"пароля"') == [forms]
    assert sorted(numbers(store, "парол*")) == [wrong, turned, forms]
    assert numbers(store, "па*") == []  # too short for a prefix: the word "па"
    assert sorted(numbers(store, "парол* -неверный")) == [forms]
    assert sorted(numbers(store, "пароль -неверного")) == [forms]  # any form is left out
    assert sorted(numbers(store, 'парол* -"неверный пароль"')) == [turned, forms]
    assert sorted(numbers(store, "почты OR password")) == [forms, english]
    assert sorted(numbers(store, "почты OR password -reset")) == [forms]
    assert numbers(store, "почты or password") == []  # lower-case "or" is a word


@pytest.mark.slow
def test_internal_notes_are_searched(store: Store, ingest: Ingest) -> None:
    number = ingest(make_message(body="Hello"))
    with store.write() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        agent.note(session, ticket, "Called the customer: wants a discount.", agent="olga", now=NOW)
    [hit] = find(store, "discount")
    assert (hit.number, hit.direction) == (number, "note")


# -- tickets ------------------------------------------------------------------------------


def test_merged_tickets_are_found_as_the_ticket_they_live_on_in(
    store: Store, ingest: Ingest
) -> None:
    survivor = ingest(make_message("s@customer.example.org", subject="Broken", body="Kaputt."))
    merged = ingest(
        make_message("x@customer.example.org", subject="Also broken", body="Kaputt! Zebra.")
    )
    # The merge recorded on the ticket, its message still filed under it (as merges
    # before messages were moved left it): the search resolves it all the same.
    with store.write() as session:
        session.execute(
            sa.update(Ticket)
            .where(Ticket.number == merged)
            .values(merged_into_id=ticket_id(store, survivor), status="closed")
        )
        session.execute(sa.update(Ticket).where(Ticket.number == survivor).values(status="pending"))
    [hit] = find(store, "zebra")
    assert (hit.number, hit.status, hit.subject) == (survivor, "pending", "Broken")
    assert numbers(store, "kaputt") == [survivor]  # both messages match: listed once
    assert numbers(store, "zebra", status="closed") == []


@pytest.mark.slow
def test_a_merge_by_threading_finds_the_survivor(store: Store, ingest: Ingest) -> None:
    first = ingest(make_message("a@x.example.org", subject="VPN drops", body="Since Monday."))
    ingest(
        make_message(
            "c@x.example.org", subject="Re: VPN drops", in_reply_to="<b@x.example.org>",
            body="Any news about the tunnel?", date=BASE_TIME + timedelta(hours=2),
        )
    )  # fmt: skip
    ingest(
        make_message(
            "b@x.example.org", subject="Re: VPN drops", in_reply_to="<a@x.example.org>",
            body="Still drops.", date=BASE_TIME + timedelta(hours=1),
        )
    )  # fmt: skip
    assert numbers(store, "tunnel") == [first]
    assert numbers(store, "vpn") == [first]


def jammed_printers(store: Store, ingest: Ingest, count: int) -> list[int]:
    """`count` tickets saying "Jammed.", the first two of them closed."""
    made = [
        ingest(make_message(f"n{i}@customer.example.org", subject=f"Printer {i}", body="Jammed."))
        for i in range(count)
    ]
    with store.write() as session:
        session.execute(
            sa.update(Ticket).where(Ticket.number.in_(made[:2])).values(status="closed")  # type: ignore[union-attr]
        )
    return made


def test_status_filter_and_limit(store: Store, ingest: Ingest) -> None:
    made = jammed_printers(store, ingest, 4)  # the first two closed
    assert sorted(numbers(store, "jammed", status="closed")) == made[:2]
    assert sorted(numbers(store, "jammed", status="new")) == made[2:]
    assert numbers(store, "jammed", status="pending") == []
    assert len(numbers(store, "jammed", limit=3)) == 3
    assert len(numbers(store, "jammed")) == 4


def test_the_best_tickets_are_read_first_then_all_when_filters_leave_too_few(
    store: Store, ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailsupport.search as search_module

    made = jammed_printers(store, ingest, 6)  # the first two closed
    everything = numbers(store, "jammed")
    # Equal ranks: the newest ticket first. Only the first candidate read at first: the
    # order is the same, and a status filter that leaves it out reads them all.
    assert everything == sorted(made, reverse=True)
    monkeypatch.setattr(search_module, "FIRST_CANDIDATES", 1)
    monkeypatch.setattr(search_module, "CANDIDATES_PER_HIT", 1)
    assert numbers(store, "jammed", limit=1) == everything[:1]
    assert numbers(store, "jammed", limit=2) == everything[:2]
    assert sorted(numbers(store, "jammed", status="closed")) == made[:2]
    assert numbers(store, "jammed", limit=3, status="closed") == everything[-2:]


def test_the_index_follows_updates_and_deletes(store: Store, ingest: Ingest) -> None:
    number = ingest(make_message(subject="Modem", body="The modem blinks red."))
    with store.write() as session:
        message = session.exec(select(Message)).one()
        message.text = "The router blinks green."
        message.ack_decision = "changed too"  # a column outside the index
        session.add(message)
    assert numbers(store, "modem") == [number]  # the subject is unchanged
    assert numbers(store, "red") == []
    assert numbers(store, "green router") == [number]
    assert numbers(store, "routers") == [number]  # the stems follow the text
    with store.write() as session:
        message = session.exec(select(Message)).one()
        message.subject = "Ёлки"
        session.add(message)
    assert numbers(store, "modem") == []
    assert numbers(store, '"елки"') == numbers(store, "елка") == [number]
    with store.write() as session:
        session.execute(sa.delete(Message))
    assert numbers(store, "router") == []
    assert numbers(store, "елка") == numbers(store, '"елки"') == []


# -- the schema ---------------------------------------------------------------------------


def test_an_upgrade_indexes_the_messages_already_stored(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store.open(db_url, check_schema=False)
    store.upgrade("0005")
    at = datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    with store.engine.begin() as conn:
        ticket = conn.execute(
            sa.text(
                "INSERT INTO tickets (number, subject, status, priority, requester,"
                " requester_name, created_at, updated_at, queue)"
                " VALUES (7, 'Старый счёт', 'open', 'normal', '', '', :t, :t, '') RETURNING id"
            ),
            {"t": at},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO messages (ticket_id, message_id, direction, in_reply_to, refs,"
                ' from_address, from_name, "to", cc, subject, received_at, text,'
                " thread_reason, defects, author, ack_decision, created_at)"
                " VALUES (:ticket, 'old@example.org', 'in', '', '', 'a@example.org', '',"
                " '[]', '[]', 'Старый счёт', :t, 'Оплатили ещё в декабре.', 'new', '', '',"
                " '', :t)"
            ),
            {"ticket": ticket, "t": at},
        )
    store.upgrade()
    store.ensure_schema()
    assert numbers(store, "счет") == [7]
    assert numbers(store, "ЕЩЕ декабре") == [7]
    store.engine.dispose()


@pytest.mark.slow
def test_the_search_migration_goes_down_and_up_again(store: Store, ingest: Ingest) -> None:
    from alembic import command

    number = ingest(make_message(body="Toner is empty."))
    with store.engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    with store.engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
    assert not [name for name in names if name.startswith("messages_fts")]
    store.upgrade()
    assert numbers(store, "toner") == [number]


def test_postgresql_uses_the_index(store: Store, ingest: Ingest) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    from mailsupport.search import PG_INDEX, PG_STEMS_INDEX, pg_best_per_ticket_sql

    ingest(make_message(body="Toner is empty."))
    sql, params = pg_best_per_ticket_sql(parse_query('toner* -x OR "is empty"'))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = conn.execute(sa.text("EXPLAIN " + sql), {**params, "candidates": 20}).all()
    assert PG_INDEX in "\n".join(row[0] for row in plan)
    # Bare words are looked up by their stems, in the stems' index.
    sql, params = pg_best_per_ticket_sql(parse_query("toners -x OR printers"))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = conn.execute(sa.text("EXPLAIN " + sql), {**params, "candidates": 20}).all()
    assert PG_STEMS_INDEX in "\n".join(row[0] for row in plan)


# -- the command --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_lists_tickets_with_snippets(run, ingest: Ingest) -> None:  # type: ignore[no-untyped-def]
    invoice = ingest(mail("koi8r.eml"))
    ingest(mail("cp1251_qp.eml"))
    result = run("search", "счет")
    assert result.exit_code == 0, result.output
    header, snippet = result.stdout.splitlines()
    assert header.split(maxsplit=2) == [f"#{invoice}", "new", "Счёт на оплату тарифа"]
    assert snippet.startswith("      ")
    assert "Прошу выставить [счёт] на оплату" in snippet

    words = run("search", "личный", "кабинет", "-неверный", "--limit", "5")
    assert words.exit_code == 1, words.output  # both logins say "неверный"


def test_the_command_as_json(run, ingest: Ingest) -> None:  # type: ignore[no-untyped-def]
    number = ingest(make_message(body="Hello, I cannot log in since yesterday."))
    result = run("search", "--json", "yesterday")
    assert result.exit_code == 0, result.output
    [hit] = json.loads(result.stdout)
    assert list(hit) == [
        "number", "subject", "status", "message_id", "direction", "date", "rank", "snippet",
    ]  # fmt: skip
    assert hit["number"] == number
    assert hit["subject"] == "Cannot log in"
    assert hit["status"] == "new"
    assert hit["message_id"] == "m1@customer.example.org"
    assert hit["direction"] == "in"
    assert hit["date"] == "2026-03-02T09:00:00+00:00"
    assert isinstance(hit["rank"], float) and hit["rank"] > 0
    assert hit["snippet"] == "Hello, I cannot log in since [yesterday]."


@pytest.mark.slow
def test_the_command_exit_codes(run, ingest: Ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(make_message(body="Paper jam."))
    assert run("search", "jam").exit_code == 0
    assert run("search", "jam", "-paper").exit_code == 1  # -paper is a word of the query

    none = run("search", "toner")
    assert none.exit_code == 1
    assert none.stdout == ""
    assert none.stderr == "mailsupport: no ticket matches 'toner'\n"
    none_json = run("search", "--json", "toner")
    assert (none_json.exit_code, json.loads(none_json.stdout)) == (1, [])
    closed = run("search", "--status", "closed", "jam")
    assert closed.stderr == "mailsupport: no ticket with status closed matches 'jam'\n"

    for args in [(), ("",), ("  ",), ('"',), ("*", "(")]:
        empty = run("search", *args)
        assert empty.exit_code == 2, args
        assert empty.stderr.startswith("mailsupport: nothing to search for")
        assert len(empty.stderr.splitlines()) == 1
    assert run("search", "--status", "lost", "jam").exit_code == 2
    assert run("search", "--limit", "0", "jam").exit_code == 2


def test_a_word_matching_more_than_newest_matches_ranks_the_newest(
    store: Store, ingest: Ingest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailsupport.search as search_module

    made = jammed_printers(store, ingest, 4)
    newer = ingest(make_message("x@customer.example.org", subject="Scanner", body="Paper stuck."))
    monkeypatch.setattr(search_module, "NEWEST_MATCHES", 2)
    assert numbers(store, "jammed") == [made[3], made[2]]  # of the four, the newest two
    assert numbers(store, "jammed", status="closed") == []  # the closed ones are older
    assert numbers(store, "paper") == [newer]
    assert sorted(numbers(store, "jammed OR paper")) == sorted([newer, made[3]])
    assert numbers(store, "jammed printer 1") == [made[1]]  # a narrower query finds older
    # A phrase: the newest two messages that have it, not of those that have its words.
    phrase = [
        ingest(make_message(f"p{i}@customer.example.org", subject=f"Tray {i}", body="Paper jam."))
        for i in range(3)
    ]
    ingest(make_message("q@customer.example.org", subject="Tray 9", body="Jam? No paper."))
    assert numbers(store, '"paper jam"') == [phrase[2], phrase[1]]
