"""Topic terms stored at intake (mailsupport/topicterms.py, `tickets.topic_terms`).

The report counts each ticket's words and phrases from its subject and first incoming
message. Intake stores them, so the report need not work them out; these tests pin that what
is stored is always what the stored mail says, whatever order the mail came in, and that
the report finds the same topics from stored terms as from the text.
"""

from __future__ import annotations

from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.report import find_topics
from mailsupport.report.database import read_tickets
from mailsupport.store.db import Store
from mailsupport.store.models import Ticket
from mailsupport.store.tickets import first_topic_terms, merge_tickets
from mailsupport.topicterms import VERSION, ticket_terms
from tests.e2e.test_batched_intake import desk_mail, desk_settings
from tests.support.mailfactory import BASE_TIME, make_message
from tests.support.oldstores import insert_messages

NOW = BASE_TIME + timedelta(days=3)
US = "Example Support <support@example.com>"


def ours_first(n: int) -> list[bytes]:
    """Conversations we opened (our mail first: no incoming message yet), then answered by
    the customer twice, the later answer written first."""
    customer = f"Client {n} <client{n}@shop.example.org>"
    opened = f"us{n}@example.com"
    return [
        make_message(opened, subject="Your order", sender=US, to=customer,
                     body="Your printer order has shipped.", date=BASE_TIME),
        make_message(f"late{n}@shop.example.org", subject="Re: Your order", sender=customer,
                     body="The scanner arrived broken.", in_reply_to=f"<{opened}>",
                     references=f"<{opened}>", date=BASE_TIME + timedelta(hours=2)),
        make_message(f"early{n}@shop.example.org", subject="Re: Your order", sender=customer,
                     body="The printer cable is missing.", in_reply_to=f"<{opened}>",
                     references=f"<{opened}>", date=BASE_TIME + timedelta(hours=1)),
    ]  # fmt: skip


def keys(stored: str | None) -> set[str]:
    """The keys of stored terms (their second line; the first says whose they are)."""
    assert stored is not None and stored.startswith(f"{VERSION} ")
    return set(stored.split("\n")[1].split())


def file_all(settings: Settings, store: Store, mail: list[bytes]) -> None:
    """File `mail` in batches; our own (From: the support address) as `import --sent` does."""
    items = [
        Incoming(raw, f"desk#{i}", None, sent=b"From: " + US.encode() in raw)
        for i, raw in enumerate(mail)
    ]
    with Pipeline(settings, store) as pipeline:
        pipeline.run(items, lambda: NOW, batch_size=7)


def assert_terms_match_the_stored_mail(store: Store) -> int:
    """Every ticket's stored terms are those of its subject and first incoming message as
    stored now (None when it has none). Merged tickets are left out: the report does."""
    with store.read() as session:
        tickets = session.exec(select(Ticket).where(Ticket.merged_into_id == None)).all()  # noqa: E711
        for t in tickets:
            assert t.id is not None
            expected = first_topic_terms(session, t.id, t.subject)
            assert t.topic_terms == expected, f"#{t.number} {t.subject!r}"
    return len(tickets)


@pytest.mark.parametrize("seed", [1, 2])
def test_stored_terms_are_those_of_the_first_incoming_message_in_any_order(
    settings: Settings, db_url: str, tmp_path: Path, seed: int
) -> None:
    """A shuffled day of a desk (replies before their parents, several charsets, bounces,
    broken MIME...) and conversations we opened, filed in batches: each ticket's stored terms
    are what its stored mail says, and the report's topics from them are those it works out
    from the text."""
    mail = desk_mail(seed) + [raw for n in range(3) for raw in ours_first(n)]
    settings = desk_settings(settings, db_url, tmp_path, "desk")
    store = Store.open(db_url)
    try:
        file_all(settings, store, mail)
        assert assert_terms_match_the_stored_mail(store) > 20
        since, until = datetime(2000, 1, 1, tzinfo=UTC), NOW + timedelta(days=1)  # all of it
        stored = read_tickets(store, since, until)
        assert sum(t.terms is not None for t in stored) > 20
        with store.write() as session:  # as an older store's tickets: no terms
            session.execute(sa.update(Ticket).values(topic_terms=None))
        from_text = read_tickets(store, since, until)
        assert all(t.terms is None for t in from_text)
        found = [astuple(topic) for topic in find_topics(stored, top=50)]
        assert found == [astuple(topic) for topic in find_topics(from_text, top=50)]
        assert len(found) >= 3
    finally:
        store.engine.dispose()


def test_a_conversation_we_opened_takes_the_customers_first_words(
    settings: Settings, store: Store
) -> None:
    file_all(settings, store, ours_first(0)[:2])
    with store.read() as session:
        ticket = session.exec(select(Ticket)).one()
    assert {"scanner", "broken"} <= keys(ticket.topic_terms)  # the only customer's message
    # The customer's earlier message arrives late: it is the first now.
    file_all(settings, store, ours_first(0)[2:])
    with store.read() as session:
        ticket = session.exec(select(Ticket)).one()
    assert {"printer", "cabl"} <= keys(ticket.topic_terms)
    assert "scanner" not in keys(ticket.topic_terms)
    assert assert_terms_match_the_stored_mail(store) == 1


def test_a_parent_arriving_after_its_reply_names_the_topic(
    settings: Settings, store: Store
) -> None:
    parent = make_message(
        "p1@shop.example.org", subject="Printer", body="The printer jams on every page.",
        date=BASE_TIME,
    )  # fmt: skip
    reply = make_message(
        "p2@shop.example.org", subject="Re: Printer", body="Any news about the toner?",
        in_reply_to="<p1@shop.example.org>", date=BASE_TIME + timedelta(hours=1),
    )  # fmt: skip
    items = [Incoming(reply, "desk#1", BASE_TIME + timedelta(hours=1)),
             Incoming(parent, "desk#2", BASE_TIME)]  # fmt: skip
    with Pipeline(settings, store) as pipeline:
        pipeline.run(items, lambda: NOW)
    with store.read() as session:
        ticket = session.exec(select(Ticket)).one()
    assert "jam" in keys(ticket.topic_terms) and "toner" not in keys(ticket.topic_terms)
    assert assert_terms_match_the_stored_mail(store) == 1


def test_a_merge_gives_the_ticket_the_terms_of_its_first_message(
    settings: Settings, store: Store
) -> None:
    first = make_message("a1@shop.example.org", subject="Login", body="Login page is blank.",
                         date=BASE_TIME + timedelta(hours=1))  # fmt: skip
    earlier = make_message("b1@shop.example.org", subject="Invoice", body="Invoice total wrong.",
                           date=BASE_TIME)  # fmt: skip
    items = [Incoming(first, "desk#1", BASE_TIME + timedelta(hours=1)),
             Incoming(earlier, "desk#2", BASE_TIME)]  # fmt: skip
    with Pipeline(settings, store) as pipeline:
        pipeline.run(items, lambda: NOW)
    with store.write() as session:
        login, invoice = session.exec(select(Ticket).order_by(Ticket.id)).all()
        assert "blank" in keys(login.topic_terms)
        merge_tickets(session, login, [invoice], "the same customer", NOW)
    with store.read() as session:
        ticket = session.get(Ticket, login.id)
        assert ticket is not None
    assert {"invoic", "total"} <= keys(ticket.topic_terms)  # the older message, its subject
    assert assert_terms_match_the_stored_mail(store) == 1


def test_an_upgrade_works_out_the_terms_of_the_tickets_already_stored(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store.open(db_url, check_schema=False)
    store.upgrade("0018")
    at = datetime(2025, 1, 1, 12)
    rows = [  # (ticket, direction, text, minutes after `at`): the first incoming one counts
        (1, "in", "Принтер не печатает страницы.", 10),
        (1, "in", "The scanner is fine.", 20),
        (1, "out", "Try the toner.", 5),
        (2, "out", "We opened this one.", 0),  # no incoming message: no terms
    ]
    rows += [(3 + n, "in", f"Message {n} about the modem.", n) for n in range(1100)]
    with store.engine.begin() as conn:
        for number in sorted({r[0] for r in rows}):
            conn.execute(
                sa.text(
                    "INSERT INTO tickets (id, number, subject, status, priority, requester,"
                    " requester_name, created_at, updated_at, queue)"
                    " VALUES (:n, :n, 'Принтеры', 'open', 'normal', 'a@example.org', '',"
                    " :t, :t, '')"
                ),
                {"n": number, "t": at},
            )
        insert_messages(
            conn,
            [
                {"ticket": ticket, "mid": f"old{i}@example.org", "direction": direction,
                 "text": text, "t": at + timedelta(minutes=minutes)}
                for i, (ticket, direction, text, minutes) in enumerate(rows)
            ],
        )  # fmt: skip
    store.upgrade()
    store.ensure_schema()
    with store.read() as session:
        terms = dict(session.execute(sa.select(Ticket.id, Ticket.topic_terms)).all())
    first = datetime(2025, 1, 1, 12, 10, tzinfo=UTC)
    assert terms[1] == ticket_terms("Принтеры", "Принтер не печатает страницы.", first)
    assert terms[2] is None
    assert "modem" in keys(terms[1102])  # past the first batches
    assert assert_terms_match_the_stored_mail(store) == 1102
    store.engine.dispose()


def test_a_desk_with_its_own_ticket_tag_stores_the_terms_of_its_own_titles(
    settings: Settings, store: Store
) -> None:
    """The parse workers work out a new ticket's terms ahead, for the title the default tag
    ("[#12]") would leave of its subject; a desk with a tag of its own gets those of its own
    titles all the same."""
    own = Settings(**{**settings.model_dump(), "ticket_tag": "(Case {number})"})
    customer = "Client <client@shop.example.org>"
    mail = [
        make_message("a1@shop.example.org", subject="Printer jam (Case 999)", sender=customer,
                     body="The printer jams on every page."),
        make_message("a2@shop.example.org", subject="[#998] Scanner offline", sender=customer,
                     body="The scanner is offline again."),
        make_message("a3@shop.example.org", subject="Re: Toner [#997]", sender=customer,
                     body="The toner is empty."),
    ]  # fmt: skip
    file_all(own, store, mail)
    with store.read() as session:
        tickets = {t.subject: t for t in session.exec(select(Ticket))}
    assert set(tickets) == {"Printer jam", "[#998] Scanner offline", "Toner [#997]"}
    assert assert_terms_match_the_stored_mail(store) == 3
    # The worker's guess kept "(Case 999)" in the title: its terms were not used.
    assert "case" not in keys(tickets["Printer jam"].topic_terms)
