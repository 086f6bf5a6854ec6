"""Spam (issue 16): mail a spam filter condemned (SpamAssassin, Rspamd, DMARC p=reject, or
MAILSUPPORT_SPAM_SCORE) opens a `spam` ticket through the real pipeline and store: no
acknowledgement, no due times, out of `list` and the report, no closing notice; an agent
releases it with `spam N --not` or sets a ticket aside with `spam N`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.report.database import read_tickets
from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem, QuarantineEntry, Ticket
from tests.support.cli import cli
from tests.support.desk import take
from tests.support.mailfactory import make_message
from tests.support.paths import MAIL
from tests.support.smtpserver import SmtpServer

SPAM = ("spamassassin_flagged.eml", "rspamd_flagged.eml", "dmarc_reject_forged.eml")


@pytest.fixture
def env(smtp_env: dict[str, str]) -> dict[str, str]:
    return {**smtp_env, "MAILSUPPORT_AGENT": "Maria"}


def row(store: Store, number: int) -> Ticket:
    with store.read() as session:
        return session.exec(select(Ticket).where(Ticket.number == number)).one()


def acks(store: Store) -> list[OutboxItem]:
    with store.read() as session:
        return list(session.exec(select(OutboxItem)).all())


def spam_file(name: str) -> bytes:
    return (MAIL / "spam" / name).read_bytes()


@pytest.mark.slow
def test_spam_is_set_aside_and_can_be_released(
    env: dict[str, str], smtp_settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    person = take(smtp_settings, store, spam_file("customer_spam_status_no.eml"))
    spam = [take(smtp_settings, store, spam_file(name)) for name in SPAM]
    assert [i.ticket_id for i in acks(store)] == [row(store, person).id]  # only the person
    for number in spam:
        t = row(store, number)
        assert t.status == "spam" and t.resolution_due is None and t.first_response_due is None
        with store.read() as session:
            [m] = session.exec(select(Message).where(Message.ticket_id == t.id)).all()
        assert m.ack_decision.startswith("no acknowledgement: spam: ")

    listed = [t["number"] for t in json.loads(cli(env, "list", "--json").output)]
    assert listed == [person]
    shown = json.loads(cli(env, "list", "--status", "spam", "--json").output)
    assert sorted(t["number"] for t in shown) == spam
    now = datetime.now(UTC)
    report = read_tickets(store, now - timedelta(days=1), now + timedelta(days=1))
    assert [t.number for t in report] == [person]

    released = cli(env, "spam", str(spam[0]), "--not")
    assert released.exit_code == 0, released.output
    assert f"ticket #{spam[0]} is not spam: new again" in released.output
    t = row(store, spam[0])
    assert t.status == "new" and t.resolution_due is not None
    assert len(acks(store)) == 1  # a released ticket gets no acknowledgement
    again = cli(env, "spam", str(spam[0]), "--not")
    assert again.exit_code == 1 and "is new, not spam" in again.output

    closed = cli(env, "close", str(spam[1]))
    assert closed.exit_code == 0, closed.output
    assert "no closing notice (the ticket was spam)" in closed.output

    marked = cli(env, "spam", str(person))
    assert marked.exit_code == 0 and f"ticket #{person} set aside as spam" in marked.output
    assert row(store, person).status == "spam" and row(store, person).resolution_due is None
    [withdrawn] = acks(store)  # its acknowledgement, queued but not sent, is withdrawn
    assert withdrawn.status == "failed"
    assert withdrawn.last_error == f"not sent: ticket #{person} was marked spam by Maria"
    flushed = cli(env, "outbox", "flush")
    assert flushed.exit_code == 0 and "nothing to send" in flushed.output
    assert smtp_server.arrivals == []  # nothing went to a spammer


def test_the_score_setting_condemns_what_the_server_let_pass(
    smtp_settings: Settings, store: Store
) -> None:
    raw = spam_file("rspamd_below_threshold.eml")
    strict = smtp_settings.model_copy(update={"spam_score": 6.0})
    number = take(strict, store, raw)
    assert row(store, number).status == "spam"
    lenient = take(smtp_settings, store, raw.replace(b"<ink-2024", b"<ink2-2024"))
    assert row(store, lenient).status == "new"


HANDLING_RULES = """
[[rule]]
name = "gift cards"
if.subject = "gift card"
then.status = "spam"

[[rule]]
name = "monitoring"
if.from = "alerts@monitor.example.net"
then.status = "closed"
then.notify = false

[[rule]]
name = "partners"
if.from_domain = "partner.example.net"
then.ack = false

[[rule]]
name = "phishing"
if.subject = "confirm your password"
then.drop = true
"""


def test_rules_handle_new_tickets(
    env: dict[str, str], smtp_settings: Settings, store: Store, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(HANDLING_RULES, encoding="utf-8")
    settings = smtp_settings.model_copy(update={"rules_file": str(rules)})
    env = {**env, "MAILSUPPORT_RULES_FILE": str(rules)}

    def mail(n: int, subject: str, sender: str) -> bytes:
        return make_message(f"h{n}@x.example", subject=subject, sender=sender)

    gift = take(settings, store, mail(1, "Your gift card", "Win <win@deals.example.biz>"))
    alert = take(settings, store, mail(2, "Disk full", "alerts@monitor.example.net"))
    partner = take(settings, store, mail(3, "Order 77", "Lena <lena@partner.example.net>"))
    person = take(settings, store, mail(4, "Help", "Anna <anna@customer.example.org>"))
    assert (row(store, gift).status, row(store, alert).status) == ("spam", "closed")
    assert row(store, alert).closed_at is not None and row(store, alert).resolution_due is None
    assert row(store, partner).status == "new" and row(store, partner).resolution_due
    assert [i.ticket_id for i in acks(store)] == [row(store, person).id]
    with store.read() as session:
        decisions = {m.ticket_id: m.ack_decision for m in session.exec(select(Message)).all()}
    assert decisions[row(store, partner).id] == (
        "no acknowledgement: rule 'partners' says ack = false"
    )
    assert decisions[row(store, alert).id] == (
        "no acknowledgement: rule 'monitoring' says notify = false"
    )

    # Reopened by hand and closed again: notify = false still holds.
    assert cli(env, "reopen", str(alert)).exit_code == 0
    closed = cli(env, "close", str(alert))
    assert "no closing notice (a classification rule said notify = false)" in closed.output

    # drop = true: no ticket, the message kept in the quarantine with the rule's name.
    outcome = Pipeline(settings, store).ingest(
        Incoming(mail(5, "Please confirm your password", "x@bank.example.com"), "test"),
        datetime.now(UTC),
    )
    assert outcome.kind == "quarantined" and outcome.ticket_number is None
    assert outcome.detail == "dropped by rule 'phishing' (drop = true)"
    with store.read() as session:
        [entry] = session.exec(select(QuarantineEntry)).all()
        assert entry.error == outcome.detail
        assert session.exec(select(Ticket).where(Ticket.subject.contains("password"))).all() == []  # type: ignore[attr-defined]


def test_purge_keeps_the_mail_in_the_quarantine(
    env: dict[str, str], smtp_settings: Settings, store: Store
) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    stale = take(smtp_settings, store, spam_file("spamassassin_flagged.eml"), old)
    fresh = take(smtp_settings, store, spam_file("rspamd_flagged.eml"))
    person = take(smtp_settings, store, spam_file("customer_spam_status_no.eml"), old)
    refused = cli(env, "spam", "--purge")
    assert refused.exit_code == 2 and "MAILSUPPORT_SPAM_DAYS is 0" in refused.output

    purged = cli({**env, "MAILSUPPORT_SPAM_DAYS": "30"}, "spam", "--purge")
    assert purged.exit_code == 0, purged.output
    assert f"purged 1 spam tickets (#{stale}); 1 messages kept in the quarantine" in (purged.output)
    with store.read() as session:
        numbers = sorted(t.number for t in session.exec(select(Ticket)).all())
        [entry] = session.exec(select(QuarantineEntry)).all()
    assert numbers == sorted([fresh, person])
    assert entry.error == f"spam, purged from ticket #{stale} after MAILSUPPORT_SPAM_DAYS"
    shown = cli(env, "quarantine", "show", str(entry.id), "--raw")
    assert b"You have WON a $1000 gift card" in shown.stdout_bytes


def test_the_daemon_purges_old_spam_when_spam_days_is_set(
    smtp_settings: Settings, store: Store
) -> None:
    from mailsupport.daemon import NOTIFY, OUTBOX, SPAM_PURGE, periodic_tasks

    old = datetime.now(UTC) - timedelta(days=40)
    stale = take(smtp_settings, store, spam_file("spamassassin_flagged.eml"), old)
    fresh = take(smtp_settings, store, spam_file("rspamd_flagged.eml"))
    assert [t.name for t in periodic_tasks(smtp_settings, store)] == [NOTIFY, OUTBOX]  # no purge
    purging = smtp_settings.model_copy(update={"spam_days": 30})
    [purge] = [t for t in periodic_tasks(purging, store) if t.name == SPAM_PURGE]
    purge.run()
    with store.read() as session:
        numbers = [t.number for t in session.exec(select(Ticket)).all()]
        [entry] = session.exec(select(QuarantineEntry)).all()
    assert numbers == [fresh]
    assert entry.error == f"spam, purged from ticket #{stale} after MAILSUPPORT_SPAM_DAYS"
