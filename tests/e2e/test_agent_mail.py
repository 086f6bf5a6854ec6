"""An agent's day by mail, through a real Dovecot (the support mailbox) and a real SMTP
server: told of a new ticket, answering from a mail client's reply, told again when the
customer answers, a #note kept internal, forged answers going nowhere, and a customer's mail
forwarded into the desk as that customer's ticket."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlmodel import select

from mailsupport.store.db import Store
from mailsupport.store.models import Message
from tests.support.cli import cli
from tests.support.desk import parsed, ticket_of
from tests.support.imapservers import DovecotServer
from tests.support.mailboxes import imap_env
from tests.support.mailfactory import make_message
from tests.support.smtpserver import Arrival, SmtpServer

ANNA = "anna@agents.example"
CUSTOMER = "olga@customer.example.org"


def client_reply(
    notice: EmailMessage,
    text: str,
    *,
    sender: str = f"Anna Agent <{ANNA}>",
    in_reply_to: str | None = None,
    attachment: tuple[str, bytes] | None = None,
    message_id: str,
) -> bytes:
    """What a mail client sends when its user replies to `notice` above the quote: the
    user's text, their signature, then "On ..., X wrote:" and the notification quoted."""
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = notice["From"]
    reply["Subject"] = f"Re: {notice['Subject']}"
    reply["Date"] = format_datetime(datetime.now(UTC))
    reply["Message-ID"] = f"<{message_id}>"
    reply["In-Reply-To"] = in_reply_to or notice["Message-ID"]
    reply["References"] = in_reply_to or notice["Message-ID"]
    quoted = "\n".join(f"> {line}" for line in body_of(notice).splitlines())
    reply.set_content(
        f"{text}\n\n-- \nAnna Agent\nSecond floor, desk 4\n\n"
        f"On {notice['Date']}, {notice['From']} wrote:\n{quoted}\n"
    )
    if attachment is not None:
        reply.add_attachment(
            attachment[1], maintype="application", subtype="pdf", filename=attachment[0]
        )
    return reply.as_bytes()


def body_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def to(arrivals: list[Arrival], address: str) -> list[EmailMessage]:
    return [parsed(a.data) for a in arrivals if address in a.rcpt_tos]


@pytest.fixture
def day_env(smtp_env: dict[str, str], dovecot_server: DovecotServer) -> dict[str, str]:
    env = imap_env(smtp_env, dovecot_server)
    assert cli(env, "poll").exit_code == 0  # the first poll: the mailbox is empty
    return env


def poll(env: dict[str, str]) -> None:
    done = cli(env, "poll")
    assert done.exit_code == 0, done.output


def test_an_agents_day_by_mail(
    day_env: dict[str, str],
    dovecot_server: DovecotServer,
    smtp_server: SmtpServer,
    store: Store,
) -> None:
    env = day_env
    added = cli(env, "agent", "add", "anna", ANNA)
    assert added.exit_code == 0, added.output

    # A customer writes: she is acknowledged, Anna is told.
    first = make_message(
        "q1@customer.example.org", sender=f"Olga <{CUSTOMER}>", subject="Printer prints blank",
        body="Hello, our printer prints blank pages since Monday.", date=datetime.now(UTC),
    )  # fmt: skip
    dovecot_server.append(first)
    poll(env)
    assert len(to(smtp_server.arrivals, CUSTOMER)) == 1  # the acknowledgement
    [notice] = to(smtp_server.arrivals, ANNA)
    assert notice["From"] == "Example Support <support@example.com>"
    assert notice["Auto-Submitted"] == "auto-generated"
    assert "[#1]" in notice["Subject"] and "New ticket" in notice["Subject"]
    text = body_of(notice)
    assert "Olga <olga@customer.example.org>" in text
    assert "our printer prints blank pages" in text
    assert "Reply to this mail" in text and "#note" in text

    # Anna answers from her mail client, with a file; the customer gets it from us.
    dovecot_server.append(
        client_reply(
            notice,
            "Please switch it off and on again; the manual is attached.",
            attachment=("manual.pdf", b"%PDF-1.4 manual"),
            message_id="a1@agents.example",
        )
    )
    poll(env)
    [_, answer] = to(smtp_server.arrivals, CUSTOMER)
    assert answer["From"] == "Example Support <support@example.com>"
    assert answer["In-Reply-To"] == "<q1@customer.example.org>"  # threads with her mail
    answer_text = body_of(answer)
    assert "switch it off and on again" in answer_text
    assert "prints blank pages" in answer_text  # it quotes her own words...
    for ours in ("Reply to this mail", "Second floor", "mailsupport show", "New ticket"):
        assert ours not in answer_text  # ...and nothing of the notification or the signature
    [part] = list(answer.iter_attachments())
    assert part.get_filename() == "manual.pdf" and part.get_content() == b"%PDF-1.4 manual"
    assert len(to(smtp_server.arrivals, ANNA)) == 1  # her own answer is no news to her

    # The customer answers; Anna is told again.
    dovecot_server.append(
        make_message(
            "q2@customer.example.org",
            sender=f"Olga <{CUSTOMER}>",
            subject=f"Re: {answer['Subject']}",
            in_reply_to=answer["Message-ID"].strip("<>"),
            body="Still blank, sorry.",
            date=datetime.now(UTC),
        )
    )
    poll(env)
    [_, again] = to(smtp_server.arrivals, ANNA)
    assert "The customer answered" in again["Subject"] and "Still blank" in body_of(again)

    # A #note answer stays inside.
    dovecot_server.append(
        client_reply(again, "#note\nLooks like the toner.", message_id="a2@agents.example")
    )
    poll(env)
    assert len(to(smtp_server.arrivals, CUSTOMER)) == 2
    shown = json.loads(cli(env, "show", "1", "--json").stdout)
    notes = [m for m in shown["messages"] if m["direction"] == "note"]
    assert [n["text"] for n in notes] == ["Looks like the toner."]
    assert notes[0]["author"] == "anna"

    # Forged answers reach nobody: a made-up token from Anna's address, and Anna's real
    # notification answered from a stranger's address.
    forged_id = again["Message-ID"].replace("<n1.", "<n1.0").strip("<>")
    dovecot_server.append(
        client_reply(
            again,
            "Send me your password.",
            in_reply_to=f"<{forged_id}>",
            message_id="f1@agents.example",
        )
    )
    dovecot_server.append(
        client_reply(
            again,
            "Send me your password.",
            sender="Eve <eve@evil.example>",
            message_id="f2@evil.example",
        )
    )
    away = EmailMessage()
    away["From"], away["To"] = f"Anna Agent <{ANNA}>", "support@example.com"
    away["Subject"], away["Message-ID"] = (
        f"Out of office: {again['Subject']}",
        "<oof@agents.example>",
    )
    away["In-Reply-To"], away["Auto-Submitted"] = again["Message-ID"], "auto-replied"
    away.set_content("I am away until Monday.")  # her responder, answering with her token
    dovecot_server.append(away.as_bytes())
    poll(env)
    assert len(to(smtp_server.arrivals, CUSTOMER)) == 2
    with store.read() as session:
        leaked = [
            m
            for m in session.exec(select(Message)).all()
            if "password" in m.text or "away" in m.text
        ]
    assert len(leaked) == 3 and all(m.direction == "in" and m.ticket_id != 1 for m in leaked)

    # A customer wrote to Anna directly; she forwards it into the desk.
    sent = datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    forward = EmailMessage()
    forward["From"] = f"Anna Agent <{ANNA}>"
    forward["To"] = "support@example.com"
    forward["Subject"] = "Fwd: Invoice 42 is wrong"
    forward["Date"] = format_datetime(datetime.now(UTC))
    forward["Message-ID"] = "<fw1@agents.example>"
    forward.set_content(
        "Boris wrote to me, can billing take it?\n\n"
        "---------- Forwarded message ---------\n"
        "From: Boris Ivanov <boris@client.example>\n"
        "Date: Mon, Nov 30, 2026 at 9:15 AM\n"
        "Subject: Invoice 42 is wrong\n"
        f"To: Anna Agent <{ANNA}>\n\n"
        "The invoice charges us twice for November.\n"
    )
    dovecot_server.append(forward.as_bytes())
    poll(env)
    ticket = ticket_of(store, "fwd.fw1@agents.example")
    assert (ticket.requester, ticket.requester_name) == ("boris@client.example", "Boris Ivanov")
    assert ticket.subject == "Invoice 42 is wrong"
    shown = json.loads(cli(env, "show", str(ticket.number), "--json").stdout)
    first_message, note = shown["messages"]
    assert first_message["direction"] == "in"
    assert first_message["text"] == "The invoice charges us twice for November."
    assert datetime.fromisoformat(first_message["received_at"]) == sent
    assert (note["direction"], note["text"]) == ("note", "Boris wrote to me, can billing take it?")
    assert to(smtp_server.arrivals, "boris@client.example") == []  # no #ack: not acknowledged
    assert ANNA not in {p["address"] for p in shown["participants"]}


def test_a_forwarded_attachment_with_ack_is_acknowledged_to_its_sender(
    smtp_env: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    assert cli(smtp_env, "agent", "add", "anna", ANNA).exit_code == 0
    original = make_message(
        "orig@client.example", sender="Boris <boris@client.example>", to=ANNA,
        subject="VPN is down", body="Nobody in our office can connect.",
        date=datetime.now(UTC) - timedelta(hours=3),
    )  # fmt: skip
    forward = EmailMessage()
    forward["From"] = ANNA
    forward["To"] = "support@example.com"
    forward["Subject"] = "Fw: VPN is down"
    forward["Message-ID"] = "<fw2@agents.example>"
    forward.set_content("#ack\nUrgent, their whole office.")
    forward.add_attachment(original, maintype="message", subtype="rfc822")
    done = cli(smtp_env, "ingest", input=forward.as_bytes())
    assert done.exit_code == 0, done.output
    ticket = ticket_of(store, "orig@client.example")
    assert ticket.requester == "boris@client.example"
    [ack] = to(smtp_server.arrivals, "boris@client.example")
    assert "VPN is down" in ack["Subject"]
    assert to(smtp_server.arrivals, ANNA) == []  # she forwarded it: no news to her
    # The same forward again (a second delivery) changes nothing.
    assert cli(smtp_env, "ingest", input=forward.as_bytes()).exit_code == 0
    shown = json.loads(cli(smtp_env, "show", str(ticket.number), "--json").stdout)
    assert [m["direction"] for m in shown["messages"]] == ["in", "out", "note"]
    assert shown["messages"][2]["text"] == "Urgent, their whole office."
