"""Search by word forms (Snowball stems), by address, and without our automatic mail: the
same tickets on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailsupport import agent
from mailsupport.config import Settings, load_settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.search import Hit, parse_query, search
from mailsupport.snippets import Phrase, make_snippet
from mailsupport.store.db import Store, alembic_config
from mailsupport.store.models import Message, Ticket
from mailsupport.ticketmail import Outgoing
from mailsupport.words import stems_of
from tests.support.mailfactory import make_message
from tests.support.oldstores import insert_messages
from tests.support.paths import ROOT

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def desk(settings: Settings) -> Settings:
    """The test settings with acknowledgements on (queued to a port nobody listens on)
    and the repository's knowledge base, whose VPN article speaks of a phone's hotspot."""
    return load_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        support_address=settings.support_address,
        support_name=settings.support_name,
        smtp_host="127.0.0.1",
        smtp_port=9,
        kb_dir=str(ROOT / "kb"),
    )


class Desk:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.pipeline = Pipeline(settings, store)
        self.count = 0

    def mail(self, body: str, subject: str = "Вопрос", sender: str = "", **kw: object) -> int:
        self.count += 1
        raw = make_message(
            f"m{self.count}@customer.example.org",
            subject=subject,
            body=body,
            sender=sender or f"Customer {self.count} <c{self.count}@customer.example.org>",
            **kw,  # type: ignore[arg-type]
        )
        outcome = self.pipeline.ingest(Incoming(raw, "test", NOW), NOW)
        assert outcome.ticket_number is not None, outcome
        return outcome.ticket_number

    def find(self, text: str) -> list[int]:
        return numbers(self.store, text)

    def hits(self, text: str) -> list[Hit]:
        return hits(self.store, text)


def hits(store: Store, text: str) -> list[Hit]:
    with store.read() as session:
        return search(session, text)


def numbers(store: Store, text: str) -> list[int]:
    return [hit.number for hit in hits(store, text)]


@pytest.fixture
def desk_store(desk: Settings, store: Store) -> Desk:
    return Desk(desk, store)


# -- word forms ---------------------------------------------------------------------------


def test_russian_and_english_words_are_found_in_any_form(desk_store: Desk) -> None:
    printer = desk_store.mail("Принтер в бухгалтерии не печатает.", subject="Не печатает")
    pages = desk_store.mail("Пропадают страницы при печати отчёта.", subject="Отчёт")
    english = desk_store.mail("The printer on floor 3 jams.", subject="Jam")
    desk_store.mail("Все сломалось, ничего не работает.", subject="Сломалось")

    assert desk_store.find("принтеры") == [printer]
    assert desk_store.find("принтером") == [printer]
    assert desk_store.find("страница") == [pages]
    assert desk_store.find("отчеты") == [pages]  # and ё in the text, е in the query
    assert desk_store.find("printers") == [english]
    assert desk_store.find("jammed") == [english]
    assert desk_store.find("Jamming Printers") == [english]
    assert sorted(desk_store.find("принтеры OR printers")) == [printer, english]
    assert desk_store.find("принтеры -печатал") == []  # every form is excluded too


def test_a_quoted_phrase_stays_exact(desk_store: Desk) -> None:
    wrong = desk_store.mail("Пишет: неверный пароль.", subject="Вход")
    forms = desk_store.mail("Ввожу неверные пароли.", subject="Вход")

    assert sorted(desk_store.find("неверный пароль")) == [wrong, forms]
    assert desk_store.find('"неверный пароль"') == [wrong]
    assert desk_store.find('"неверные пароли"') == [forms]
    assert desk_store.find('"пароли"') == [forms]
    assert desk_store.find('"паролей"') == []  # a form nobody wrote
    assert sorted(desk_store.find("паролей")) == [wrong, forms]


def test_the_snippet_marks_the_forms_found(desk_store: Desk) -> None:
    desk_store.mail("Наши принтеры опять не печатают страницы.", subject="Печать")
    [hit] = desk_store.hits("принтер страница")
    assert hit.marked_snippet() == "Наши [принтеры] опять не печатают [страницы]."
    [hit] = desk_store.hits('"опять не" страница')
    assert hit.marked_snippet() == "Наши принтеры [опять] [не] печатают [страницы]."


def test_agents_replies_and_notes_are_found_by_their_forms(desk_store: Desk) -> None:
    number = desk_store.mail("Hello, my laptop is slow.", subject="Slow laptop")
    with desk_store.store.write() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        outgoing = Outgoing(desk_store.settings)
        agent.reply(session, outgoing, ticket, "Reinstalled the drivers.", agent="olga", now=NOW)
        agent.note(session, ticket, "Ноутбуки этой серии греются.", agent="olga", now=NOW)
    [reply] = desk_store.hits("reinstalling driver")
    assert (reply.number, reply.direction) == (number, "out")
    assert "[Reinstalled] the [drivers]" in reply.marked_snippet()
    [note] = desk_store.hits("ноутбук")
    assert (note.number, note.direction) == (number, "note")


# -- our automatic mail ---------------------------------------------------------------------


def test_an_acknowledgement_and_the_article_it_quotes_are_not_the_tickets_words(
    desk_store: Desk,
) -> None:
    vpn = desk_store.mail(
        "My VPN connection failed again, the authenticator code is refused.",
        subject="VPN connection failed",
        sender="Ivan <ivan@customer.example.org>",
    )
    with desk_store.store.read() as session:
        ours = session.exec(select(Message).where(Message.direction == "out")).all()
    [ack] = ours  # the acknowledgement, with the VPN article in it
    assert "hotspot" in ack.text
    assert (ack.subject_stems, ack.text_stems) == ("", "")

    for query in ("hotspot", '"hotspot"', "hotsp*", "hotspots", "downloads page"):
        assert desk_store.find(query) == [], query
    # The customer's own words find the ticket, and show the customer's message.
    [hit] = desk_store.hits("authenticator")
    assert (hit.number, hit.direction) == (vpn, "in")
    # Nor is the acknowledgement shown for an address.
    [hit] = desk_store.hits("ivan@customer.example.org")
    assert (hit.number, hit.direction) == (vpn, "in")


# -- addresses ------------------------------------------------------------------------------


def test_a_customers_tickets_are_found_by_address(desk_store: Desk) -> None:
    ivan = "Ivan <Ivan.Petrov@customer.example.org>"
    first = desk_store.mail("Принтер не печатает.", subject="Принтер", sender=ivan)
    second = desk_store.mail("The scanner is offline.", subject="Scanner", sender=ivan)
    copied = desk_store.mail(
        "Сканер тоже.", subject="Сканер", cc="ivan.petrov@customer.example.org"
    )
    other = desk_store.mail("Printer jams.", subject="Printer")
    # Mentioned in a text only: not a participant.
    mention = desk_store.mail("Ask ivan.petrov@customer.example.org, he knows.", subject="Q")

    address = "ivan.petrov@customer.example.org"
    assert desk_store.find(address) == [copied, second, first]  # newest first
    assert desk_store.find(address.upper()) == [copied, second, first]
    assert desk_store.find(f"<{address}>,") == [copied, second, first]  # as pasted
    assert desk_store.find(f"{address} принтеры") == [first]
    assert sorted(desk_store.find(f"printer -{address}")) == [other]
    assert sorted(desk_store.find(f"{address} scanner OR printers")) == [second, other]
    assert desk_store.find(f"{address} -scanner") == [copied, first]
    assert desk_store.find(f'"{address}"') == [mention]  # quoted: the text
    assert desk_store.find("nobody@customer.example.org") == []
    # An address alone shows the ticket's latest message, with its first words.
    [hit, *_] = desk_store.hits(address)
    assert hit.marked_snippet() == "Сканер тоже."


def test_the_command_finds_by_address(run, desk_store: Desk) -> None:  # type: ignore[no-untyped-def]
    number = desk_store.mail("Принтеры не печатают.", sender="ivan@customer.example.org")
    result = run("search", "--json", "ivan@customer.example.org")
    assert result.exit_code == 0, result.output
    [hit] = json.loads(result.stdout)
    assert (hit["number"], hit["snippet"]) == (number, "Принтеры не печатают.")
    assert run("search", "принтер").exit_code == 0
    assert run("search", "nobody@customer.example.org").exit_code == 1


# -- the schema -----------------------------------------------------------------------------


MORE = 1100  # messages more than the migration stems in one batch


def store_before_stems(db_url: str, tmp_path: Path) -> Store:
    """A store at revision 0013 (before stems) as one would have it: a ticket with a
    customer's message, our acknowledgement, and many more messages of the customer's."""
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store.open(db_url, check_schema=False)
    store.upgrade("0013")
    at = datetime(2025, 1, 1)
    with store.engine.begin() as conn:
        ticket = conn.execute(
            sa.text(
                "INSERT INTO tickets (number, subject, status, priority, requester,"
                " requester_name, created_at, updated_at, queue)"
                " VALUES (7, 'Принтеры', 'open', 'normal', 'a@example.org', '', :t, :t, '')"
                " RETURNING id"
            ),
            {"t": at},
        ).scalar_one()
        conn.execute(
            sa.text("INSERT INTO participants VALUES (:id, 'a@example.org', '', 'requester', :t)"),
            {"id": ticket, "t": at},
        )
        rows = [("in", "Принтер не печатает страницы."), ("out", "Try your phone's hotspot.")]
        rows += [("in", f"Ещё одно письмо, номер {n}.") for n in range(MORE)]
        insert_messages(
            conn,
            [
                {"ticket": ticket, "mid": f"old{n}@example.org", "direction": direction,
                 "text": text, "t": at}
                for n, (direction, text) in enumerate(rows)
            ],
        )  # fmt: skip
    return store


def test_an_upgrade_stems_the_messages_already_stored(db_url: str, tmp_path: Path) -> None:
    store = store_before_stems(db_url, tmp_path)
    store.upgrade()
    store.ensure_schema()
    assert numbers(store, "принтером") == [7]
    assert numbers(store, "страница") == [7]
    assert numbers(store, '"страницы"') == [7]
    assert numbers(store, "a@example.org") == [7]
    assert numbers(store, "hotspot") == []  # the acknowledgement is left out
    with store.read() as session:
        stems = session.exec(select(Message.text_stems).order_by(Message.id)).all()
    assert stems[:2] == ["принтер не печата страниц", ""]
    assert stems[-1] == f"ещ одн письм номер {MORE - 1}"  # past the first batches
    assert len([s for s in stems if s]) == MORE + 1
    store.engine.dispose()


@pytest.mark.slow
def test_the_stems_migration_goes_down_and_up_again(db_url: str, tmp_path: Path) -> None:
    from alembic import command

    store = store_before_stems(db_url, tmp_path)
    store.upgrade()
    with store.engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0013")
    with store.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("messages")}
        assert not {"subject_stems", "text_stems", "search_stems"} & columns
        # 0006's index again, the acknowledgement in it as it was.
        if conn.dialect.name == "sqlite":
            found = "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'hotspot'"
        else:
            found = "SELECT id FROM messages WHERE search_document @@ 'hotspot'::tsquery"
        assert len(conn.execute(sa.text(found)).all()) == 1
    store.upgrade()
    assert numbers(store, "принтеров") == [7]
    assert numbers(store, "hotspot") == []
    store.engine.dispose()


# -- the parts ------------------------------------------------------------------------------


def test_stems_keep_every_word_in_order() -> None:
    assert stems_of("Принтеры НЕ печатают, printers don't print!") == (
        "принтер не печата printer don t print"
    )
    assert stems_of("Счёт ёлки e-mail a.kuznetsov") == "счет елк e mail a kuznetsov"
    long = "x" * 80
    assert stems_of(f"{long}ing") == f"{long}ing"  # a code, not a word: as it is


def test_what_a_query_term_is() -> None:
    typed = 'принтеры "точная фраза" парол* -сломан Ivan@Example.org -<b@x.org>,'
    [clause] = parse_query(typed).clauses
    assert [(t.text, t.prefix, t.exact) for t in clause.include] == [
        ("принтеры", False, False),
        ("точная фраза", False, True),
        ("парол", True, True),
    ]
    assert [t.stems for t in clause.include if not t.exact] == ["принтер"]
    assert [(t.text, t.exact) for t in clause.exclude] == [("сломан", False)]
    assert (clause.addresses, clause.not_addresses) == (("ivan@example.org",), ("b@x.org",))
    assert parse_query("-ivan@example.org").empty  # only an exclusion
    assert not parse_query("ivan@example.org").empty
    for text in ("a@", "@b", "a@b@c", "ivan@example*"):  # words, not addresses
        [clause] = parse_query(text).clauses
        assert clause.addresses == () and clause.include, text


def test_a_snippet_of_a_long_text_is_cut_around_its_matches() -> None:
    filler = " ".join(f"w{i}" for i in range(100))
    text = f"{filler} Мой логин не подходит к личному кабинету. {filler}"
    snippet = make_snippet(text, {"логин"}, [])
    assert snippet.startswith("…w98 w99 Мой \x02логин\x03 не подходит")
    assert snippet.endswith("…")
    assert make_snippet(text, set(), []).startswith("w0 w1 w2")  # no match: the beginning
    phrase = [Phrase(("личному", "кабин"), prefix=True)]
    assert "\x02личному\x03 \x02кабинету\x03." in make_snippet(text, set(), phrase)
    # A mark in the mail is not ours.
    assert make_snippet("a \x02b\x03 c", {"c"}, []) == "a  b  \x02c\x03"


def test_only_our_automatic_mail_goes_unstemmed() -> None:
    from mailsupport.store.stems import stem_columns

    def stems(direction: str, author: str = "", raw_id: int | None = None) -> str:
        row = {"subject": "Printers", "text": "Printing", "direction": direction}
        return " ".join(stem_columns(row | {"author": author, "raw_id": raw_id}).values())

    assert stems("in") == stems("note", "olga") == "printer print"
    assert stems("out", "olga") == "printer print"  # an agent's reply
    assert stems("out", raw_id=7) == "printer print"  # our mail imported from Sent
    assert stems("out").strip() == ""  # an acknowledgement
