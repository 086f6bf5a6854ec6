"""Acknowledgements end to end: the pipeline decides and queues, the outbox delivers to a
real SMTP server on loopback, and what arrived is read back and fed in again as the
customer's mail client (or another desk) would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.outbox.delivery import deliver_due
from mailsupport.pipeline import NEW, REPLY, Pipeline
from mailsupport.signing import is_our_message_id, load_or_create_secret
from mailsupport.store.db import Store
from mailsupport.store.models import Participant, Ticket, TicketEvent
from tests.support.acks import T0, acks_in, desk_settings, incoming, ingest_at, send
from tests.support.desk import parsed
from tests.support.mailfactory import make_message
from tests.support.paths import MAIL, ROOT
from tests.support.smtpserver import SmtpServer

ANNA = "anna@customer.example.org"


@pytest.fixture
def desk(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return desk_settings(settings, smtp_server)


def brackets_off(value: str) -> str:
    return value.strip().strip("<>")


def reply_to(ack: EmailMessage, *, body: str = "Thanks, here are the details.", **kw: Any) -> bytes:
    """The customer's answer to our mail, as a mail client writes it."""
    ack_id = str(ack["Message-ID"])
    return make_message(
        kw.pop("message_id", "answer-1@customer.example.org"),
        subject=kw.pop("subject", f"Re: {ack['Subject']}"),
        in_reply_to=ack_id,
        references=f"{ack.get('References', '')} {ack_id}".strip(),
        body=body,
        **kw,
    )


# ------------------------------------------------------------------------------------------
# One message, one acknowledgement
# ------------------------------------------------------------------------------------------


def test_a_new_message_gets_exactly_one_acknowledgement(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    outcome = ingest_at(pipeline, make_message(subject="Cannot log in"))
    assert outcome.kind == NEW and outcome.ack.startswith("acknowledged to " + ANNA)
    assert send(store, desk) == Counter(sent=1)
    assert send(store, desk) == Counter()  # nothing twice

    [arrival] = smtp_server.arrivals
    assert arrival.mail_from == "support@example.com"
    assert arrival.rcpt_tos == (ANNA,)
    ack = parsed(arrival.data)
    assert ack["To"] == f"Anna Petrova <{ANNA}>"
    assert ack["From"] == "Example Support <support@example.com>"
    assert ack["Subject"] == "Re: Cannot log in [#1]"
    assert ack["In-Reply-To"] == "<m1@customer.example.org>"
    assert ack["References"] == "<m1@customer.example.org>"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["X-Loop"] == "support@example.com"
    ack_id = brackets_off(ack["Message-ID"])
    assert ack_id.endswith("@example.com")
    assert is_our_message_id(ack_id, load_or_create_secret(desk.data_dir, None), "example.com")
    body = ack.get_body(("plain",))
    assert body is not None and "[#1]" in body.get_content()

    # The customer's message carries the decision; the ticket holds the acknowledgement.
    row = incoming(store, "m1@customer.example.org")
    assert row.ack_decision == f"acknowledged to {ANNA} as <{ack_id}>"
    assert row.ack_to == ANNA
    ours = incoming(store, ack_id)
    assert ours.direction == "out" and ours.ticket_id == row.ticket_id
    assert "[#1]" in ours.text
    # Decided before the customer's row goes in, written after it: the ticket reads in order.
    assert row.id is not None and ours.id is not None and row.id < ours.id
    assert row.ack_from == ANNA and row.ack_domain == "customer.example.org"

    # The same message again (a second poll, a re-import) is a duplicate: no second ack.
    assert ingest_at(pipeline, make_message(subject="Cannot log in")).kind == "duplicate"
    assert len(acks_in(store)) == 1


def test_the_reply_to_the_acknowledgement_joins_the_ticket_and_gets_none(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    first = ingest_at(pipeline, make_message())
    send(store, desk)
    ack = parsed(smtp_server.arrivals[0].data)

    # The customer's client drops the tag from the subject: In-Reply-To alone threads it.
    answer = ingest_at(
        pipeline, reply_to(ack, subject="Re: Cannot log in"), T0 + timedelta(hours=1)
    )
    assert answer.kind == REPLY and answer.ticket_number == first.ticket_number
    assert answer.ack == "no acknowledgement: reply to an existing ticket (reply-to-ticket)"
    assert send(store, desk, T0 + timedelta(hours=1)) == Counter()
    assert len(smtp_server.arrivals) == 1
    assert incoming(store, "answer-1@customer.example.org").ack_decision == answer.ack


def test_russian_mail_is_acknowledged_in_russian_and_encoded_properly(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    raw = (MAIL / "koi8r.eml").read_bytes()
    outcome = ingest_at(Pipeline(desk, store), raw)
    assert outcome.kind == NEW and outcome.ack.startswith("acknowledged")
    send(store, desk)
    [arrival] = smtp_server.arrivals
    head = arrival.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # RFC 2047 encoded words, no raw UTF-8 in headers
    ack = parsed(arrival.data)
    text = ack.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Здравствуйте" in text and "[#1]" in text
    assert ack["Subject"].endswith("[#1]") and ack["Subject"].startswith("Re: ")


def test_language_setting_overrides_detection(
    settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = desk_settings(settings, smtp_server, language="en")
    ingest_at(Pipeline(desk, store), (MAIL / "koi8r.eml").read_bytes())
    send(store, desk)
    text = parsed(smtp_server.arrivals[0].data).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Thank you for contacting us" in text


def test_reply_to_header_is_where_the_acknowledgement_goes(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    raw = make_message(
        sender="Shop Bot <orders@shop.example.net>",
        extra_headers={"Reply-To": "Boris <boris@shop.example.net>"},
    )
    assert ingest_at(Pipeline(desk, store), raw).ack.startswith("acknowledged to boris@")
    send(store, desk)
    assert smtp_server.arrivals[0].rcpt_tos == ("boris@shop.example.net",)


# ------------------------------------------------------------------------------------------
# Mail that must never be answered
# ------------------------------------------------------------------------------------------

AUTOMATIC = sorted(
    p.name for p in (MAIL / "auto").glob("*.eml") if not p.name.startswith("customer_")
)
PEOPLE = sorted(p.name for p in (MAIL / "auto").glob("customer_*.eml"))


@pytest.mark.parametrize("name", AUTOMATIC)
def test_automatic_mail_gets_no_acknowledgement(
    name: str, desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    outcome = ingest_at(Pipeline(desk, store), (MAIL / "auto" / name).read_bytes())
    assert outcome.kind in (NEW, REPLY)
    stored = incoming(store, outcome.message_id or "")
    if stored.direction == "out":  # From our own address: our mail, never answered
        assert outcome.ack == ""
    else:
        assert outcome.ack.startswith("no acknowledgement: "), outcome.ack
    assert stored.ack_decision == outcome.ack
    assert acks_in(store) == []
    assert send(store, desk) == Counter()
    assert smtp_server.arrivals == []


@pytest.mark.slow
@pytest.mark.parametrize("name", PEOPLE)
def test_people_writing_like_machines_still_get_one(
    name: str, desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    outcome = ingest_at(Pipeline(desk, store), (MAIL / "auto" / name).read_bytes())
    assert outcome.ack.startswith("acknowledged to "), outcome.ack
    assert send(store, desk) == Counter(sent=1)


@pytest.mark.slow
def test_at_most_ack_limit_per_sender_within_the_window(
    settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = desk_settings(settings, smtp_server, ack_limit=2, ack_window="1h")
    pipeline = Pipeline(desk, store)
    decisions = [
        ingest_at(pipeline, make_message(f"q{i}@customer.example.org", subject=f"Question {i}"),
             T0 + timedelta(minutes=i)).ack
        for i in range(3)
    ]  # fmt: skip
    assert [d.split(" ", 1)[0] for d in decisions] == ["acknowledged", "acknowledged", "no"]
    assert decisions[2].endswith("(ack-limit)")
    # Another sender is not held back by Anna's count.
    other = make_message("b1@other.example.org", sender="Boris <boris@other.example.org>")
    assert ingest_at(pipeline, other, T0 + timedelta(minutes=5)).ack.startswith("acknowledged")
    # Once the window has passed, Anna is acknowledged again.
    later = make_message("q9@customer.example.org", subject="Question 9")
    assert ingest_at(pipeline, later, T0 + timedelta(hours=2)).ack.startswith("acknowledged")


@pytest.mark.slow
def test_two_desks_answering_each_other_stop_after_one_message_each_way(
    tmp_path: Path, settings: Settings, smtp_server: SmtpServer
) -> None:
    """Desk A gets a message from desk B's address (say B's agent wrote to A). A's
    acknowledgement reaches B, which must not acknowledge it, and so on: route every mail
    the SMTP server gets to the desk it is addressed to until nothing moves."""
    desks: dict[str, tuple[Settings, Store, Pipeline]] = {}
    for name in ("a", "b"):
        s = desk_settings(
            settings,
            smtp_server,
            data_dir=tmp_path / name,
            database_url=f"sqlite:///{tmp_path / name / 'desk.db'}",
            support_address=f"support@{name}.example",
            support_name=f"Desk {name.upper()}",
        )
        store = Store.open(s.db_url)
        desks[s.support_address] = (s, store, Pipeline(s, store))
    try:
        first = make_message(
            "start@b.example", sender="Desk B <support@b.example>", to="support@a.example"
        )
        _, _, pipeline_a = desks["support@a.example"]
        ingest_at(pipeline_a, first)
        routed = 0
        for _ in range(6):  # far more rounds than a stopping exchange needs
            for s, store, _ in desks.values():
                send(store, s)
            new = smtp_server.arrivals[routed:]
            routed = len(smtp_server.arrivals)
            for arrival in new:
                for rcpt in arrival.rcpt_tos:
                    _, _, pipeline = desks[rcpt]
                    ingest_at(pipeline, arrival.data, T0 + timedelta(minutes=1))
        directions = Counter(f"{a.mail_from}->{a.rcpt_tos[0]}" for a in smtp_server.arrivals)
        assert all(n <= 1 for n in directions.values()), directions
        assert sum(directions.values()) <= 2
    finally:
        for _, store, _ in desks.values():
            store.engine.dispose()


# ------------------------------------------------------------------------------------------
# Settings and sources that keep acknowledgements from being made
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"smtp_host": ""}, "outgoing mail is off (MAILSUPPORT_SMTP_HOST is not set)"),
        ({"ack_limit": 0}, "acknowledgements are off (MAILSUPPORT_ACK_LIMIT=0)"),
        ({"support_address": ""}, "MAILSUPPORT_SUPPORT_ADDRESS is not set"),
    ],
)
def test_settings_that_turn_acknowledgements_off(
    extra: dict[str, Any], reason: str, settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = desk_settings(settings, smtp_server, **extra)
    outcome = ingest_at(Pipeline(desk, store), make_message())
    assert outcome.kind == NEW and outcome.ack == f"no acknowledgement: {reason}"
    assert acks_in(store) == []


def test_a_source_can_forbid_acknowledgements(desk: Settings, store: Store) -> None:
    outcome = ingest_at(Pipeline(desk, store), make_message(), no_ack_reason="imported from files")
    assert outcome.ack == "no acknowledgement: imported from files"
    assert acks_in(store) == []


@pytest.mark.slow
def test_a_broken_template_files_the_mail_and_says_why(
    settings: Settings, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    broken = tmp_path / "tpl"
    broken.mkdir()
    (broken / "ack.en.txt").write_text("Hello {{ customer_name \n")
    desk = desk_settings(settings, smtp_server, templates_dir=str(broken))
    pipeline = Pipeline(desk, store)
    with pytest.raises(ConfigError, match=r"ack\.en\.txt.*acknowledgements need working"):
        pipeline.acks.check()
    outcome = ingest_at(pipeline, make_message())
    assert outcome.kind == NEW
    assert outcome.ack.startswith("no acknowledgement: could not compose it: template ")
    assert acks_in(store) == [] and smtp_server.arrivals == []


# ------------------------------------------------------------------------------------------
# Bounces of our own mail, and automatic mail on closed tickets
# ------------------------------------------------------------------------------------------


def bounce_for(ack_id: str, recipient: str, fixture: str = "bounce_postfix_rfc822.eml") -> bytes:
    """A real-world-shaped bounce, rewritten to report on our acknowledgement."""
    raw = (MAIL / "auto" / fixture).read_bytes()
    old_id, old_rcpt = {
        "bounce_postfix_rfc822.eml": ("ticket-70.1", "j.doe@customer.example.org"),
        "bounce_postfix_delayed.eml": ("ticket-71.3", "orders@slowshop.example.net"),
    }[fixture]
    old = (old_id + "@support.example.com").encode()
    assert old in raw and old_rcpt.encode() in raw
    return raw.replace(old, ack_id.encode()).replace(old_rcpt.encode(), recipient.encode())


def test_a_bounce_of_our_acknowledgement_marks_it_failed_on_its_ticket(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    first = ingest_at(pipeline, make_message(sender="Gone <gone@customer.example.org>"))
    send(store, desk)
    ack_id = brackets_off(parsed(smtp_server.arrivals[0].data)["Message-ID"])

    bounce = ingest_at(pipeline, bounce_for(ack_id, "gone@customer.example.org"), T0 + timedelta(1))
    assert bounce.kind == REPLY and bounce.ticket_number == first.ticket_number
    assert bounce.detail == f"delivery report on our <{ack_id}>"
    assert bounce.ack.startswith("no acknowledgement: ")
    [item] = acks_in(store)
    assert item.status == "failed"
    assert item.recipient_status["gone@customer.example.org"].startswith("bounced: 5.1.1")
    with store.read() as session:
        events = session.exec(
            select(TicketEvent).where(TicketEvent.action == "delivery-failed")
        ).all()
        people = session.exec(select(Participant.address)).all()
    assert len(events) == 1 and ack_id in events[0].detail and "5.1.1" in events[0].detail
    assert list(people) == ["gone@customer.example.org"]  # MAILER-DAEMON is nobody to write to

    # `show` tells the agent.
    env = {
        "MAILSUPPORT_DATA_DIR": str(desk.data_dir),
        "MAILSUPPORT_DATABASE_URL": desk.db_url,
    }
    shown = CliRunner().invoke(app, ["show", "1"], env=env, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "[acknowledged to gone@customer.example.org" in shown.output
    assert "[delivery failed: bounced: 5.1.1" in shown.output
    assert "delivery-failed" in CliRunner().invoke(app, ["show", "1", "--json"], env=env).output


@pytest.mark.slow
def test_a_delay_report_only_notes_the_delay(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    ingest_at(pipeline, make_message(sender="slow@slowshop.example.net"))
    send(store, desk)
    ack_id = brackets_off(parsed(smtp_server.arrivals[0].data)["Message-ID"])
    delayed = bounce_for(ack_id, "slow@slowshop.example.net", "bounce_postfix_delayed.eml")
    assert ingest_at(pipeline, delayed).ticket_number == 1
    [item] = acks_in(store)
    assert item.status == "sent"
    with store.read() as session:
        actions = session.exec(select(TicketEvent.action)).all()
    assert "delivery-delayed" in actions and "delivery-failed" not in actions


def test_an_out_of_office_answer_does_not_reopen_a_closed_ticket(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    ingest_at(pipeline, make_message())
    send(store, desk)
    ack = parsed(smtp_server.arrivals[0].data)
    with store.write() as session:
        ticket = session.exec(select(Ticket)).one()
        ticket.status = "closed"
        session.add(ticket)
    oof = reply_to(
        ack,
        message_id="oof-1@customer.example.org",
        subject=f"Automatic reply: {ack['Subject']}",
        extra_headers={"Auto-Submitted": "auto-replied"},
        body="I am out of the office until Monday.",
    )
    assert ingest_at(pipeline, oof, T0 + timedelta(hours=1)).kind == REPLY
    with store.read() as session:
        assert session.exec(select(Ticket.status)).one() == "closed"
    # A person writing again does reopen it.
    ingest_at(pipeline, reply_to(ack, message_id="again@customer.example.org"), T0 + timedelta(2))
    with store.read() as session:
        assert session.exec(select(Ticket.status)).one() == "open"


# ------------------------------------------------------------------------------------------
# Delivery that is interrupted: nothing lost, one Message-ID per message
# ------------------------------------------------------------------------------------------

SENDER = textwrap.dedent(
    """
    from datetime import UTC, datetime
    from mailsupport.config import load_settings
    from mailsupport.outbox.delivery import deliver_due
    from mailsupport.store.db import Store
    settings = load_settings()
    deliver_due(Store.open(settings.db_url), settings, lambda: datetime.now(UTC))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("accepted", [False, True], ids=["before-250", "after-accepting"])
def test_kill_9_during_delivery_then_restart_delivers_everything(
    accepted: bool, desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    now = datetime.now(UTC)
    for i, who in enumerate(["one", "two", "three"]):
        raw = make_message(f"k{i}@customer.example.org", sender=f"{who}@customer.example.org")
        ingest_at(pipeline, raw, now)
    smtp_server.hold_data(only=["two@customer.example.org"], accepted=accepted)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MAILSUPPORT_DATA_DIR": str(desk.data_dir),
        "MAILSUPPORT_DATABASE_URL": desk.db_url,
        "MAILSUPPORT_SUPPORT_ADDRESS": desk.support_address,
        "MAILSUPPORT_SMTP_HOST": desk.smtp_host,
        "MAILSUPPORT_SMTP_PORT": str(desk.smtp_port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "30",
    }
    sender = subprocess.Popen([sys.executable, "-c", SENDER], env=env)
    try:
        assert smtp_server.held.wait(30), "the sender never reached the second message"
    finally:
        sender.send_signal(signal.SIGKILL)
        sender.wait(10)
    smtp_server.accept()

    # The dead sender's claim runs out; the next run (moved past the lease) sends the rest.
    later = now + timedelta(hours=1)
    counts = deliver_due(store, desk, lambda: later)
    assert counts["sent"] == 2  # "two" and "three"; "one" was recorded before the kill
    queued = {i.message_id: i for i in acks_in(store)}
    assert all(i.status == "sent" for i in queued.values())
    arrived = Counter(brackets_off(parsed(a.data)["Message-ID"]) for a in smtp_server.arrivals)
    assert set(arrived) == set(queued)  # every message, and no Message-ID we did not queue
    two = next(i for i in queued.values() if i.recipients == ["two@customer.example.org"])
    # A server that had accepted before the kill gets it again, with the same Message-ID.
    assert arrived[two.message_id] == (2 if accepted else 1)
    assert sum(arrived.values()) == (4 if accepted else 3)


@pytest.mark.slow
def test_smtp_down_for_several_poll_cycles_loses_nothing(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    smtp_server.stop()
    for i in range(3):
        raw = make_message(f"d{i}@customer.example.org", sender=f"p{i}@customer.example.org")
        ingest_at(pipeline, raw, T0 + timedelta(minutes=i))
    clock = T0 + timedelta(minutes=5)
    for _ in range(5):  # five poll cycles, each after the retry time has come
        assert send(store, desk, clock) == Counter(retry=3)
        clock += timedelta(hours=1)
    with store.read() as session:
        failures = select(TicketEvent).where(TicketEvent.action == "delivery-failed")
        assert session.exec(failures).all() == []
    smtp_server.start()
    assert send(store, desk, clock) == Counter(sent=3)
    assert sorted(a.rcpt_tos[0] for a in smtp_server.arrivals) == [
        f"p{i}@customer.example.org" for i in range(3)
    ]
    assert all(i.status == "sent" and i.attempts == 6 for i in acks_in(store))


# ------------------------------------------------------------------------------------------
# Knowledge-base suggestions
# ------------------------------------------------------------------------------------------


def test_the_acknowledgement_suggests_matching_articles_in_the_customers_language(
    settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = desk_settings(settings, smtp_server, kb_dir=str(ROOT / "kb"))
    pipeline = Pipeline(desk, store)
    raw = make_message(
        "inv@customer.example.org",
        subject="Не пришёл счёт за март",
        body="Добрый день! Счета за март так и не пришли на почту бухгалтерии. Пришлите, "
        "пожалуйста.",
    )
    outcome = ingest_at(pipeline, raw)
    assert outcome.ack.endswith(" with articles invoices-ru")
    unrelated = make_message(
        "weather@other.example.org", sender="Boris <boris@other.example.org>",
        subject="Поздравляем с праздником", body="Желаем хорошей погоды и отличного настроения!",
    )  # fmt: skip
    plain = ingest_at(pipeline, unrelated)
    assert plain.ack.startswith("acknowledged") and "articles" not in plain.ack
    send(store, desk)
    first, second = (parsed(a.data) for a in smtp_server.arrivals)
    text = first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "возможно, вам помогут эти статьи" in text
    assert "* Где найти счета и закрывающие документы" in text
    assert text.count("Где найти счета и закрывающие документы") == 1  # the title once
    html = first.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<h3" in html and html.count("Где найти счета и закрывающие документы") == 1
    other = second.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "статьи" not in other
