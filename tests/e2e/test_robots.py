"""Tickets opened by automatic mail (issue 16): real-world-shaped bounces, out-of-office
answers, list managers' notices and abuse reports go through the pipeline into a real store,
and the agents' commands run against a real SMTP server. Such a ticket records its kind, gets
no acknowledgement, no due times and no closing notice, and `list`/`show` say what it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from mailsupport.config import Settings
from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem, Ticket, TicketEvent
from tests.support.cli import cli
from tests.support.desk import take
from tests.support.mailfactory import make_message
from tests.support.paths import MAIL
from tests.support.smtpserver import SmtpServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ROBOTS = {
    "auto/oof_exchange_en.eml": "auto-reply",
    "auto/bounce_rfc822_headers.eml": "bounce",  # names no mail of ours: a ticket of its own
    "auto/list_manager_ezmlm.eml": "bulk",
    "auto/list_manager_fml.eml": "bulk",
    "auto/arf_feedback_report.eml": "feedback-report",
    "auto/complaint_provider.eml": "feedback-report",
}


@pytest.fixture
def env(smtp_env: dict[str, str]) -> dict[str, str]:
    return {**smtp_env, "MAILSUPPORT_AGENT": "Maria"}


def ticket_row(store: Store, number: int) -> Ticket:
    with store.read() as session:
        return session.exec(select(Ticket).where(Ticket.number == number)).one()


def outbox_of(store: Store, number: int) -> list[OutboxItem]:
    with store.read() as session:
        t = session.exec(select(Ticket).where(Ticket.number == number)).one()
        query = select(OutboxItem).where(OutboxItem.ticket_id == t.id)
        return list(session.exec(query.order_by(col(OutboxItem.id))).all())


def first_message(store: Store, number: int) -> Message:
    with store.read() as session:
        t = session.exec(select(Ticket).where(Ticket.number == number)).one()
        query = select(Message).where(Message.ticket_id == t.id).order_by(col(Message.id))
        return session.exec(query).first()  # type: ignore[return-value]


@pytest.mark.slow
def test_robots_get_no_mail_no_due_times_and_say_so(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    person = take(settings, store, make_message("p1@customer.example.org", subject="Help"))
    assert ticket_row(store, person).automatic == ""
    assert ticket_row(store, person).resolution_due is not None  # a person's ticket is due
    robots = {
        take(settings, store, (MAIL / name).read_bytes()): kind for name, kind in ROBOTS.items()
    }
    assert len(robots) == len(ROBOTS)
    for number, kind in robots.items():
        t = ticket_row(store, number)
        assert (t.automatic, t.status) == (kind, "new")
        assert t.first_response_due is None and t.resolution_due is None
        assert first_message(store, number).ack_decision.startswith("no acknowledgement")
        assert outbox_of(store, number) == []

    shown = json.loads(cli(env, "show", str(next(iter(robots))), "--json").output)
    assert shown["automatic"] == "auto-reply"
    listed = {t["number"]: t["automatic"] for t in json.loads(cli(env, "list", "--json").output)}
    assert listed == {person: "", **robots}
    due = json.loads(cli(env, "list", "--due-within", "30d", "--json").output)
    assert [t["number"] for t in due] == [person]
    table = cli(env, "list").output
    assert "[bounce] Delivery Status Notification (Failure)" in table
    text = cli(env, "show", str(next(iter(robots)))).output
    assert "opened by automatic mail (auto-reply)" in text

    for number, kind in robots.items():
        result = cli(env, "close", str(number))
        assert result.exit_code == 0, result.output
        assert f"no closing notice (the ticket was opened by automatic mail: {kind})" in (
            result.output
        )
        assert ticket_row(store, number).status == "closed"
        assert outbox_of(store, number) == []
    assert smtp_server.arrivals == []


def test_no_closing_notice_to_a_mail_system_requester(
    env: dict[str, str], smtp_settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    # A ticket filed before schema 0009 knew about robots: its requester is all there is.
    number = take(smtp_settings, store, make_message("p2@customer.example.org", subject="Help"))
    with store.write() as session:
        t = session.exec(select(Ticket).where(Ticket.number == number)).one()
        t.requester = "mailer-daemon@mx.customer.example.org"
        session.add(t)
    result = cli(env, "close", str(number))
    assert result.exit_code == 0, result.output
    assert "mailer-daemon@mx.customer.example.org is a mail-system or no-reply address" in (
        result.output
    )
    assert [i.kind for i in outbox_of(store, number)] == ["ack"]


def test_a_bounce_with_message_rfc822_headers_joins_the_ticket_of_our_mail(
    smtp_settings: Settings, store: Store
) -> None:
    settings = smtp_settings  # so that the new ticket's acknowledgement is queued
    number = take(settings, store, make_message("p3@customer.example.org", subject="Help"))
    [ack] = outbox_of(store, number)
    raw = (MAIL / "auto/bounce_rfc822_headers.eml").read_bytes()
    raw = raw.replace(b"ticket-95.2@support.example.com", ack.message_id.encode())
    assert take(settings, store, raw) == number
    t = ticket_row(store, number)
    assert t.automatic == ""  # a person's ticket stays one
    with store.read() as session:
        query = select(TicketEvent).where(TicketEvent.action == "delivery-failed")
        [failed] = session.exec(query).all()
    assert failed.ticket_id == t.id and ack.message_id in failed.detail


def test_upgrading_marks_the_robots_tickets_filed_before(db_url: str, tmp_path: Path) -> None:
    """Schema 0009 reads the kind from the first message's acknowledgement decision and
    clears that ticket's due times; a person's ticket and one we opened are left alone."""
    from alembic import command

    from mailsupport.store.db import alembic_config

    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store.open(db_url, check_schema=False)
    try:
        store.upgrade("0008")
        at = T0.replace(tzinfo=None)
        tickets = {  # number: (first message's direction, its ack decision)
            1: ("in", "no acknowledgement: Auto-Submitted: auto-replied (auto-submitted)"),
            2: ("in", "no acknowledgement: from the mail system (x@y) (bounce)"),
            3: ("in", "acknowledge"),
            4: ("out", ""),  # our own mail opened it; an out-of-office answered
        }
        with store.engine.begin() as conn:
            for number, (direction, decision) in tickets.items():
                ticket = conn.execute(
                    sa.text(
                        "INSERT INTO tickets (number, subject, status, priority, requester,"
                        " requester_name, created_at, updated_at, queue, type, line,"
                        " resolution_due) VALUES (:n, 'x', 'new', 'normal', '', '', :t, :t,"
                        " '', '', 1, :t) RETURNING id"
                    ),
                    {"n": number, "t": at},
                ).scalar_one()
                messages = [(direction, decision)]
                if direction == "out":
                    messages.append(("in", tickets[1][1]))
                for i, (way, ack) in enumerate(messages):
                    conn.execute(
                        sa.text(
                            "INSERT INTO messages (ticket_id, message_id, direction,"
                            ' in_reply_to, refs, from_address, from_name, "to", cc, subject,'
                            " received_at, text, thread_reason, defects, author, ack_decision,"
                            " created_at) VALUES (:ticket, :mid, :way, '', '', '', '', '[]',"
                            " '[]', '', :t, '', '', '', '', :ack, :t)"
                        ),
                        {
                            "ticket": ticket,
                            "mid": f"{number}.{i}@x",
                            "way": way,
                            "ack": ack,
                            "t": at + timedelta(minutes=i),
                        },
                    )
        store.upgrade()
        store.ensure_schema()
        query = "SELECT number, automatic, resolution_due IS NULL FROM tickets ORDER BY number"
        with store.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.text(query)).all()]
        assert rows == [
            (1, "auto-reply", True),
            (2, "bounce", True),
            (3, "", False),
            (4, "", False),
        ]
        with store.engine.begin() as conn:  # and down again, and up
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0008")
        store.upgrade()
        store.ensure_schema()
    finally:
        store.engine.dispose()
