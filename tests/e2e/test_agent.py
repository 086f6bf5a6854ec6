"""Agents' commands through typer's CliRunner (and the main path as a real process), with
mail going to a real SMTP server on loopback and answers coming back through the pipeline
or the IMAP poller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem, Ticket, TicketEvent, TicketTag
from tests.support.cli import cli
from tests.support.desk import parsed, take
from tests.support.imapservers import ImapServer
from tests.support.mailboxes import imap_env, poll
from tests.support.mailfactory import make_message
from tests.support.paths import ROOT
from tests.support.smtpserver import SmtpServer

ANNA = "anna@customer.example.org"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def env(smtp_env: dict[str, str]) -> dict[str, str]:
    return {**smtp_env, "MAILSUPPORT_AGENT": "Maria", "MAILSUPPORT_ACK_LIMIT": "0"}


def customer_ticket(settings: Settings, store: Store) -> int:
    return take(
        settings,
        store,
        make_message(
            "q1@customer.example.org",
            subject="Не приходит счёт",
            cc="Boris <boris@customer.example.org>",
            body="Здравствуйте! Счёт за март не пришёл.",
        ),
    )


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def events(store: Store, action: str | None = None) -> list[TicketEvent]:
    query = select(TicketEvent).order_by(col(TicketEvent.id))
    if action:
        query = query.where(TicketEvent.action == action)
    with store.read() as session:
        return list(session.exec(query).all())


def ticket_row(store: Store, number: int) -> Ticket:
    with store.read() as session:
        return session.exec(select(Ticket).where(Ticket.number == number)).one()


def outbox(store: Store) -> list[OutboxItem]:
    with store.read() as session:
        return list(session.exec(select(OutboxItem).order_by(col(OutboxItem.id))).all())


# ------------------------------------------------------------------------------------------
# reply
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reply_goes_out_threaded_tagged_and_to_everyone_on_the_ticket(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    result = cli(env, "reply", str(number), "-m", "Проверили: счёт отправлен повторно.")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "sent"

    [arrival] = smtp_server.arrivals
    assert sorted(arrival.rcpt_tos) == ["anna@customer.example.org", "boris@customer.example.org"]
    mail = parsed(arrival.data)
    assert mail["Subject"] == f"Re: Не приходит счёт [#{number}]"
    assert mail["In-Reply-To"] == "<q1@customer.example.org>"
    assert mail["References"] == "<q1@customer.example.org>"
    assert mail["To"] == f"Anna Petrova <{ANNA}>"
    assert mail["Cc"] == "Boris <boris@customer.example.org>"
    assert "Auto-Submitted" not in mail  # a person wrote it
    text = body(mail)
    assert "Проверили: счёт отправлен повторно." in text
    assert "> Здравствуйте! Счёт за март не пришёл." in text  # the customer's message quoted

    t = ticket_row(store, number)
    assert t.status == "pending"  # answered: waiting for the customer (MAILSUPPORT_REPLY_STATUS)
    [replied] = events(store, "replied")
    assert replied.actor == "Maria" and "anna@customer.example.org" in replied.detail
    with store.read() as session:
        ours = session.exec(select(Message).where(Message.direction == "out")).one()
    assert ours.author == "Maria" and ours.message_id in mail["Message-ID"]


@pytest.mark.slow
def test_the_customers_answer_to_a_reply_comes_back_into_the_ticket_through_imap(
    env: dict[str, str],
    settings: Settings,
    store: Store,
    smtp_server: SmtpServer,
    pymap_server: ImapServer,
) -> None:
    mailbox_env = imap_env(env, pymap_server)
    assert poll(mailbox_env).exit_code == 0  # the first poll starts the ledger
    pymap_server.append(make_message("first@customer.example.org", subject="Printer offline"))
    assert "new tickets 1" in poll(mailbox_env).output
    assert cli(mailbox_env, "reply", "1", "-m", "Please restart it.", "--pending").exit_code == 0
    ours = parsed(smtp_server.arrivals[0].data)
    assert ticket_row(store, 1).status == "pending"

    # The customer's client keeps the References and drops our tag from the subject.
    answer = make_message(
        "answer@customer.example.org",
        subject="Re: Printer offline",
        in_reply_to=str(ours["Message-ID"]),
        references=f"{ours['References']} {ours['Message-ID']}",
        body="Restarted, it works now.",
    )
    pymap_server.append(answer)
    result = poll(mailbox_env)
    assert "threaded replies 1" in result.output, result.output
    with store.read() as session:
        rows = session.exec(select(Message.ticket_id, Message.direction)).all()
    assert len({ticket for ticket, _ in rows}) == 1 and len(rows) == 3
    assert ticket_row(store, 1).status == "open"  # the customer answered: back to the agents


EDITOR = textwrap.dedent(
    """
    import sys, pathlib
    path = pathlib.Path(sys.argv[1])
    draft = path.read_text(encoding="utf-8")
    pathlib.Path({seen!r}).write_text(draft, encoding="utf-8")
    path.write_text({text!r} + draft, encoding="utf-8")
    sys.exit({status})
    """
)


def editor(tmp_path: Path, text: str, status: int = 0) -> tuple[str, Path]:
    script = tmp_path / f"editor{abs(hash((text, status)))}.py"
    seen = tmp_path / "draft.seen"
    script.write_text(EDITOR.format(text=text, status=status, seen=str(seen)), encoding="utf-8")
    return f"{sys.executable} {script}", seen


def test_reply_in_the_editor_shows_the_conversation_below_the_marker(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    number = customer_ticket(settings, store)
    command, seen = editor(tmp_path, "Written in the editor.\n\nMaria\n")
    result = cli({**env, "EDITOR": command, "VISUAL": ""}, "reply", str(number))
    assert result.exit_code == 0, result.output
    draft = seen.read_text(encoding="utf-8")
    marker = "# ------------------------ >8 ------------------------"
    assert marker in draft
    below = draft.split(marker, 1)[1]
    assert "Здравствуйте! Счёт за март не пришёл." in below
    assert "Anna Petrova <anna@customer.example.org>" in below
    text = body(parsed(smtp_server.arrivals[0].data))
    assert "Written in the editor.\n\nMaria" in text
    assert marker not in text and "Счёт за март не пришёл." in text  # quoted, not the draft


@pytest.mark.parametrize(("text", "status"), [("  \n\n", 0), ("Half a thought", 1)])
def test_an_empty_text_or_a_failed_editor_sends_nothing(
    text: str,
    status: int,
    env: dict[str, str],
    settings: Settings,
    store: Store,
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    number = customer_ticket(settings, store)
    command, _ = editor(tmp_path, text, status)
    result = CliRunner().invoke(app, ["reply", str(number)], env={**env, "EDITOR": command})
    assert result.exit_code == 1
    assert result.output.strip().startswith("mailsupport: ")
    assert len(result.output.strip().splitlines()) == 1
    assert outbox(store) == [] and smtp_server.arrivals == []
    assert ticket_row(store, number).status == "new"


def test_reply_from_a_file_with_attachments_and_cc_then_close(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    number = customer_ticket(settings, store)
    (tmp_path / "answer.txt").write_text("See the invoice attached.\n", encoding="utf-8")
    (tmp_path / "счёт-март.pdf").write_bytes(b"%PDF-1.4 invoice")
    result = cli(
        env, "reply", str(number), "--file", str(tmp_path / "answer.txt"),
        "--attach", str(tmp_path / "счёт-март.pdf"), "--cc", "Accounts <acc@shop.example.net>",
        "--close",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    mail = parsed(smtp_server.arrivals[0].data)
    assert "acc@shop.example.net" in smtp_server.arrivals[0].rcpt_tos
    [attachment] = list(mail.iter_attachments())
    assert attachment.get_filename() == "счёт-март.pdf"
    assert attachment.get_content() == b"%PDF-1.4 invoice"
    assert ticket_row(store, number).status == "closed"
    shown = cli(env, "show", str(number), "--json")
    messages = json.loads(shown.output)["messages"]
    assert messages[-1]["attachments"][0]["filename"] == "счёт-март.pdf"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["reply", "99", "-m", "hi"], 1, "no ticket #99"),
        (["reply", "1", "-m", "hi", "--close", "--pending"], 2, "choose one of"),
        (["reply", "1", "-m", "hi", "--cc", "not an address"], 2, "not an email address"),
        (["reply", "1", "-m", "hi", "--attach", "/nonexistent/file.pdf"], 2, "cannot read"),
        (["reply", "1", "-m", "hi", "--file", "x.txt"], 2, "not both"),
    ],
)
def test_reply_refuses_bad_input_in_one_line(
    args: list[str], code: int, words: str, env: dict[str, str], settings: Settings, store: Store
) -> None:
    customer_ticket(settings, store)
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == code, result.output
    assert words in result.output and "Traceback" not in result.output
    assert outbox(store) == []


def test_reply_while_smtp_is_down_is_kept_in_the_outbox(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    smtp_server.stop()
    result = cli(env, "reply", str(number), "-m", "We are on it.")
    assert result.exit_code == 0
    assert "not sent yet" in result.output
    [item] = outbox(store)
    assert item.status == "queued" and item.attempts == 1
    smtp_server.start()
    assert cli(env, "outbox", "flush", "--all").exit_code == 0
    assert smtp_server.count(item.message_id) == 1


@pytest.mark.slow
def test_reply_as_a_real_process(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    done = subprocess.run(
        [sys.executable, "-m", "mailsupport", "reply", str(number), "--as", "Oleg", "-m", "Ok."],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "sent"
    assert len(smtp_server.arrivals) == 1
    assert events(store, "replied")[0].actor == "Oleg"


# ------------------------------------------------------------------------------------------
# note, close, reopen, assign, priority, tag
# ------------------------------------------------------------------------------------------


def test_a_note_is_kept_on_the_ticket_and_never_mailed(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    assert cli(env, "note", str(number), "-m", "Customer is on the old plan.").exit_code == 0
    with store.read() as session:
        [row] = session.exec(select(Message).where(Message.direction == "note")).all()
    assert row.author == "Maria" and row.text == "Customer is on the old plan."
    assert outbox(store) == [] and smtp_server.arrivals == []
    assert events(store, "note")[0].actor == "Maria"
    shown = json.loads(cli(env, "show", str(number), "--json").output)
    assert [m["direction"] for m in shown["messages"]] == ["in", "note"]


@pytest.mark.slow
def test_close_sends_the_notice_unless_silent_and_reopen_opens_again(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    result = cli(env, "close", str(number), "-m", "Happy to help.")
    assert result.exit_code == 0, result.output
    assert "closing notice queued" in result.output
    notice = parsed(smtp_server.arrivals[0].data)
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice["In-Reply-To"] == "<q1@customer.example.org>"
    assert "Happy to help." in body(notice)
    assert smtp_server.arrivals[0].rcpt_tos == (ANNA,)  # only the customer
    t = ticket_row(store, number)
    assert t.status == "closed" and t.closed_at is not None

    again = CliRunner().invoke(app, ["close", str(number)], env=env)
    assert again.exit_code == 1 and "closed already" in again.output

    assert cli(env, "reopen", str(number)).exit_code == 0
    assert ticket_row(store, number).status == "open"
    assert CliRunner().invoke(app, ["reopen", str(number)], env=env).exit_code == 1

    silent = cli(env, "close", str(number), "--silent")
    assert "no closing notice (--silent)" in silent.output
    assert len(smtp_server.arrivals) == 1
    actions = [(e.action, e.actor) for e in events(store, "status")]
    assert actions == [("status", "Maria")] * 3


def test_closed_notice_setting_off(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    off = {**env, "MAILSUPPORT_CLOSED_NOTICE": "false"}
    assert "MAILSUPPORT_CLOSED_NOTICE is off" in cli(off, "close", str(number)).output
    assert outbox(store) == []


@pytest.mark.slow
def test_assign_priority_and_tags_are_recorded_with_who_did_it(
    env: dict[str, str], settings: Settings, store: Store
) -> None:
    number = customer_ticket(settings, store)
    n = str(number)
    assert cli(env, "assign", n, "me").output.strip() == f"ticket #{number} assigned to Maria"
    assert cli(env, "assign", n, "Oleg", "--as", "Lead").exit_code == 0
    assert ticket_row(store, number).assignee == "Oleg"
    assert CliRunner().invoke(app, ["assign", n, "Oleg"], env=env).exit_code == 1
    assert cli(env, "assign", n, "none").output.strip() == f"ticket #{number} unassigned"
    assert ticket_row(store, number).assignee is None

    assert cli(env, "priority", n, "urgent").exit_code == 0
    bad = CliRunner().invoke(app, ["priority", n, "asap"], env=env)
    assert bad.exit_code == 2 and "unknown priority 'asap'" in bad.output
    assert ticket_row(store, number).priority == "urgent"

    result = cli(env, "tag", n, "+billing", "Refund", "-missing")
    assert result.output.strip() == f"ticket #{number} tags: billing refund"
    result = cli(env, "tag", n, "-billing", "--as", "Oleg")
    assert result.output.strip() == f"ticket #{number} tags: refund"
    assert CliRunner().invoke(app, ["tag", n, "+two words"], env=env).exit_code == 2
    with store.read() as session:
        assert session.exec(select(TicketTag.tag)).all() == ["refund"]

    history = [(e.actor, e.action, e.detail) for e in events(store) if e.action != "created"]
    assert history == [
        ("Maria", "assigned", "nobody -> Maria"),
        ("Lead", "assigned", "Maria -> Oleg"),
        ("Maria", "assigned", "Oleg -> nobody"),
        ("Maria", "priority", "normal -> urgent"),
        ("Maria", "tags", "+billing +refund"),
        ("Oleg", "tags", "-billing"),
    ]


def test_no_agent_name_anywhere_is_a_usage_error(
    env: dict[str, str], settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = customer_ticket(settings, store)
    monkeypatch.setattr("getpass.getuser", lambda: "")
    result = CliRunner().invoke(
        app, ["assign", str(number), "me"], env={**env, "MAILSUPPORT_AGENT": ""}
    )
    assert result.exit_code == 2 and "MAILSUPPORT_AGENT" in result.output


# ------------------------------------------------------------------------------------------
# merge, and mail to tickets closed long ago
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_merge_moves_everything_and_later_replies_to_either_land_in_the_survivor(
    env: dict[str, str], settings: Settings, store: Store
) -> None:
    first = take(settings, store, make_message("a1@customer.example.org", subject="VPN down"))
    second = take(
        settings, store, make_message("b1@customer.example.org", subject="Still no VPN access")
    )
    assert cli(env, "tag", str(second), "+vpn").exit_code == 0
    result = cli(env, "merge", str(first), str(second))
    assert result.output.strip() == f"ticket #{second} merged into #{first}"
    old = ticket_row(store, second)
    assert old.status == "closed" and old.merged_into_id == ticket_row(store, first).id
    reply = make_message(
        "b2@customer.example.org", subject="Re: Still no VPN access",
        in_reply_to="<b1@customer.example.org>",
    )  # fmt: skip
    assert take(settings, store, reply) == first
    shown = json.loads(cli(env, "show", str(first), "--json").output)
    assert [m["message_id"] for m in shown["messages"]][-1] == "b2@customer.example.org"
    assert len(shown["messages"]) == 3
    with store.read() as session:
        assert session.exec(select(TicketTag.tag)).all() == ["vpn"]
    again = CliRunner().invoke(app, ["merge", str(first), str(second)], env=env)
    assert again.exit_code == 1 and "merged into" in again.output
    itself = CliRunner().invoke(app, ["merge", str(first), str(first)], env=env)
    assert itself.exit_code == 1 and "into itself" in itself.output


@pytest.mark.slow
@pytest.mark.parametrize(("closed_days_ago", "new_ticket"), [(3, False), (30, True)])
def test_mail_to_a_ticket_closed_long_ago_opens_a_new_one_that_follows_it(
    closed_days_ago: int,
    new_ticket: bool,
    env: dict[str, str],
    settings: Settings,
    store: Store,
) -> None:
    desk = settings.model_copy(update={"reopen_days": 7})
    number = take(desk, store, make_message("old@customer.example.org"), T0)
    with store.write() as session:
        t = session.exec(select(Ticket)).one()
        t.status, t.closed_at = "closed", T0
        session.add(t)
    later = T0 + timedelta(days=closed_days_ago)
    answer = make_message(
        "again@customer.example.org", subject="Re: Cannot log in",
        in_reply_to="<old@customer.example.org>", date=later,
    )  # fmt: skip
    landed = take(desk, store, answer, later)
    if new_ticket:
        assert landed != number
        assert ticket_row(store, landed).follows_id == ticket_row(store, number).id
        assert ticket_row(store, number).status == "closed"
        assert any(e.action == "followed" for e in events(store))
    else:
        assert landed == number and ticket_row(store, number).status == "open"


@pytest.mark.slow
def test_reply_with_knowledge_base_articles(
    env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    number = customer_ticket(settings, store)
    kb_env = {**env, "MAILSUPPORT_KB_DIR": str(ROOT / "kb")}
    result = cli(kb_env, "reply", str(number), "-m", "Вот инструкция:", "--kb", "invoices-ru")
    assert result.exit_code == 0, result.output
    text = body(parsed(smtp_server.arrivals[0].data))
    assert text.index("Вот инструкция:") < text.index("Где найти счета и закрывающие документы")

    # In the editor the article is already in place above the marker; saving as is sends it.
    command, seen = editor(tmp_path, "")
    result = cli({**kb_env, "EDITOR": command}, "reply", str(number), "--kb", "vpn-login-ru")
    assert result.exit_code == 0, result.output
    marker = "# ------------------------ >8 ------------------------"
    assert "Не подключается VPN" in seen.read_text(encoding="utf-8").split(marker)[0]
    assert "Не подключается VPN" in body(parsed(smtp_server.arrivals[1].data))

    missing = CliRunner().invoke(app, ["reply", str(number), "-m", "x", "--kb", "nope"], env=kb_env)
    assert missing.exit_code == 1 and "nope" in missing.output
    assert len(smtp_server.arrivals) == 2


# ------------------------------------------------------------------------------------------
# the same actions from a script, through the desk
# ------------------------------------------------------------------------------------------


def test_a_script_works_tickets_by_number_through_the_desk(
    settings: Settings, store: Store
) -> None:
    from mailsupport.desk import Desk
    from mailsupport.errors import NotFoundError, RefusedError

    number = customer_ticket(settings, store)
    other = take(settings, store, make_message("b1@customer.example.org", subject="VPN down"))
    desk = Desk(store, settings, "olga", lambda: datetime.now(UTC))

    assert desk.note(number, "Called the customer.").number == number
    found = desk.conversation(number)
    assert found.ticket.subject == "Не приходит счёт"
    assert [m.direction for m in found.messages] == ["in", "note"]  # oldest first
    draft, people = desk.reply_draft(number)
    assert draft.ticket.number == number and [a.key for a in people.to] == [ANNA]

    assert desk.assign(number, "olga").assignee == "olga"
    assert desk.set_priority(number, "urgent").priority == "urgent"
    t, tags = desk.change_tags(number, ["+billing", "vip"])
    assert t.number == number and tags == ["billing", "vip"]
    closed = desk.close(number)  # committed: the ticket returned is the one stored
    assert closed.ticket.status == ticket_row(store, number).status == "closed"
    assert closed.item_id is None and "not set up" in closed.detail  # no SMTP here
    assert desk.reopen(number).status == "open"
    moved = desk.escalate(number, reason="needs a database fix")
    assert moved.ticket.line == 2 and moved.item_id is None

    assert desk.merge(number, other).number == number
    assert desk.conversation(other).ticket.number == number  # numbers follow merges
    with pytest.raises(RefusedError, match="merged into"):
        desk.merge(number, other)
    with pytest.raises(NotFoundError):
        desk.reopen(999)
    done = {e.action for e in events(store) if e.actor == "olga"}
    assert {"note", "assigned", "priority", "tags", "status", "escalated"} <= done
