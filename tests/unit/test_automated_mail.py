"""Machine-sent mail over one set of fixtures: what automated.py detects, what ackrules.py
decides (whether a message gets an acknowledgement), and what bounces.py reads in a bounce.

Fixtures in tests/fixtures/mail/auto are synthetic but shaped like what Exchange, Gmail,
Yandex, Postfix, Exim, sendmail, Mailman and bulk senders really send.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsupport.ackrules import ACK_RULES, AckContext, AckDecision, ack_decision
from mailsupport.automated import (
    is_auto_reply,
    is_automated,
    is_bounce,
    is_bulk,
    is_loop,
    is_noreply_address,
)
from mailsupport.bounces import BounceInfo, bounce_info
from mailsupport.mail import Inbound
from mailsupport.parsing import parse
from tests.support.paths import MAIL

AUTO = MAIL / "auto"
OURS = frozenset({"support@example.com", "help@example.com"})


def load(name: str) -> Inbound:
    return parse((MAIL / name).read_bytes())


def context(*, reply: bool = False, recent: int = 0, limit: int = 3) -> AckContext:
    return AckContext(
        our_addresses=OURS,
        is_reply_to_existing_ticket=reply,
        recent_acks_to_sender=recent,
        ack_limit=limit,
    )


def message(
    *headers: str,
    subject: str = "Cannot log in",
    sender: str | None = "Anna Petrova <anna@customer.example.org>",
    content_type: str = "text/plain; charset=utf-8",
    body: str = "Hello, I cannot log in since yesterday.\n",
) -> Inbound:
    """A plain customer message, plus raw header lines exactly as given."""
    lines = [f"From: {sender}"] if sender is not None else []
    lines += [
        "To: support@example.com",
        f"Subject: {subject}",
        "Date: Mon, 15 Apr 2024 10:00:00 +0000",
        "Message-ID: <m1@customer.example.org>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        *headers,
    ]
    return parse(("\n".join(lines) + "\n\n" + body).encode("utf-8"))


def rule_for(m: Inbound, ctx: AckContext | None = None) -> str | None:
    return ack_decision(m, ctx or context()).rule


# ------------------------------------------------------------------------------------------
# Every fixture, decided
# ------------------------------------------------------------------------------------------

EXPECTED: dict[str, str | None] = {
    # out-of-office and auto-responders
    "auto/oof_exchange_en.eml": "auto-submitted",
    "auto/oof_exchange2007_en.eml": "auto-reply-headers",
    "auto/oof_outlook_ru.eml": "auto-reply-subject",
    "auto/vacation_gmail.eml": "auto-submitted",
    "auto/autoreply_yandex.eml": "auto-submitted",
    "auto/autoresponder_cpanel.eml": "auto-reply-headers",
    "auto/helpdesk_ack_null_sender.eml": "null-sender",
    "autoreply_outlook.eml": "auto-submitted",
    # bounces and reports
    "auto/bounce_postfix_rfc822.eml": "bounce",
    "auto/bounce_postfix_delayed.eml": "bounce",
    "auto/bounce_exim.eml": "bounce",
    "auto/bounce_sendmail.eml": "bounce",
    "auto/bounce_exchange.eml": "bounce",
    "auto/bounce_gmail.eml": "bounce",
    "bounce_postfix.eml": "bounce",
    "auto/bounce_rfc822_headers.eml": "bounce",
    "auto/read_receipt_outlook.eml": "report",
    "auto/arf_feedback_report.eml": "report",
    "auto/complaint_provider.eml": "report",
    # lists, bulk, system senders, loops
    "auto/list_post_mailman.eml": "bulk",
    "auto/marketing_bulk.eml": "bulk",
    "auto/list_manager_ezmlm.eml": "bulk",
    "auto/list_manager_subscribe.eml": "bulk",
    "auto/list_manager_fml.eml": "bulk",
    "auto/noreply_notification.eml": "noreply-address",
    "auto/loop_instance.eml": "own-address",
    "auto/loop_xloop.eml": "loop",
    # people, who must get an acknowledgement
    "auto/customer_koi8r.eml": None,
    "auto/customer_autoreply_question.eml": None,
    "auto/customer_automatic_replies.eml": None,
    "auto/customer_auto_de.eml": None,
    "auto/customer_auto_submitted_no.eml": None,
    "auto/customer_noreen.eml": None,
    "auto/customer_forwarded_message.eml": None,
}
PEOPLE = [name for name, rule in EXPECTED.items() if rule is None]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_decision(name: str) -> None:
    decision = ack_decision(load(name), context())
    assert decision.rule == EXPECTED[name]
    assert decision.send is (EXPECTED[name] is None)


@pytest.mark.parametrize("path", sorted(AUTO.glob("*.eml")), ids=lambda p: p.name)
def test_auto_fixtures_parse_cleanly(path: Path) -> None:
    # A damaged fixture would test the parser's repairs, not the rules.
    assert parse(path.read_bytes()).defects == ()


def test_every_auto_fixture_has_an_expected_decision() -> None:
    on_disk = {f"auto/{path.name}" for path in AUTO.glob("*.eml")}
    assert on_disk == {name for name in EXPECTED if name.startswith("auto/")}


def test_every_rule_fires_somewhere_in_these_tests() -> None:
    # Fixtures cover the message rules; the context rules and no-address have tests below.
    covered = {rule for rule in EXPECTED.values() if rule} | {
        "no-address",
        "reply-to-ticket",
        "ack-limit",
        # Tested in tests/e2e/test_ack_safety.py, with the store behind the context.
        "reply-to-other-domain",
        "sender-limit",
        "domain-limit",
    }
    assert covered == {rule.name for rule in ACK_RULES}


def test_people_are_not_automated() -> None:
    for name in PEOPLE:
        m = load(name)
        assert not is_automated(m), name
        assert not is_auto_reply(m), name
        assert not is_bounce(m), name
        assert bounce_info(m) is None, name


def test_customer_koi8r_is_read_correctly() -> None:
    # The decision must rest on the real subject, not on mojibake.
    m = load("auto/customer_koi8r.eml")
    assert m.subject == "Не работает оплата картой"
    assert m.from_ is not None and m.from_.name == "Ольга Смирнова"


def test_decision_reasons() -> None:
    assert ack_decision(load("auto/vacation_gmail.eml"), context()) == AckDecision(
        send=False,
        rule="auto-submitted",
        reason="no acknowledgement: Auto-Submitted: auto-replied (auto-submitted)",
    )
    assert ack_decision(load("auto/customer_koi8r.eml"), context()) == AckDecision(
        send=True, rule=None, reason="acknowledge"
    )
    decision = ack_decision(load("auto/oof_exchange2007_en.eml"), context())
    assert decision.reason == (
        "no acknowledgement: X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply "
        "(auto-reply-headers)"
    )
    decision = ack_decision(load("auto/loop_instance.eml"), context())
    assert decision.reason == (
        "no acknowledgement: from our own address support@example.com (own-address)"
    )


def test_reasons_stay_one_short_line() -> None:
    long_value = "x" * 500 + "\u2028tail"
    decision = ack_decision(message(f"X-Autorespond: {long_value}"), context())
    assert decision.rule == "auto-reply-headers"
    assert len(decision.reason) < 140
    assert "\n" not in decision.reason and "tail" not in decision.reason


def test_rules_have_unique_names_and_one_line_descriptions() -> None:
    names = [rule.name for rule in ACK_RULES]
    assert len(names) == len(set(names))
    for rule in ACK_RULES:
        assert rule.description and "\n" not in rule.description
        assert len(rule.description) <= 100


def test_first_matching_rule_wins() -> None:
    # A Postfix bounce is also Auto-Submitted and from a null sender: "bounce" says most.
    assert rule_for(load("bounce_postfix.eml")) == "bounce"
    # Our own address beats everything else it carries.
    assert rule_for(load("auto/loop_instance.eml")) == "own-address"
    # A message-based reason is shown before "reply to an existing ticket".
    assert rule_for(load("autoreply_outlook.eml"), context(reply=True)) == "auto-submitted"


# ------------------------------------------------------------------------------------------
# Header variants
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "automatic"),
    [
        ("auto-replied", True),
        ("Auto-Replied", True),
        ("AUTO-GENERATED", True),
        ("auto-notified", True),
        ('auto-replied; owner-email="anna@customer.example.org"', True),
        ("auto-generated (failure)", True),
        ("auto-replied (vacation (sieve))", True),
        ("", True),  # malformed; people's clients never write the header at all
        ("no", False),
        ("No", False),
        ("NO", False),
        ("No (comment)", False),
        ("no (nested (comment))", False),
        ("(leading comment) no", False),
        ("no; reason=test", False),
        ("  no  ", False),
    ],
)
def test_auto_submitted_values(value: str, automatic: bool) -> None:
    m = message(f"Auto-Submitted: {value}")
    assert rule_for(m) == ("auto-submitted" if automatic else None)
    assert is_auto_reply(m) is automatic


def test_auto_submitted_any_of_several_headers() -> None:
    m = message("Auto-Submitted: no", "Auto-Submitted: auto-replied")
    assert rule_for(m) == "auto-submitted"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("bulk", "bulk"),
        ("Bulk", "bulk"),
        ("junk", "bulk"),
        ("JUNK", "bulk"),
        ("list", "bulk"),
        ("list (mailman)", "bulk"),
        ("auto_reply", "auto-reply-headers"),
        ("Auto_Reply", "auto-reply-headers"),
        ("auto-reply", "auto-reply-headers"),
        ("first-class", None),
        ("normal", None),
        ("urgent", None),
        ("bulky", None),
    ],
)
def test_precedence_values(value: str, rule: str | None) -> None:
    m = message(f"Precedence: {value}")
    assert rule_for(m) == rule
    assert is_bulk(m) is (rule == "bulk")
    assert is_auto_reply(m) is (rule == "auto-reply-headers")


@pytest.mark.parametrize(
    "header",
    [
        "X-Autoreply: yes",
        "X-Autoreply: YES",
        "X-Autorespond: Thank you for your message",
        "X-Autogenerated: Reply",
        "X-Autogenerated: Forward",
        "X-AutoReply-From: anna@customer.example.org",
        "X-Mail-Autoreply: yes",
        "X-Auto-Response-Suppress: All",
        "X-Auto-Response-Suppress: OOF",
        "X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply",
        "X-MS-Exchange-Inbox-Rules-Loop: anna@customer.example.org",
        "X-Loop: anna@customer.example.org",
        "X-Loop: yes",
    ],
)
def test_auto_reply_headers(header: str) -> None:
    m = message(header)
    assert rule_for(m) == "auto-reply-headers"
    assert is_auto_reply(m)


@pytest.mark.parametrize(
    "header",
    [
        "X-Autoreply: no",
        "X-Autoreply: false",
        "X-Autoreply:",
        "X-Auto-Response-Suppress:",  # an empty list suppresses nothing and says nothing
        "X-Auto-Response-Suppress: None",
        "Feedback-ID: 7731:4411:campaign:shopmail",  # marketing tracking, not an auto-reply
        "X-Mailer: AutoReply Pro 2.1",
        "In-Reply-To: <ticket-1.1@support.example.com>",
    ],
)
def test_headers_that_do_not_make_mail_automatic(header: str) -> None:
    m = message(header)
    assert rule_for(m) is None
    assert not is_automated(m)


@pytest.mark.parametrize(
    "header",
    [
        "List-Id: Users <users.lists.example.org>",
        "List-Unsubscribe: <mailto:leave@lists.example.org>",
        "List-Post: <mailto:users@lists.example.org>",
        # List managers' own notices carry only these (issue 16)
        "Mailing-List: contact tools-help@lists.example.org; run by ezmlm",
        "List-Subscribe: <mailto:users-subscribe@lists.example.org>",
        "X-ML-Server: fml [fml 4.0.3 release (20011202/4.0.3)]",
        "X-MLServer: fml [fml 4.0.3 release (20011202/4.0.3)]",
        "X-ML-Info: If you have a question, send e-mail with the body help",
    ],
)
def test_list_headers(header: str) -> None:
    m = message(header)
    assert rule_for(m) == "bulk"
    assert is_bulk(m)


def test_null_sender() -> None:
    assert rule_for(message("Return-Path: <>")) == "null-sender"
    assert rule_for(message("Return-Path: < >")) == "null-sender"
    assert rule_for(message("Return-Path: <anna@customer.example.org>")) is None
    # The topmost Return-Path is the one the final delivery wrote.
    latest_first = message("Return-Path: <anna@customer.example.org>", "Return-Path: <>")
    assert rule_for(latest_first) is None


# ------------------------------------------------------------------------------------------
# Subjects
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Cannot log in",
        "automatic reply: Cannot log in",
        "Autoreply: Cannot log in",
        "Auto-Reply: Cannot log in",
        "Auto Reply",
        "Auto-Response: Cannot log in",
        "Out of Office: Cannot log in",
        "Out of Office AutoReply: Cannot log in",
        "Out of the office",
        "OUT OF OFFICE",
        "Автоответ: Не могу войти",
        "АВТООТВЕТ: Не могу войти",
        "Автоматический ответ: Не могу войти",
        "Нет на месте",
        "Автовідповідь: Не можу увійти",
        "Automatische Antwort: Anmeldung geht nicht",
        "Abwesenheitsnotiz: Anmeldung geht nicht",
        "Réponse automatique : Connexion impossible",
        "Absence du bureau : Connexion impossible",
        "Respuesta automática: No puedo entrar",
        "Risposta automatica: Accesso non riuscito",
        "Resposta automática: Não consigo entrar",
        "Automatisch antwoord: Inloggen lukt niet",
        "Automatyczna odpowiedź: Nie mogę się zalogować",
        "Autosvar: Kan inte logga in",
        "  Automatic reply: leading spaces",
    ],
)
def test_auto_reply_subjects(subject: str) -> None:
    m = message(subject=subject)
    assert rule_for(m) == "auto-reply-subject"
    assert is_auto_reply(m)


@pytest.mark.parametrize(
    "subject",
    [
        "Question about automatic replies",
        "Autoreply settings broken in my account?",
        "Automatic reply settings do not save",
        "Out of office hours phone support?",
        "Out of the office again - need a VPN",
        "Re: Automatic reply: my colleague is away",  # a person answering an auto-reply
        "Fwd: Out of Office: forwarding this odd message",
        "My automatic reply: how do I turn it off?",
        "Auto: Termin zur Inspektion",  # German for car
        "Auto-renewal charged twice",
        "Автоответчик не работает",
        "Нет на месте товара из заказа 1042",
        "Undeliverable: invoices never arrive",
        "",
    ],
)
def test_subjects_people_write(subject: str) -> None:
    m = message(subject=subject)
    assert rule_for(m) is None
    assert not is_auto_reply(m)
    assert not is_bounce(m)


# ------------------------------------------------------------------------------------------
# Senders
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "noreply@codehost.example.com",
        "NoReply@example.com",
        "no-reply@example.com",
        "no_reply@example.com",
        "no.reply@example.com",
        "donotreply@example.com",
        "do-not-reply@example.com",
        "do_not_reply@example.com",
        "DoNotReply@example.com",
        "noreply-billing@example.com",
        "mail-noreply@example.com",
        "noreply+abc123@example.com",
        "MAILER-DAEMON@mx.example.com",
        "mailer-daemon",
        "postmaster@example.org",
        "bounce@example.net",
        "bounces@example.net",
        "users-bounces+support=example.com@lists.example.org",
        "bounce-7731-4411@em.example.net",
        "notification@example.com",
        "notifications@codehost.example.com",
        '"no-reply"@example.com',
    ],
)
def test_noreply_addresses(address: str) -> None:
    assert is_noreply_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "noreen@example.org",
        "norelle@example.org",
        "reply@example.org",
        "replies@example.org",
        "noor.reply@example.org",  # "noor" + "reply" is not "noreply"
        "bouncer@example.org",
        "notify.anna@example.org",
        "daemon@example.org",
        "postmistress@example.org",
        "anna@noreply.example.org",  # only the local part counts
        "anna@example.org",
        "",
    ],
)
def test_people_addresses(address: str) -> None:
    assert not is_noreply_address(address)


def test_noreply_sender_rule_and_noreen() -> None:
    assert rule_for(message(sender="CodeHost <noreply@codehost.example.com>")) == (
        "noreply-address"
    )
    assert rule_for(message(sender="Postmaster <postmaster@customer.example.org>")) == (
        "noreply-address"
    )
    assert rule_for(message(sender="Noreen <noreen@example.org>")) is None


def test_own_address_and_aliases_any_case() -> None:
    assert rule_for(message(sender="Support <Support@Example.COM>")) == "own-address"
    assert rule_for(message(sender="help@example.com")) == "own-address"
    assert rule_for(message(sender="support@example.com.evil.example")) is None
    assert is_loop(message(sender="help@example.com"), OURS)
    assert not is_loop(message(), OURS)


def test_x_loop_naming_us_is_a_loop() -> None:
    for header in (
        "X-Loop: support@example.com",
        "X-Loop: <Help@Example.com>",
        "X-Loop: desk@partner.example.org, support@example.com",
        "X-MS-Exchange-Inbox-Rules-Loop: support@example.com",
    ):
        m = message(header)
        assert rule_for(m) == "loop", header
        assert is_loop(m, OURS), header
    other = message("X-Loop: desk@partner.example.org")
    assert rule_for(other) == "auto-reply-headers"
    assert not is_loop(other, OURS)


def test_no_address_to_answer() -> None:
    assert rule_for(message(sender=None)) == "no-address"
    assert rule_for(message(sender="root")) == "no-address"
    assert rule_for(message(sender="anna@localhost")) == "no-address"
    decision = ack_decision(message(sender=None), context())
    assert decision.reason == "no acknowledgement: no From address (no-address)"


# ------------------------------------------------------------------------------------------
# Context: replies and the sender limit
# ------------------------------------------------------------------------------------------


def test_reply_to_existing_ticket() -> None:
    m = load("auto/customer_koi8r.eml")
    decision = ack_decision(m, context(reply=True))
    assert decision.rule == "reply-to-ticket"
    assert decision.reason == "no acknowledgement: reply to an existing ticket (reply-to-ticket)"
    assert ack_decision(m, context(reply=False)).send


@pytest.mark.parametrize(
    ("recent", "limit", "send"),
    [(0, 3, True), (2, 3, True), (3, 3, False), (7, 3, False), (4, 5, True), (0, 0, False)],
)
def test_ack_limit(recent: int, limit: int, send: bool) -> None:
    decision = ack_decision(load("auto/customer_noreen.eml"), context(recent=recent, limit=limit))
    assert decision.send is send
    assert decision.rule == (None if send else "ack-limit")


def test_ack_limit_default_and_reason() -> None:
    ctx = AckContext(OURS, is_reply_to_existing_ticket=False, recent_acks_to_sender=3)
    assert ctx.ack_limit == 3
    decision = ack_decision(message(), ctx)
    assert decision.reason == (
        "no acknowledgement: sender already got 3 acknowledgement(s) within the window "
        "(limit 3) (ack-limit)"
    )


# ------------------------------------------------------------------------------------------
# Bounces
# ------------------------------------------------------------------------------------------

BOUNCES = {
    "bounce_postfix.eml": BounceInfo(
        original_message_ids=("ticket-58.1@support.example.com",),
        recipients=("no.such.user@example.net",),
        status="5.1.1",
        diagnostic=(
            "550 5.1.1 <no.such.user@example.net>: Recipient address rejected: User unknown"
        ),
        permanent=True,
    ),
    "auto/bounce_postfix_rfc822.eml": BounceInfo(
        original_message_ids=("ticket-70.1@support.example.com",),
        recipients=("j.doe@customer.example.org",),
        status="5.1.1",
        diagnostic=(
            "550 5.1.1 <j.doe@customer.example.org>: Recipient address rejected: "
            "User unknown in virtual mailbox table"
        ),
        permanent=True,
    ),
    "auto/bounce_postfix_delayed.eml": BounceInfo(
        original_message_ids=("ticket-71.3@support.example.com",),
        recipients=("orders@slowshop.example.net",),
        status="4.4.1",
        diagnostic="connect to mx.slowshop.example.net[198.51.100.9]:25: Connection timed out",
        permanent=False,
    ),
    "auto/bounce_exim.eml": BounceInfo(
        original_message_ids=("ticket-72.1@support.example.com",),
        recipients=("m.keller@alpenhof.example.ch",),
        status="5.1.1",
        diagnostic=(
            "550 5.1.1 <m.keller@alpenhof.example.ch>: Recipient address rejected: User unknown"
        ),
        permanent=True,
    ),
    "auto/bounce_sendmail.eml": BounceInfo(
        original_message_ids=("ticket-73.4@support.example.com",),
        recipients=("h.berger@oldcorp.example.org",),
        status="5.2.2",
        diagnostic="552 5.2.2 Mailbox full",
        permanent=True,
    ),
    "auto/bounce_exchange.eml": BounceInfo(
        original_message_ids=("ticket-74.1@support.example.com",),
        recipients=("tomas.novak@northwind.example.com",),
        status="5.1.10",
        diagnostic=(
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
        ),
        permanent=True,
    ),
    # The returned headers labelled message/rfc822-headers, not text/ (issue 16)
    "auto/bounce_rfc822_headers.eml": BounceInfo(
        original_message_ids=("ticket-95.2@support.example.com",),
        recipients=("l.meyer@partner.example.net",),
        status="5.1.1",
        diagnostic="550 5.1.1 mailbox unavailable",
        permanent=True,
    ),
    "auto/bounce_gmail.eml": BounceInfo(
        original_message_ids=("ticket-75.2@support.example.com",),
        recipients=("priya.sharma.design@gmail.example.com",),
        status="5.1.1",
        diagnostic=(
            "550-5.1.1 The email account that you tried to reach does not exist. Please try "
            "550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 "
            "unnecessary spaces. 550 5.1.1 https://support.google.example.com/mail/?p=NoSuchUser"
        ),
        permanent=True,
    ),
}


@pytest.mark.parametrize("name", sorted(BOUNCES))
def test_bounce_info(name: str) -> None:
    m = load(name)
    assert is_bounce(m)
    assert bounce_info(m) == BOUNCES[name]


def test_every_bounce_fixture_has_bounce_info() -> None:
    bounces = {name for name, rule in EXPECTED.items() if rule == "bounce"}
    assert bounces == set(BOUNCES)


@pytest.mark.parametrize(
    "name",
    [name for name, rule in EXPECTED.items() if rule not in ("bounce", None)],
)
def test_automatic_mail_that_is_no_bounce(name: str) -> None:
    # An out-of-office answering our message must never mark that message failed.
    m = load(name)
    assert not is_bounce(m)
    assert bounce_info(m) is None


def test_null_sender_vacation_reply_is_no_bounce() -> None:
    # RFC 3834 asks responders to send from <>; with In-Reply-To set, a careless bounce
    # check would mark our message failed.
    m = message(
        "Return-Path: <>",
        "Auto-Submitted: auto-replied",
        "In-Reply-To: <ticket-9.1@support.example.com>",
        subject="Re: [#9] Cannot log in",
    )
    assert not is_bounce(m)
    assert bounce_info(m) is None
    assert is_auto_reply(m)


@pytest.mark.parametrize(
    ("headers", "sender", "bounce"),
    [
        ((), "Anna <anna@customer.example.org>", False),  # a person's subject
        (("Return-Path: <>",), "Anna <anna@customer.example.org>", True),
        (("Auto-Submitted: auto-replied",), "Anna <anna@customer.example.org>", True),
        ((), "Postmaster <postmaster@customer.example.org>", True),
        ((), "Mail System <MAILER-DAEMON@mx.example.org>", True),
    ],
)
def test_bounce_subject_needs_a_second_sign(
    headers: tuple[str, ...], sender: str, bounce: bool
) -> None:
    m = message(*headers, subject="Undeliverable: [#9] Cannot log in", sender=sender)
    assert is_bounce(m) is bounce


@pytest.mark.parametrize(
    "subject",
    [
        "Undelivered Mail Returned to Sender",
        "Undeliverable: [#9] Cannot log in",
        "Delivery Status Notification (Failure)",
        "Mail delivery failed: returning message to sender",
        "Returned mail: see transcript for details",
        "failure notice",
        "Недоставленное сообщение",
        "Не доставлено: [#9] Не могу войти",
        "Unzustellbar: [#9] Anmeldung",
        "Non remis : [#9] Connexion",
        "No se puede entregar: [#9] Acceso",
        "Non recapitabile: [#9] Accesso",
    ],
)
def test_bounce_subjects_from_a_null_sender(subject: str) -> None:
    m = message("Return-Path: <>", subject=subject)
    assert is_bounce(m)
    assert rule_for(m) == "bounce"


def dsn(recipient_blocks: str, *headers: str, original: str = "") -> Inbound:
    """A multipart/report delivery-status message from a mail system."""
    parts = [
        "--b\nContent-Type: text/plain\n\nDelivery report.\n",
        "--b\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.com\n\n{recipient_blocks}\n",
    ]
    if original:
        parts.append(f"--b\nContent-Type: text/rfc822-headers\n\n{original}\n")
    return message(
        *headers,
        sender="MAILER-DAEMON@mx.example.com",
        subject="Delivery report",
        content_type='multipart/report; report-type=delivery-status; boundary="b"',
        body="".join(parts) + "--b--\n",
    )


def test_success_notice_is_a_report_not_a_bounce() -> None:
    m = dsn("Final-Recipient: rfc822; anna@customer.example.org\nAction: relayed\nStatus: 2.0.0")
    assert not is_bounce(m)
    assert bounce_info(m) is None
    assert rule_for(m) == "report"


def test_bounce_info_falls_back_to_in_reply_to_and_references() -> None:
    m = dsn(
        "Final-Recipient: rfc822; anna@customer.example.org\nAction: failed\nStatus: 5.7.1",
        "In-Reply-To: <ticket-9.2@support.example.com>",
        "References: <ticket-9.1@support.example.com> <ticket-9.2@support.example.com>",
    )
    info = bounce_info(m)
    assert info is not None
    assert info.original_message_ids == (
        "ticket-9.2@support.example.com",
        "ticket-9.1@support.example.com",
    )
    assert info.recipients == ("anna@customer.example.org",)
    assert (info.status, info.permanent) == ("5.7.1", True)


def test_bounce_info_prefers_the_returned_headers_over_references() -> None:
    m = dsn(
        "Final-Recipient: rfc822; anna@customer.example.org\nAction: failed\nStatus: 5.1.1",
        "In-Reply-To: <something-else@example.org>",
        original="From: support@example.com\nMessage-ID: <ticket-9.3@support.example.com>",
    )
    info = bounce_info(m)
    assert info is not None
    assert info.original_message_ids == ("ticket-9.3@support.example.com",)


def test_bounce_info_several_recipients_and_actions() -> None:
    m = dsn(
        "Final-Recipient: rfc822; ok@customer.example.org\nAction: delivered\nStatus: 2.0.0\n\n"
        "Original-Recipient: rfc822; Anna@Customer.example.org\n"
        "Final-Recipient: rfc822; anna@forwarded.example.net\n"
        "Action: failed\nStatus: 4.4.7\nDiagnostic-Code: X-Postfix; delivery time expired\n\n"
        "Final-Recipient: rfc822; bob@customer.example.org\nAction: delayed\nStatus: 4.4.1"
    )
    info = bounce_info(m)
    assert info is not None
    # Only the one that failed; Original-Recipient is what we sent to; a queue that gave up
    # on a 4.x.x status is still a permanent failure (Action: failed).
    assert info.recipients == ("anna@customer.example.org",)
    assert (info.status, info.diagnostic, info.permanent) == (
        "4.4.7",
        "delivery time expired",
        True,
    )


def test_bounce_info_status_from_the_diagnostic_when_status_is_missing() -> None:
    m = dsn(
        "Final-Recipient: rfc822; anna@customer.example.org\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown"
    )
    info = bounce_info(m)
    assert info is not None
    assert (info.status, info.permanent) == ("5.1.1", True)


def test_qmail_plain_text_bounce() -> None:
    body = (
        "Hi. This is the qmail-send program at mail.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<anna@customer.example.org>:\n"
        "Sorry, no mailbox here by that name. (#5.1.1)\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "Return-Path: <support@example.com>\n"
        "From: Example Support <support@example.com>\n"
        "Message-ID: <ticket-9.4@support.example.com>\n"
        "Subject: [#9] Cannot log in\n"
    )
    m = message(
        "Return-Path: <>",
        sender="MAILER-DAEMON@mail.example.net",
        subject="failure notice",
        body=body,
    )
    assert bounce_info(m) == BounceInfo(
        original_message_ids=("ticket-9.4@support.example.com",),
        recipients=(),
        status="5.1.1",
        diagnostic="Sorry, no mailbox here by that name. (#5.1.1)",
        permanent=True,
    )


def test_plain_text_bounce_status_is_not_read_from_an_ip_address() -> None:
    body = (
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. The following address(es) failed:\n\n"
        "  anna@customer.example.org\n"
        "    host mx.customer.example.org [5.1.1.20]\n"
        "    SMTP error from remote mail server after end of data:\n"
        "    554 5.7.1 Message rejected as spam\n"
    )
    m = message(
        "X-Failed-Recipients: anna@customer.example.org",
        sender="Mail Delivery System <Mailer-Daemon@relay.example.com>",
        subject="Mail delivery failed: returning message to sender",
        body=body,
    )
    info = bounce_info(m)
    assert info is not None
    assert (info.status, info.diagnostic) == ("5.7.1", "554 5.7.1 Message rejected as spam")
    assert info.recipients == ("anna@customer.example.org",)


def test_bounce_info_never_names_the_bounce_itself() -> None:
    m = load("bounce_postfix.eml")
    info = bounce_info(m)
    assert info is not None
    assert m.message_id not in info.original_message_ids
