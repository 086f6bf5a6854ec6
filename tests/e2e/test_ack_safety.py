"""Acknowledgements go only where they are safe (issue 14, point 5).

Anyone can write any From and Reply-To. Replayed here as real-shaped mail (The Bat! with
KOI8-R headers, Outlook, Gmail) through the pipeline into a real store on both backends,
with the acknowledgements delivered to a real SMTP server on loopback:

- one sender aiming acknowledgements at five Reply-To victims gets at most ACK_LIMIT out;
- forged senders of one organisation get at most ACK_DOMAIN_LIMIT (shared providers such as
  gmail.com excepted);
- a Reply-To in another domain than From is answered only for a sender an agent has
  answered before;
- the display name is repeated only when it reads as a person's name, and the subject
  only cleaned and bounded.
"""

from __future__ import annotations

from datetime import timedelta
from email.header import Header
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select
from typer.testing import CliRunner

from mailsupport.ackrules import AckContext, ack_decision, person_name
from mailsupport.acks import ACK_SUBJECT_MAX_CHARS, _known_sender, ack_subject
from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.pipeline import NEW, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import Message, Ticket
from mailsupport.store.window import acks_since
from tests.support.acks import T0, acks_in, desk_settings, incoming, ingest_at, send
from tests.support.cli import cli_env
from tests.support.desk import parsed
from tests.support.imapservers import DovecotServer
from tests.support.mailboxes import imap_env, poll
from tests.support.mailfactory import make_message
from tests.support.smtpserver import SmtpServer

LATER = T0 + timedelta(hours=1)  # when the outbox runs: after every message here was taken
EVE = "eve@prize.example"
VICTIMS = [
    ("Анна Петрова", "anna@customer.example.org"),
    ("Boris Smirnov", "boris@other.example.org"),
    ("Ольга Смирнова", "olga.smirnova@romashka.example.ru"),
    ("", "ivan.kuznetsov@mail.example.ru"),
    ("John Smith", "john.smith@corp.example.com"),
]
SPAM_NAME = "Выигрыш 100 000 руб. на www.prize.example"
SPAM_SUBJECT = (
    "Поздравляем! Вы выиграли 100 000 рублей. Чтобы получить выигрыш, перейдите по ссылке "
    "http://www.prize.example/claim?id=8841 и введите номер карты. Предложение действует 24 часа."
)


def header_word(text: str) -> str:
    """`text` as a mail client in Russia writes it into a header: KOI8-R encoded words."""
    return Header(text, "koi8-r").encode() if not text.isascii() else text


def mailbox(name: str, address: str) -> str:
    return f"{header_word(name)} <{address}>" if name else address


def bat_mail(
    message_id: str,
    *,
    sender: tuple[str, str],
    subject: str,
    reply_to: tuple[str, str] | None = None,
    body: str = "Здравствуйте!\n\nПодробности по ссылке.\n",
    date: str = "Tue, 10 Mar 2026 14:01:10 +0300",
) -> bytes:
    """A message as The Bat! sends it: KOI8-R headers and an 8-bit KOI8-R body, CRLF."""
    domain = sender[1].rpartition("@")[2]
    head = [
        f"Received: from mx1.{domain} (mx1.{domain} [192.0.2.25])",
        "\tby mx.example.com (Postfix) with ESMTPS id 4TvQ3k1XyZz9sWn",
        "\tfor <support@example.com>; Tue, 10 Mar 2026 11:01:12 +0000 (UTC)",
        f"Message-ID: <{message_id}>",
        f"Date: {date}",
        f"From: {mailbox(*sender)}",
        "To: support@example.com",
        *([f"Reply-To: {mailbox(*reply_to)}"] if reply_to else []),
        f"Subject: {header_word(subject)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=koi8-r",
        "Content-Transfer-Encoding: 8bit",
        "X-Mailer: The Bat! (v3.99.3) Professional",
    ]
    text = body.replace("\n", "\r\n").encode("koi8-r")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + text


def attack(i: int, victim: tuple[str, str], sender: tuple[str, str] = (SPAM_NAME, EVE)) -> bytes:
    return bat_mail(
        f"prize.{i}.8841@prize.example",
        sender=sender,
        reply_to=(SPAM_NAME, victim[1]) if i % 2 else victim,  # spam names in Reply-To too
        subject=SPAM_SUBJECT,
    )


def plain_text(data: bytes) -> str:
    part = parsed(data).get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def html_text(data: bytes) -> str:
    part = parsed(data).get_body(("html",))
    assert part is not None
    return str(part.get_content())


def decisions(store: Store) -> list[str]:
    with store.read() as session:
        rows = session.exec(
            select(Message.ack_decision).where(Message.direction == "in").order_by(col(Message.id))
        ).all()
    return list(rows)


@pytest.fixture
def desk(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return desk_settings(settings, smtp_server)


def other_domain(victim: str, sender: str = EVE) -> str:
    return (
        f"no acknowledgement: Reply-To {victim} is in another domain than From {sender}, "
        "and the sender is not known to the desk (reply-to-other-domain)"
    )


def agent_answers(env: dict[str, str], number: int) -> None:
    """An agent answers ticket `number` from the command line, as on any working day."""
    result = CliRunner().invoke(
        app, ["reply", str(number), "-m", "Проверили, всё в порядке."], env=env,
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.fixture
def agent_env(desk: Settings) -> dict[str, str]:
    return {
        **cli_env(desk),
        "MAILSUPPORT_SMTP_HOST": desk.smtp_host,
        "MAILSUPPORT_SMTP_PORT": str(desk.smtp_port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "5",
        "MAILSUPPORT_AGENT": "Maria",
    }


# ------------------------------------------------------------------------------------------
# The attack from the issue: one sender, five Reply-To victims
# ------------------------------------------------------------------------------------------


def test_five_victims_in_other_domains_get_nothing_from_an_unknown_sender(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    for i, victim in enumerate(VICTIMS):
        outcome = ingest_at(pipeline, attack(i, victim), T0 + timedelta(minutes=i))
        assert outcome.kind == NEW  # the mail is filed all the same, for an agent to see
        assert outcome.ack == other_domain(victim[1])
    assert decisions(store) == [other_domain(v[1]) for v in VICTIMS]
    assert acks_in(store) == []
    assert send(store, desk, LATER) == {}
    assert smtp_server.arrivals == []


@pytest.mark.slow
def test_five_victims_in_the_senders_own_domain_get_at_most_ack_limit(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    """The same attack with a forged colleague's address: Reply-To stays in From's domain,
    so only the per-sender limit stands between the victims and the desk."""
    forged = ("Служба ИТ", "it-helpdesk@corp.example.com")
    colleagues = [(name, f"user{i}@corp.example.com") for i, (name, _) in enumerate(VICTIMS)]
    pipeline = Pipeline(desk, store)
    acks = [
        ingest_at(pipeline, attack(i, colleague, forged), T0 + timedelta(minutes=i)).ack
        for i, colleague in enumerate(colleagues)
    ]
    assert [a.split(" ", 1)[0] for a in acks] == ["acknowledged"] * 3 + ["no"] * 2
    for i in (0, 1, 2):
        assert acks[i].startswith(f"acknowledged to user{i}@corp.example.com as <")
    assert (
        acks[3]
        == acks[4]
        == (
            "no acknowledgement: mail from this sender was acknowledged 3 time(s) within the "
            "window (limit 3) (sender-limit)"
        )
    )
    assert send(store, desk, LATER) == {"sent": 3}
    assert [a.rcpt_tos for a in smtp_server.arrivals] == [(c[1],) for c in colleagues[:3]]
    for arrival in smtp_server.arrivals:
        ack = parsed(arrival.data)
        # No spam name in To or in the greeting; the real names of the victims stay.
        assert "prize" not in str(ack["To"]) and "Выигрыш" not in str(ack["To"])
        text = plain_text(arrival.data)
        assert "Выигрыш" not in text and "www.prize.example" not in text.split("\n", 3)[0]
        # The subject is repeated only bounded: the link and the card number request, cut.
        assert "введите номер карты" not in str(ack["Subject"])
        assert "введите номер карты" not in text
    first = parsed(smtp_server.arrivals[0].data)
    assert first["To"] == "Анна Петрова <user0@corp.example.com>"
    assert plain_text(smtp_server.arrivals[0].data).startswith("Здравствуйте, Анна Петрова!")
    second = parsed(smtp_server.arrivals[1].data)
    assert second["To"] == "user1@corp.example.com"  # Reply-To named by the spam name
    assert plain_text(smtp_server.arrivals[1].data).startswith("Здравствуйте!\n")

    # After the window, the sender may be acknowledged again: one more, not a new volley.
    later = ingest_at(pipeline, attack(9, colleagues[4], forged), T0 + timedelta(hours=25))
    assert later.ack.startswith("acknowledged to user4@corp.example.com")


def test_a_known_sender_aiming_at_five_victims_gets_at_most_ack_limit_in_total(
    desk: Settings, store: Store, smtp_server: SmtpServer, agent_env: dict[str, str]
) -> None:
    """An agent has answered this sender, so Reply-To elsewhere is allowed; the volley is
    still capped by ACK_LIMIT per sender, counting the acknowledgement of their own ticket."""
    pipeline = Pipeline(desk, store)
    customer = ("Олег Иванов", "oleg@shop.example.net")
    first = bat_mail("o1@shop.example.net", sender=customer, subject="Не приходит счёт")
    assert ingest_at(pipeline, first).ack.startswith("acknowledged to oleg@shop.example.net")
    agent_answers(agent_env, 1)
    acks = [
        ingest_at(pipeline, attack(i, victim, customer), T0 + timedelta(minutes=1 + i)).ack
        for i, victim in enumerate(VICTIMS)
    ]
    assert [a.split(" ", 1)[0] for a in acks] == ["acknowledged"] * 2 + ["no"] * 3
    assert (
        acks[2:]
        == [
            "no acknowledgement: mail from this sender was acknowledged 3 time(s) within the "
            "window (limit 3) (sender-limit)"
        ]
        * 3
    )
    with store.read() as session:
        ours = session.exec(select(Message.ack_to).where(col(Message.ack_to).is_not(None))).all()
    assert sorted(ours) == sorted(["oleg@shop.example.net", VICTIMS[0][1], VICTIMS[1][1]])


@pytest.mark.slow
def test_the_attack_replayed_through_dovecot_and_poll(
    dovecot_server: DovecotServer,
    desk: Settings,
    store: Store,
    smtp_server: SmtpServer,
    agent_env: dict[str, str],
) -> None:
    env = imap_env(agent_env, dovecot_server)
    assert poll(env).exit_code == 0  # an empty mailbox: new mail starts here
    forged = ("Служба ИТ", "it-helpdesk@corp.example.com")
    for i, victim in enumerate(VICTIMS):
        dovecot_server.append(attack(i, victim))  # other domains, unknown sender
        dovecot_server.append(attack(10 + i, (victim[0], f"u{i}@corp.example.com"), forged))
    result = poll(env)
    assert result.exit_code == 0, result.output
    assert "outbox: 3 sent" in result.output
    assert sorted(a.rcpt_tos[0] for a in smtp_server.arrivals) == [
        "u0@corp.example.com",
        "u1@corp.example.com",
        "u2@corp.example.com",
    ]
    found = decisions(store)
    assert len(found) == 10
    assert sum(d.endswith("(reply-to-other-domain)") for d in found) == 5
    assert sum(d.endswith("(sender-limit)") for d in found) == 2


# ------------------------------------------------------------------------------------------
# Per domain
# ------------------------------------------------------------------------------------------


def colleague_mail(i: int, domain: str) -> bytes:
    return make_message(
        f"q{i}@{domain}",
        sender=f"Employee {chr(65 + i)} <employee{i}@{domain}>",
        subject=f"Question {i}",
    )


@pytest.mark.slow
def test_forged_senders_of_one_domain_get_at_most_the_domain_limit(
    settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = desk_settings(settings, smtp_server, ack_domain_limit=4)
    pipeline = Pipeline(desk, store)
    acks = [
        ingest_at(pipeline, colleague_mail(i, "corp.example.com"), T0 + timedelta(minutes=i)).ack
        for i in range(6)
    ]
    assert [a.split(" ", 1)[0] for a in acks] == ["acknowledged"] * 4 + ["no"] * 2
    assert acks[4] == (
        "no acknowledgement: mail from corp.example.com was acknowledged 4 time(s) within "
        "the window (domain limit 4) (domain-limit)"
    )
    # Another organisation is not held back; a shared provider has no domain limit.
    other = ingest_at(pipeline, colleague_mail(0, "other.example.org"), T0 + timedelta(minutes=7))
    assert other.ack.startswith("acknowledged")
    gmail = [
        ingest_at(pipeline, colleague_mail(i, "gmail.com"), T0 + timedelta(minutes=10 + i)).ack
        for i in range(6)
    ]
    assert all(a.startswith("acknowledged to employee") for a in gmail), gmail
    assert send(store, desk, LATER) == {"sent": 4 + 1 + 6}
    # The window passes: the domain is acknowledged again.
    later = ingest_at(pipeline, colleague_mail(7, "corp.example.com"), T0 + timedelta(hours=25))
    assert later.ack.startswith("acknowledged")


@pytest.mark.parametrize(
    ("extra", "sent"),
    [
        ({"ack_domain_limit": 0}, 6),  # no domain limit
        ({"ack_domain_limit": 2, "ack_shared_domains": "corp.example.com"}, 6),
        ({"ack_domain_limit": 2, "ack_shared_domains": ""}, 2),
    ],
    ids=["off", "listed-as-shared", "no-shared-domains"],
)
def test_domain_limit_settings(
    extra: dict[str, Any], sent: int, settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = desk_settings(settings, smtp_server, **extra)
    pipeline = Pipeline(desk, store)
    for i in range(6):
        ingest_at(pipeline, colleague_mail(i, "corp.example.com"), T0 + timedelta(minutes=i))
    assert len(acks_in(store)) == sent


# ------------------------------------------------------------------------------------------
# Reply-To in another domain
# ------------------------------------------------------------------------------------------


def test_reply_to_in_another_domain_waits_until_an_agent_has_answered_the_sender(
    desk: Settings, store: Store, smtp_server: SmtpServer, agent_env: dict[str, str]
) -> None:
    pipeline = Pipeline(desk, store)
    anna = "Anna Petrova <anna@customer.example.org>"
    private = {"Reply-To": "Anna Petrova <anna.petrova@gmail.com>"}

    def new_mail(i: int, minutes: int, **kwargs: Any) -> str:
        raw = make_message(f"a{i}@customer.example.org", subject=f"Question {i}", **kwargs)
        return ingest_at(pipeline, raw, T0 + timedelta(minutes=minutes)).ack

    # A stranger to the desk: no acknowledgement, and the reason is on the message.
    unknown = other_domain("anna.petrova@gmail.com", "anna@customer.example.org")
    assert new_mail(1, 0, sender=anna, extra_headers=private) == unknown
    # Having written before does not make her known: the stranger's first mail would.
    assert new_mail(2, 1, sender=anna).startswith("acknowledged to anna@customer.example.org")
    assert new_mail(3, 2, sender=anna, extra_headers=private) == unknown
    assert [i.recipients for i in acks_in(store)] == [["anna@customer.example.org"]]

    # An agent answers her ticket: from now on she is known, and her Reply-To is used.
    agent_answers(agent_env, 2)
    known = new_mail(4, 3, sender=anna, extra_headers=private)
    assert known.startswith("acknowledged to anna.petrova@gmail.com as <")
    assert incoming(store, "a4@customer.example.org").ack_to == "anna.petrova@gmail.com"

    # A subdomain of From's domain is the same organisation.
    boris = {"Reply-To": "Boris <boris@mail.other.example.org>"}
    same = new_mail(5, 4, sender="Boris <boris@other.example.org>", extra_headers=boris)
    assert same.startswith("acknowledged to boris@mail.other.example.org")


@pytest.mark.slow
def test_a_reply_to_limit_holds_across_senders(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    """Many senders of one domain, one Reply-To victim there: ACK_LIMIT for the victim."""
    pipeline = Pipeline(desk, store)
    victim = {"Reply-To": "Olga <olga@corp.example.com>"}
    acks = [
        ingest_at(
            pipeline,
            make_message(
                f"r{i}@corp.example.com",
                sender=f"sender{i}@corp.example.com",
                subject=f"Question {i}",
                extra_headers=victim,
            ),
            T0 + timedelta(minutes=i),
        ).ack
        for i in range(5)
    ]
    assert [a.split(" ", 1)[0] for a in acks] == ["acknowledged"] * 3 + ["no"] * 2
    assert acks[3] == (
        "no acknowledgement: Reply-To address already got 3 acknowledgement(s) within the "
        "window (limit 3) (ack-limit)"
    )


# ------------------------------------------------------------------------------------------
# What of the sender's words an acknowledgement repeats
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Anna Petrova",
        "Иван Смирнов",
        "Ольга Смирнова",
        "J. R. O'Neil-Smith",
        "Анна-Мария Д’Артаньян",
        "François Müller",
        "María del Carmen López",
        "李小龍",
        "Σωκράτης Παπαδόπουλος",
    ],
)
def test_person_names_are_kept(name: str) -> None:
    assert person_name(f' "{name}" ') == name


@pytest.mark.parametrize(
    "name",
    [
        "anna@customer.example.org",
        "Visit www.prize.example",
        "prize.example",
        "http://evil.example/claim",
        "Order 12345",
        "Win $1000 now",
        SPAM_NAME,
        "Petrova, Anna",
        "Anna (Sales)",
        "One Two Three Four Five Six",
        "A" * 61,
        "PаyPal Support",  # a Cyrillic "а" among Latin letters
        "Anna\u202eevil",  # a bidi override
        "Anna\x1b[31m",
        "🎉 Prize 🎉",
        "- . -",
        "",
    ],
)
def test_other_display_names_are_not_repeated(name: str) -> None:
    assert person_name(name) == ""


def test_display_names_in_the_acknowledgement_in_both_languages(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    pipeline = Pipeline(desk, store)
    cases = [
        # (sender, subject, body, first line of the acknowledgement, To header)
        (
            ("Ольга Смирнова", "olga.smirnova@romashka.example.ru"),
            "Не работает оплата картой",
            "Добрый день! Оплата картой не проходит со вчерашнего дня.\n",
            "Здравствуйте, Ольга Смирнова!",
            "Ольга Смирнова <olga.smirnova@romashka.example.ru>",
        ),
        (
            ("Скидки 90% на www.sale.example", "news@sale.example"),
            "Ваш заказ",
            "Добрый день! Где мой заказ? Жду уже две недели.\n",
            "Здравствуйте!",
            "news@sale.example",
        ),
        (
            ("Anna Petrova", "anna@customer.example.org"),
            "Cannot log in",
            "Hello, I cannot log in since yesterday.\n",
            "Hello Anna Petrova,",
            "Anna Petrova <anna@customer.example.org>",
        ),
        (
            ("Order #4471 shipped", "orders@shop.example.net"),
            "Where is my parcel",
            "Hello, my parcel has not arrived.\n",
            "Hello,",
            "orders@shop.example.net",
        ),
    ]
    for i, (sender, subject, body, _, _) in enumerate(cases):
        raw = bat_mail(f"n{i}@example.org", sender=sender, subject=subject, body=body)
        assert ingest_at(pipeline, raw, T0 + timedelta(minutes=i)).ack.startswith("acknowledged")
    send(store, desk, LATER)
    assert len(smtp_server.arrivals) == len(cases)
    for arrival, (_, _, _, greeting, to) in zip(smtp_server.arrivals, cases, strict=True):
        assert parsed(arrival.data)["To"] == to
        assert plain_text(arrival.data).split("\n", 1)[0] == greeting
        html = html_text(arrival.data)
        assert f"<p>{greeting}</p>" in html
    # The names are kept whole on the messages, for agents.
    with store.read() as session:
        names = session.exec(
            select(Message.from_name).where(Message.direction == "in").order_by(col(Message.id))
        ).all()
    assert list(names) == [c[0][0] for c in cases]


def test_the_subject_is_repeated_cleaned_and_bounded(
    desk: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    subject = "Счёт \u202egpj.exe\u202c \x1b[31mсрочно\x1b[0m " + "очень длинная тема " * 30
    # Encoded words carry the control and bidi characters past any header folding.
    encoded = Header(subject, "utf-8").encode()
    raw = make_message(
        "long@customer.example.org", subject="placeholder", body="Подробности в теме."
    ).replace(b"Subject: placeholder", f"Subject: {encoded}".encode())
    outcome = ingest_at(Pipeline(desk, store), raw)
    assert outcome.ack.startswith("acknowledged")
    send(store, desk, LATER)
    [arrival] = smtp_server.arrivals
    header = str(parsed(arrival.data)["Subject"])
    assert header.startswith("Re: Счёт gpj.exe") and header.endswith("… [#1]")
    assert len(header) <= len("Re: ") + ACK_SUBJECT_MAX_CHARS + 1 + len(" [#1]")
    text = plain_text(arrival.data)
    for shown in (header, text):
        assert "\u202e" not in shown and "\x1b" not in shown
    assert "очень длинная тема " * 3 in text and "очень длинная тема " * 6 not in text
    with store.read() as session:
        title = session.exec(select(Ticket.subject)).one()
    assert len(title) > 400  # the ticket keeps the whole subject for agents


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Cannot log in", "Cannot log in"),
        ("  Не   работает\tоплата ", "Не работает оплата"),
        ("a\u200bb\u2066c\u2069", "abc"),
        ("line\u2028break\x85next", "line break next"),
        ("word " * 40, ("word " * 20).strip() + "…"),
        ("x" * 300, "x" * ACK_SUBJECT_MAX_CHARS + "…"),
    ],
)
def test_ack_subject(subject: str, expected: str) -> None:
    assert ack_subject(subject) == expected


# ------------------------------------------------------------------------------------------
# The rules on their own, and the lookups behind them
# ------------------------------------------------------------------------------------------


def test_the_rules_order_and_defaults() -> None:
    from mailsupport.parsing import parse

    ours = frozenset({"support@example.com"})
    raw = make_message(
        sender=f"Eve <{EVE}>", extra_headers={"Reply-To": "anna@customer.example.org"}
    )
    message = parse(raw)
    # The safe default: without a lookup saying otherwise, the sender is unknown.
    decision = ack_decision(message, AckContext(ours, False, 0))
    assert decision.rule == "reply-to-other-domain"
    # A reply to an existing ticket says so first.
    assert ack_decision(message, AckContext(ours, True, 0)).rule == "reply-to-ticket"
    known = AckContext(ours, False, 0, sender_known=True)
    assert ack_decision(message, known).send
    full = AckContext(ours, False, 3, sender_known=True, recent_acks_from_sender=3)
    assert ack_decision(message, full).rule == "ack-limit"  # the recipient's limit first
    domain = AckContext(ours, False, 0, sender_known=True, recent_acks_from_domain=9)
    assert ack_decision(message, domain).send  # domain_limit 0: none
    limited = AckContext(
        ours, False, 0, sender_known=True, recent_acks_from_domain=9, domain_limit=9
    )
    assert ack_decision(message, limited).rule == "domain-limit"


def test_the_counts_and_the_known_lookup_use_indexes(store: Store) -> None:
    """Each acknowledgement decision costs index lookups only, however big the desk."""
    values = {"to": "a@x.example", "sender": "a@x.example", "domain": "x.example", "since": T0}
    plans = []
    with store.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:  # an empty table is scanned whatever its indexes: ask for them
            conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, params in ((acks_since(), values), (_known_sender(), values)):
            # The exact SQL and parameters the driver gets, explained.
            seen: list[tuple[str, Any]] = []

            def capture(*args: Any, seen: list[tuple[str, Any]] = seen) -> None:
                seen.append((args[2], args[3]))

            sa.event.listen(conn, "before_cursor_execute", capture)
            try:
                conn.execute(statement, {**params, "address": "a@x.example"}).all()
            finally:
                sa.event.remove(conn, "before_cursor_execute", capture)
            sql, bound = seen[-1]
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = conn.exec_driver_sql(explain + sql, bound).all()
            plans.append(" ".join(str(row[-1]) for row in rows))
    counts, known = plans
    for index in (
        "ix_messages_ack_to_created_at",
        "ix_messages_ack_from_created_at",
        "ix_messages_ack_domain_created_at",
    ):
        assert index in counts, counts
    assert "ix_participants_address" in known, known


def test_upgrading_counts_the_acknowledgements_sent_before(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store.open(db_url, check_schema=False)
    try:
        store.upgrade("0007")
        at = T0.replace(tzinfo=None)
        with store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO tickets (subject, status, priority, requester, requester_name,"
                    " created_at, updated_at) VALUES ('x', 'new', 'normal', '', '', :t, :t)"
                ),
                {"t": at},
            )
            for mid, ack_to in (("acked@x", "boris@mail.corp.example.com"), ("not@x", None)):
                conn.execute(
                    sa.text(
                        "INSERT INTO messages (ticket_id, message_id, direction, in_reply_to,"
                        ' refs, from_address, from_name, "to", cc, subject, received_at, text,'
                        " thread_reason, defects, ack_to, created_at) VALUES (1, :mid, 'in',"
                        " '', '', 'Boris@Corp.Example.com', '', '[]', '[]', '', :t, '', '', '',"
                        " :ack_to, :t)"
                    ),
                    {"mid": mid, "ack_to": ack_to, "t": at},
                )
        store.upgrade()
        store.ensure_schema()
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT message_id, ack_from, ack_domain FROM messages ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [
            ("acked@x", "boris@corp.example.com", "corp.example.com"),
            ("not@x", None, None),
        ]
    finally:
        store.engine.dispose()
