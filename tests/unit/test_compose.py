"""Composing outgoing mail: threading headers, signed Message-IDs, subjects, MIME, safety."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import re
import stat
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from mailsupport.compose import (
    MAX_REFERENCES,
    Composed,
    ComposeError,
    Sender,
    ThreadParent,
    compose,
    quote_text,
    reply_subject,
    thread_headers,
)
from mailsupport.errors import ConfigError
from mailsupport.mail import Address, Inbound
from mailsupport.parsing import parse
from mailsupport.signing import is_our_message_id, load_or_create_secret, make_message_id
from mailsupport.templating import TemplateError, Templates
from mailsupport.threads import tag_pattern_of
from tests.support.mailfactory import make_message

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
SENDER = Sender("Example Support", "support@example.com")
TAG = tag_pattern_of("[#{number}]")
ANNA = Address("Anna Petrova", "anna@customer.example.org")
HOSTILE = "Hi\r\nBcc: victim@example.net"


def customer_message(**kwargs: Any) -> Inbound:
    kwargs.setdefault("body", "Hello, I cannot log in since yesterday.\n\nAnna")
    return parse(make_message(**kwargs))


def build(kind: str = "reply", **kwargs: Any) -> Composed:
    parent = kwargs.pop("parent", ThreadParent.from_inbound(customer_message()))
    args: dict[str, Any] = dict(
        sender=SENDER,
        to=[ANNA],
        ticket_number=5,
        ticket_subject="Cannot log in",
        parent=parent,
        language="en",
        templates=Templates(),
        secret=SECRET,
        now=NOW,
        text="Please try resetting your password." if kind == "reply" else "",
    )
    args.update(kwargs)
    return compose(kind, **args)  # type: ignore[arg-type]


def reparse(composed: Composed) -> tuple[EmailMessage, Inbound]:
    raw = composed.message.as_bytes()
    stdlib = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(stdlib, EmailMessage)
    return stdlib, parse(raw)


def header_lines(raw: bytes) -> list[bytes]:
    """The top-level header block, one entry per line (continuations separate)."""
    return raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


# --- Message-IDs ------------------------------------------------------------------------


def test_our_message_id_is_in_our_domain_and_verifies() -> None:
    composed = build()
    stdlib, inbound = reparse(composed)
    assert stdlib["Message-ID"] == f"<{composed.message_id}>"
    assert inbound.message_id == composed.message_id  # stored without brackets
    assert not composed.message_id.startswith("<")
    assert composed.message_id.endswith("@example.com")
    assert composed.message_id.startswith("20260303100000.")
    assert is_our_message_id(composed.message_id, SECRET, "example.com")
    assert is_our_message_id(f"<{composed.message_id}>", SECRET, "EXAMPLE.com")


def test_message_ids_made_before_are_still_ours() -> None:
    """The token is the first 10 base32 characters of the HMAC-SHA256 of the rest, written
    out independently here: Message-IDs in mail already sent must keep proving a reply."""
    body = "20251103101500.k3xq5bzt2mlfwp7c"
    digest = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
    token = base64.b32encode(digest).decode("ascii")[:10].lower()
    assert is_our_message_id(f"{body}.{token}@example.com", SECRET, "example.com")
    made = make_message_id(SECRET, "example.com")
    local = made.split("@")[0]
    made_body, made_token = local.rsplit(".", 1)
    whole = base64.b32encode(hmac.new(SECRET, made_body.encode(), hashlib.sha256).digest())
    assert made_token == whole.decode("ascii")[:10].lower()


def test_forged_and_tampered_message_ids_fail() -> None:
    ours = make_message_id(SECRET, "example.com")
    body, token = ours.split("@")[0].rsplit(".", 1)

    def flip(c: str) -> str:
        return "a" if c != "a" else "b"

    assert is_our_message_id(ours, SECRET, "example.com")
    assert not is_our_message_id(ours, b"another secret", "example.com")
    assert not is_our_message_id(ours, b"", "example.com")
    assert not is_our_message_id(
        ours.replace("@example.com", "@example.net"), SECRET, "example.com"
    )
    assert not is_our_message_id(
        f"{body[:-1]}{flip(body[-1])}.{token}@example.com", SECRET, "example.com"
    )
    assert not is_our_message_id(
        f"{body}.{token[:-1]}{flip(token[-1])}@example.com", SECRET, "example.com"
    )
    assert not is_our_message_id(f"{body}.{token}0@example.com", SECRET, "example.com")
    assert not is_our_message_id(f"{body}@example.com", SECRET, "example.com")
    assert not is_our_message_id(f"{body}.ünïcödé123@example.com", SECRET, "example.com")
    assert not is_our_message_id("m1@customer.example.org", SECRET, "example.com")
    assert not is_our_message_id("", SECRET, "example.com")


def test_message_ids_are_unique() -> None:
    ids = {make_message_id(SECRET, "example.com", NOW) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"\d{14}\.[a-z2-7]{16}\.[a-z2-7]{10}@example\.com", i) for i in ids)


# --- threading headers ------------------------------------------------------------------


def test_references_are_the_parents_references_then_its_id() -> None:
    parent = customer_message(
        message_id="m3@customer.example.org",
        in_reply_to="<ours2@example.com>",
        references="<m1@customer.example.org> <ours2@example.com>",
    )
    stdlib, inbound = reparse(build(parent=ThreadParent.from_inbound(parent)))
    assert stdlib["In-Reply-To"] == "<m3@customer.example.org>"
    assert stdlib["References"] == (
        "<m1@customer.example.org> <ours2@example.com> <m3@customer.example.org>"
    )
    assert inbound.in_reply_to == ("m3@customer.example.org",)
    assert inbound.references == (
        "m1@customer.example.org",
        "ours2@example.com",
        "m3@customer.example.org",
    )


def test_without_references_a_single_in_reply_to_starts_the_chain() -> None:
    parent = customer_message(message_id="m2@c.example", in_reply_to="<m1@c.example>")
    stdlib, _ = reparse(build(parent=ThreadParent.from_inbound(parent)))
    assert stdlib["In-Reply-To"] == "<m2@c.example>"
    assert stdlib["References"] == "<m1@c.example> <m2@c.example>"


def test_an_in_reply_to_with_several_ids_is_not_copied() -> None:
    parent = customer_message(
        message_id="m3@c.example", in_reply_to="<m1@c.example> <m2@c.example>"
    )
    stdlib, _ = reparse(build(parent=ThreadParent.from_inbound(parent)))
    assert stdlib["References"] == "<m3@c.example>"


def test_a_first_message_is_answered_with_its_id_alone() -> None:
    stdlib, _ = reparse(build())
    assert stdlib["In-Reply-To"] == "<m1@customer.example.org>"
    assert stdlib["References"] == "<m1@customer.example.org>"


def test_a_parent_without_a_message_id_of_its_own_is_not_referenced() -> None:
    parent = customer_message(message_id=None, references="<m0@c.example>")
    assert parent.message_id_generated
    stdlib, _ = reparse(build(parent=ThreadParent.from_inbound(parent)))
    assert "In-Reply-To" not in stdlib
    assert stdlib["References"] == "<m0@c.example>"


def test_without_a_parent_there_are_no_threading_headers() -> None:
    stdlib, _ = reparse(build("closed", parent=None))
    assert "In-Reply-To" not in stdlib and "References" not in stdlib
    assert stdlib["Subject"] == "Cannot log in [#5]"


def test_long_chains_keep_the_first_and_the_last_twenty() -> None:
    chain = tuple(f"m{i}@c.example" for i in range(50))
    parent = ThreadParent(
        "m50@c.example", chain, ("m49@c.example",), "x", "", "a@c.example", None, ""
    )
    in_reply_to, references = thread_headers(parent)
    assert in_reply_to == "m50@c.example"
    assert len(references) == MAX_REFERENCES == 21
    assert references == ("m0@c.example", *(f"m{i}@c.example" for i in range(31, 51)))
    stdlib, inbound = reparse(build(parent=parent))
    assert inbound.references == references
    assert stdlib["References"] == " ".join(f"<{i}>" for i in references)


def test_duplicates_and_our_made_up_ids_leave_the_chain() -> None:
    parent = ThreadParent(
        "m3@c.example",
        ("m1@c.example", "m1@c.example", "m3@c.example", "h123@long-id.invalid", "m2@c.example"),
        (), "x", "", "a@c.example", None, "",
    )  # fmt: skip
    assert thread_headers(parent) == (
        "m3@c.example",
        ("m1@c.example", "m2@c.example", "m3@c.example"),
    )


def test_long_message_ids_are_folded_between_ids_and_never_encoded() -> None:
    long_ids = [
        "DB9PR01MB1234567890ABCDEF1234567890ABCDEF1234@DB9PR01MB1234.eurprd01.prod.outlook.com",
        "CAHx9Q-very-long-gmail-style-identifier-0123456789abcdefghij@mail.gmail.com",
    ]
    # Built directly: the stdlib (and so tests/support/mailfactory.py) would encode these IDs.
    parent = replace(
        ThreadParent.from_inbound(customer_message()),
        message_id=long_ids[1],
        references=(long_ids[0],),
    )
    composed = build(parent=parent)
    raw = composed.message.as_bytes()
    assert b"=?" not in raw.split(b"\r\n\r\n")[0]
    for line in header_lines(raw):
        assert len(line) <= 998
        if line.startswith((b"References:", b" <")):
            assert len(line) <= 78 or line.count(b"<") == 1  # one ID too long for a line
    _, inbound = reparse(composed)
    assert inbound.in_reply_to == (long_ids[1],)
    assert inbound.references == tuple(long_ids)


# --- subjects ---------------------------------------------------------------------------


def test_the_tag_appears_exactly_once_after_repeated_replies() -> None:
    assert reply_subject("Re: Re: [#5] x [#5]", 5, "[#{number}]", TAG) == "Re: x [#5]"
    subject = "Cannot log in"
    for _ in range(4):
        parent = customer_message(subject=f"RE: {subject}")
        subject = reparse(build(parent=ThreadParent.from_inbound(parent)))[0]["Subject"]
    assert subject == "Re: Cannot log in [#5]"


def test_subject_variants() -> None:
    assert reply_subject("Fwd: AW: Printer [#3]", 5, "[#{number}]", TAG) == "Re: Printer [#5]"
    assert reply_subject("", 5, "[#{number}]", TAG) == "Re: [#5]"
    assert reply_subject("Printer", 5, "[#{number}]", TAG, reply=False) == "Printer [#5]"
    other = tag_pattern_of("(Ticket {number})")
    assert reply_subject("Re: (Ticket 7) Printer", 7, "(Ticket {number})", other) == (
        "Re: Printer (Ticket 7)"
    )
    assert len(reply_subject("x" * 1000, 5, "[#{number}]", TAG)) < 220


def test_a_reply_follows_the_customers_subject_and_falls_back_to_the_ticket() -> None:
    renamed = customer_message(subject="Re: Still cannot log in [#5]")
    stdlib, _ = reparse(build(parent=ThreadParent.from_inbound(renamed)))
    assert stdlib["Subject"] == "Re: Still cannot log in [#5]"
    untitled = customer_message(subject="Re: [#5]")
    stdlib, _ = reparse(build(parent=ThreadParent.from_inbound(untitled)))
    assert stdlib["Subject"] == "Re: Cannot log in [#5]"


def test_a_russian_subject_is_encoded_and_decodes_back_identical() -> None:
    subject = "Не приходит счёт за март — очень длинная тема, которая не помещается в строку"
    parent = customer_message(subject=subject, sender="Иван Смирнов <ivan@example.ru>")
    composed = build(
        parent=ThreadParent.from_inbound(parent),
        to=[Address("Иван Смирнов", "ivan@example.ru")],
        language="ru",
        sender=Sender("Служба поддержки", "support@example.com"),
    )
    raw = composed.message.as_bytes()
    assert raw.isascii()  # RFC 2047 headers, 7-bit bodies: no relay needs 8BITMIME
    lines = header_lines(raw)
    assert max(len(line) for line in lines) <= 998
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    assert len(lines[start + 1]) <= 78 and lines[start + 1].startswith(b" =?utf-8?")
    stdlib, inbound = reparse(composed)
    assert stdlib["Subject"] == inbound.subject == f"Re: {subject} [#5]"
    assert str(stdlib["From"]) == "Служба поддержки <support@example.com>"
    assert inbound.to == (Address("Иван Смирнов", "ivan@example.ru"),)
    assert inbound.text.startswith("Здравствуйте, Иван Смирнов!\n")


# --- automatic-mail headers -------------------------------------------------------------


def test_acknowledgements_say_they_are_automatic() -> None:
    stdlib, _ = reparse(build("ack"))
    assert stdlib["Auto-Submitted"] == "auto-replied"
    assert stdlib["X-Auto-Response-Suppress"] == "All"
    assert "Precedence" not in stdlib


def test_closed_notices_are_auto_generated() -> None:
    stdlib, _ = reparse(build("closed"))
    assert stdlib["Auto-Submitted"] == "auto-generated"
    assert stdlib["X-Auto-Response-Suppress"] == "All"


def test_agent_replies_are_not_marked_automatic() -> None:
    stdlib, _ = reparse(build("reply"))
    assert "Auto-Submitted" not in stdlib
    assert "X-Auto-Response-Suppress" not in stdlib


def test_from_to_cc_and_date() -> None:
    cc = [Address("Boss", "boss@customer.example.org")]
    moscow = timezone(timedelta(hours=3))
    stdlib, inbound = reparse(build(cc=cc, now=datetime(2026, 3, 3, 13, 0, tzinfo=moscow)))
    assert stdlib["From"] == "Example Support <support@example.com>"
    assert stdlib["To"] == "Anna Petrova <anna@customer.example.org>"
    assert stdlib["Cc"] == "Boss <boss@customer.example.org>"
    assert stdlib["Date"].datetime == NOW
    assert inbound.date == NOW


def test_duplicate_recipients_and_our_own_address_are_dropped() -> None:
    composed = build(
        to=[ANNA, Address("", "ANNA@customer.example.org"), Address("Us", "Support@Example.com")],
        cc=[Address("", "anna@customer.example.org"), Address("", "b@c.example")],
    )
    stdlib, _ = reparse(composed)
    assert stdlib["To"] == "Anna Petrova <anna@customer.example.org>"
    assert stdlib["Cc"] == "b@c.example"
    with pytest.raises(ComposeError, match="no one to send"):
        build(to=[Address("", "support@example.com")])


# --- no header injection ----------------------------------------------------------------


def test_cr_lf_in_any_value_never_makes_a_header() -> None:
    parent = replace(
        ThreadParent.from_inbound(customer_message()),
        subject=HOSTILE,
        from_name=HOSTILE,
        text=HOSTILE,
    )
    composed = build(
        parent=parent,
        sender=Sender("Support\r\nBcc: victim@example.net", "support@example.com"),
        to=[Address(HOSTILE, "anna@customer.example.org")],
        cc=[Address("Eve\nBcc: victim@example.net", "eve@example.org")],
        ticket_subject=HOSTILE,
        agent_name="Maria\rBcc: victim@example.net",
        text="Line breaks in the body are only line breaks.",  # so every "Bcc" line counts
        attachments=[(f"{HOSTILE}.pdf", "application/pdf\r\nBcc: victim@example.net", b"%PDF")],
        tag_format="[#{number}]\r\nBcc: victim@example.net",
    )
    raw = composed.message.as_bytes()
    stdlib, inbound = reparse(composed)
    assert "Bcc" not in stdlib
    for part in stdlib.walk():
        assert "Bcc" not in part
    assert not any(line.lower().startswith(b"bcc") for line in raw.split(b"\r\n"))
    assert b"\r\n> Bcc: victim@example.net" in raw  # the quoted text, as text
    assert stdlib["Subject"].startswith("Re: Hi Bcc: victim@example.net")
    assert inbound.attachments[0].filename.startswith("Hi Bcc_ victim@example.net")
    assert inbound.attachments[0].content_type == "application/octet-stream"


@pytest.mark.parametrize(
    "hostile",
    [
        "anna@customer.example.org\r\nBcc: victim@example.net",
        "anna@customer.example.org\nBcc: victim@example.net",
        "anna@customer.example.org, victim@example.net",
        "victim@example.net>",
        "no address",
        "",
    ],
)
def test_a_hostile_address_is_refused(hostile: str) -> None:
    with pytest.raises(ComposeError, match="invalid email address"):
        build(to=[Address("Anna", hostile)])
    with pytest.raises(ComposeError, match="invalid email address"):
        build(cc=[Address("Anna", hostile)])


def test_other_line_breakers_are_neutralised_too() -> None:
    for breaker in ("\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"):
        stdlib, _ = reparse(build(to=[Address(f"Anna{breaker}Bcc: x@y.example", ANNA.address)]))
        assert "Bcc" not in stdlib
        assert stdlib["To"].addresses[0].display_name == "Anna Bcc: x@y.example"


# --- MIME -------------------------------------------------------------------------------


def test_an_ack_is_multipart_alternative_with_escaped_html() -> None:
    composed = build("ack", ticket_subject="<script>alert(1)</script>", parent=None)
    stdlib, inbound = reparse(composed)
    assert stdlib.get_content_type() == "multipart/alternative"
    plain = stdlib.get_body(("plain",))
    html = stdlib.get_body(("html",))
    assert plain is not None and html is not None
    assert '"<script>alert(1)</script>"' in plain.get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.get_content()
    assert "<script>" not in html.get_content()
    assert "MIME-Version" not in plain and "MIME-Version" not in html
    assert inbound.html is not None and "Thank you for contacting us" in inbound.html


def test_a_reply_is_plain_text_with_greeting_signature_and_quote() -> None:
    parent = customer_message(
        body="Hello, I cannot log in since yesterday.\n\nAnna\n\n"
        "On Mon, 2 Mar 2026 at 08:00, Example Support <support@example.com> wrote:\n"
        "> Our earlier answer\n> with two lines\n",
    )
    composed = build(parent=ThreadParent.from_inbound(parent), agent_name="Maria")
    stdlib, _ = reparse(composed)
    assert stdlib.get_content_type() == "text/plain"
    assert stdlib.get_content_charset() == "utf-8"
    assert stdlib.get_content() == composed.text.replace("\n", "\r\n")
    assert composed.text == (
        "Hello Anna Petrova,\n\n"
        "Please try resetting your password.\n\n"
        "-- \nMaria\nExample Support\n\n"
        "On 2 March 2026 at 09:00 UTC, Anna Petrova wrote:\n"
        "> Hello, I cannot log in since yesterday.\n>\n> Anna\n"
    )


def test_attachments_make_multipart_mixed_and_survive() -> None:
    data = bytes(range(256)) * 10
    composed = build(
        attachments=[
            ("счёт за март.pdf", "application/pdf", data),
            ("../../etc/passwd", "text/plain", b"root"),
            ("mail.eml", "message/rfc822", b"Subject: x\r\n\r\nbody"),
        ]
    )
    stdlib, inbound = reparse(composed)
    assert stdlib.get_content_type() == "multipart/mixed"
    assert [(a.filename, a.content_type, a.data) for a in inbound.attachments] == [
        ("счёт за март.pdf", "application/pdf", data),
        ("passwd", "text/plain", b"root"),
        ("mail.eml", "application/octet-stream", b"Subject: x\r\n\r\nbody"),
    ]
    assert inbound.text.startswith("Hello Anna Petrova,")


def test_long_lines_and_bare_cr_in_the_agents_text() -> None:
    text = "word " * 100 + "\r\nnext\rline\x00"
    composed = build(text=text)
    raw = composed.message.as_bytes()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert "word " * 100 + "\nnext\nline\n\n-- " in composed.text
    _, inbound = reparse(composed)
    assert "\nnext\nline\n" in inbound.text and "\x00" not in inbound.text


# --- templates and failures -------------------------------------------------------------


def test_a_template_from_the_users_dir_is_used(tmp_path: Path) -> None:
    (tmp_path / "ack.en.txt").write_text("We have your mail, {{ customer_name }}: {{ ticket_tag }}")
    (tmp_path / "ack.en.html").write_text("")
    composed = build("ack", templates=Templates(tmp_path))
    stdlib, _ = reparse(composed)
    assert stdlib.get_content_type() == "text/plain"
    assert stdlib.get_content() == "We have your mail, Anna Petrova: [#5]\r\n"


def test_a_misspelt_variable_stops_the_mail_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ack.en.txt"
    path.write_text("Hello,\nticket {{ tikcet_number }}\n")
    with pytest.raises(TemplateError) as caught:
        build("ack", templates=Templates(tmp_path))
    assert str(caught.value) == f"template {path}, line 2: 'tikcet_number' is undefined"


def test_a_broken_html_template_stops_the_whole_mail(tmp_path: Path) -> None:
    path = tmp_path / "ack.en.html"
    path.write_text("<p>\n{% if customer_name %}\n")
    with pytest.raises(TemplateError, match=rf"^template {re.escape(str(path))}, line 2: syntax"):
        build("ack", templates=Templates(tmp_path))


def test_invalid_calls() -> None:
    with pytest.raises(ComposeError, match="needs some text"):
        build("reply", text="  \n")
    with pytest.raises(ValueError, match="timezone-aware"):
        build(now=datetime(2026, 3, 3, 10, 0))
    with pytest.raises(ValueError, match="unknown kind"):
        build("bounce")
    with pytest.raises(ValueError, match="secret"):
        make_message_id(b"", "example.com")


# --- quoting ----------------------------------------------------------------------------


def test_quote_drops_the_history_the_customer_quoted() -> None:
    assert quote_text("Thanks!\n\nOn Mon, Bob <\nbob@x.example> wrote:\n> old\n>> older\n") == (
        "> Thanks!"
    )
    assert quote_text("Yes.\n\n-----Original Message-----\nFrom: us\n\nold text") == "> Yes."
    assert quote_text("Да.\n\n-----Исходное сообщение-----\nОт: мы") == "> Да."
    assert quote_text("> only a quote\n> nothing else") == "> > only a quote\n> > nothing else"
    assert quote_text("") == ""


def test_quote_is_trimmed_to_a_sane_length() -> None:
    quoted = quote_text("\n".join(f"line {i}" for i in range(500)))
    assert quoted.splitlines()[-1] == "> [...]"
    assert len(quoted.splitlines()) == 61
    assert quote_text("x" * 10_000) == "> " + "x" * 6000 + "\n> [...]"
    assert quote_text("a\n" + "x" * 10_000).splitlines() == ["> a", "> " + "x" * 5998, "> [...]"]


# --- the secret -------------------------------------------------------------------------


def test_the_secret_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_secret(data_dir, None)
    path = data_dir / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(rb"[0-9a-f]{64}", first)
    assert load_or_create_secret(data_dir, "") == first
    assert load_or_create_secret(data_dir, "  ") == first
    assert [p.name for p in data_dir.iterdir()] == ["secret"]  # no temporary files left


def test_a_configured_secret_wins_and_the_file_content_can_be_configured(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path, "s3cret") == b"s3cret"
    assert not (tmp_path / "secret").exists()
    from_file = load_or_create_secret(tmp_path, None)
    assert load_or_create_secret(tmp_path / "elsewhere", from_file.decode()) == from_file


def test_processes_racing_to_create_the_secret_agree(tmp_path: Path) -> None:
    results: list[bytes] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        results.append(load_or_create_secret(tmp_path, None))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1


def test_an_empty_or_unreadable_secret_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_or_create_secret(tmp_path, None)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(ConfigError, match="MAILSUPPORT_DATA_DIR"):
        load_or_create_secret(blocked, None)


@pytest.mark.parametrize(
    "name, address",
    [
        ("Anna", "anna@example.org"),
        ("Анна Петрова", "anna.petrova+support@mail.example.ru"),
        ("", "o'brien@example.com"),
        ("Bob", "bob@пример.рф"),
        ("Q", '"odd,name"@example.org'),
        ("Q", "a..b@example.org"),
        ("Q", ".lead@example.org"),
        ("L", "user@[192.0.2.1]"),
        ("X", "x@example..org"),
        ("X", "x@-example.org"),
        ("X", "x(comment)@example.org"),
        ("X", "x@exa_mple.org"),
    ],
)
def test_an_address_composed_without_the_parse_is_what_the_parse_gives(
    name: str, address: str
) -> None:
    # Plain addresses skip the stdlib's address parser (most of an address's cost); any
    # address must still come out as the parser reads it, or be refused alike.
    from email import headerregistry
    from email.errors import MessageError

    from mailsupport.compose import _mailbox
    from mailsupport.signing import ascii_domain

    local, _, domain = address.rpartition("@")
    try:
        parsed = headerregistry.Address(
            display_name=name, addr_spec=f"{local}@{ascii_domain(domain)}"
        )
    except (ValueError, IndexError, MessageError, ComposeError):
        with pytest.raises(ComposeError):
            _mailbox(name, address)
        return
    made = _mailbox(name, address)
    assert (made.display_name, made.username, made.domain) == (
        parsed.display_name, parsed.username, parsed.domain,
    )  # fmt: skip
    assert str(made) == str(parsed)
