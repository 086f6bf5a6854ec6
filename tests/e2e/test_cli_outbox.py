"""`mailsupport outbox list|flush|retry` through typer's CliRunner, against a real SMTP server
on loopback and a real database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from typer.testing import Result

from mailsupport.mail import Address
from mailsupport.outbox import queue as outbox
from mailsupport.store.db import Store
from mailsupport.store.tickets import create_ticket
from tests.support.cli import Run, cli
from tests.support.outbox import get
from tests.support.smtpserver import SmtpServer

ANNA = "anna@customer.example.org"
BOB = "bob@customer.example.org"
SUPPORT = "support@example.com"
JSON_FIELDS = {
    "id", "ticket", "message_id", "kind", "recipients", "recipient_status", "status",
    "attempts", "next_attempt_at", "last_error", "created_at", "sent_at",
}  # fmt: skip


@pytest.fixture
def run(smtp_env: dict[str, str]) -> Run:
    """`mailsupport outbox ARGS`, by default with mail going to the test SMTP server."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        return cli(env or smtp_env, "outbox", *args)

    return invoke


def new_ticket(store: Store) -> tuple[int, int]:
    """A ticket to hang mail on: its id and number."""
    with store.write() as session:
        ticket = create_ticket(session, "Cannot log in", Address("Anna", ANNA), _now())
        assert ticket.id is not None and ticket.number is not None
        return ticket.id, ticket.number


def queue(store: Store, ticket_id: int, message_id: str, recipients: list[str]) -> int:
    message = EmailMessage()
    message["From"] = f"Example Support <{SUPPORT}>"
    message["To"] = ", ".join(recipients)
    message["Subject"] = "Re: Cannot log in"
    message["Message-ID"] = f"<{message_id}>"
    message.set_content("We are on it.\n")
    with store.write() as session:
        return outbox.queue(
            session, ticket_id=ticket_id, kind="reply", message=message, message_id=message_id,
            mail_from=SUPPORT, recipients=recipients, now=_now() - timedelta(minutes=1),
        )  # fmt: skip


def listed(run: Run, *args: str) -> list[dict[str, Any]]:
    result = run("list", "--json", *args)
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert isinstance(items, list)
    return items


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailsupport: ")
    return lines[0]


def last_error_line(result: Result) -> str:
    """The command's own closing line; a delivery run may log WARNING lines before it."""
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("mailsupport: ")
    return line


def _now() -> datetime:
    return datetime.now(UTC)


# -- list ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_list_text_json_and_status_filter(run: Run, store: Store) -> None:
    empty = run("list")
    assert empty.exit_code == 0 and empty.stdout.strip() == "outbox is empty"
    assert listed(run) == []

    ticket_id, number = new_ticket(store)
    first = queue(store, ticket_id, "first@test.example.com", [ANNA, BOB])
    second = queue(store, ticket_id, "second@test.example.com", [ANNA])

    text = run("list")
    assert text.exit_code == 0, text.output
    header, *rows = text.stdout.splitlines()
    assert header.split() == ["ID", "TICKET", "KIND", "STATUS", "TRIES", "NEXT", "ATTEMPT",
                              "RECIPIENTS"]  # fmt: skip
    assert [row.split()[:5] for row in rows] == [
        [str(first), f"#{number}", "reply", "queued", "0"],
        [str(second), f"#{number}", "reply", "queued", "0"],
    ]
    assert rows[0].endswith(f"{ANNA}, {BOB}")

    items = listed(run)
    assert [i["id"] for i in items] == [first, second]  # oldest first
    assert set(items[0]) == JSON_FIELDS
    assert items[0]["ticket"] == number
    assert items[0]["message_id"] == "first@test.example.com"
    assert items[0]["recipients"] == [ANNA, BOB]
    assert items[0]["status"] == "queued" and items[0]["attempts"] == 0
    assert items[0]["next_attempt_at"] is not None and items[0]["sent_at"] is None

    assert listed(run, "--status", "sent") == []
    assert run("list", "--status", "failed").stdout.strip() == "no failed items in the outbox"
    assert [i["id"] for i in listed(run, "--status", "queued")] == [first, second]

    limited = run("list", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 3  # header, one row, the note
    assert "only the latest 1 shown" in limited.stdout
    assert [i["id"] for i in listed(run, "--limit", "1")] == [second]  # the latest, not old mail

    unknown = run("list", "--status", "lost")
    assert unknown.exit_code == 2
    assert "unknown outbox status 'lost'" in one_error_line(unknown)


def test_list_shows_the_last_error_on_one_line(
    run: Run, store: Store, smtp_server: SmtpServer
) -> None:
    ticket_id, _ = new_ticket(store)
    item_id = queue(store, ticket_id, "err@test.example.com", [ANNA])
    smtp_server.refuse_rcpt("550 5.1.1 no such user")
    assert run("flush").exit_code == 1
    _header, row, error = run("list").stdout.splitlines()
    assert row.split()[:5] == [str(item_id), "#1", "reply", "failed", "1"]
    assert row.split()[5] == "-"  # no next attempt for failed mail
    assert error.strip().startswith(f"{ANNA}: 550")


# -- flush -----------------------------------------------------------------------------------


def test_flush_delivers_to_the_smtp_server(run: Run, store: Store, smtp_server: SmtpServer) -> None:
    ticket_id, _ = new_ticket(store)
    item_id = queue(store, ticket_id, "hello@test.example.com", [ANNA, BOB])

    result = run("flush")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "1 sent"
    assert smtp_server.count("hello@test.example.com") == 1
    [arrival] = smtp_server.arrivals
    assert arrival.mail_from == SUPPORT and arrival.rcpt_tos == (ANNA, BOB)
    [item] = listed(run)
    assert item["id"] == item_id and item["status"] == "sent"
    assert item["sent_at"] is not None and item["next_attempt_at"] is None

    again = run("flush")
    assert again.exit_code == 0 and again.stdout.strip() == "nothing to send"
    assert smtp_server.count("hello@test.example.com") == 1


@pytest.mark.parametrize("trouble", ["451 reply", "server down"])
def test_temporary_failure_exits_75_and_flush_all_sends_after_the_fix(
    run: Run, store: Store, smtp_server: SmtpServer, trouble: str
) -> None:
    ticket_id, _ = new_ticket(store)
    item_id = queue(store, ticket_id, "later@test.example.com", [ANNA])
    if trouble == "server down":
        smtp_server.stop()
    else:
        smtp_server.refuse_rcpt("451 4.3.0 try again later")

    failed = run("flush")
    assert failed.exit_code == 75
    assert failed.stdout.strip() == "1 retry"
    assert "nothing sent, 1 item queued for a retry" in last_error_line(failed)
    item = get(store, item_id)
    assert item.status == "queued" and item.attempts == 1
    assert item.next_attempt_at.replace(tzinfo=UTC) > _now()
    [shown] = listed(run)
    assert shown["status"] == "queued" and shown["next_attempt_at"] is not None
    assert ("451" if trouble == "451 reply" else "cannot connect") in shown["last_error"]

    # Not due yet: a plain flush leaves it alone and says when it is due.
    waiting = run("flush")
    assert waiting.exit_code == 0
    assert waiting.stdout.startswith("nothing to send (1 waiting for a retry, the next at ")
    assert get(store, item_id).attempts == 1

    if trouble == "server down":
        smtp_server.start()
    smtp_server.accept()
    fixed = run("flush", "--all")
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stdout.splitlines() == ["1 waiting item made due now", "1 sent"]
    assert smtp_server.count("later@test.example.com") == 1
    assert get(store, item_id).status == "sent"


def test_exit_codes_when_some_mail_goes_out(
    run: Run, store: Store, smtp_server: SmtpServer
) -> None:
    ticket_id, _ = new_ticket(store)
    queue(store, ticket_id, "to-anna@test.example.com", [ANNA])
    queue(store, ticket_id, "to-bob@test.example.com", [BOB])

    # Sent and a retry: the retry takes care of itself.
    smtp_server.refuse_rcpt("452 4.2.2 mailbox full", only=[BOB])
    partly = run("flush")
    assert partly.exit_code == 0, partly.output
    assert partly.stdout.strip() == "1 retry, 1 sent"

    # A permanent failure needs a person, even when other mail went out.
    queue(store, ticket_id, "again-anna@test.example.com", [ANNA])
    smtp_server.refuse_rcpt("550 5.1.1 no such user", only=[BOB])
    failed = run("flush", "--all")
    assert failed.exit_code == 1
    assert failed.stdout.splitlines()[-1] == "1 failed, 1 sent"
    assert "1 item failed for good" in last_error_line(failed)


def test_flush_works_in_rounds_and_stops(
    run: Run, store: Store, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailsupport.cli.outboxcmd.FLUSH_BATCH", 2)
    for n in range(5):  # a ticket each: a ticket's later mail would wait behind its first
        ticket_id, _ = new_ticket(store)
        queue(store, ticket_id, f"round{n}@test.example.com", [ANNA])
    smtp_server.stop()
    down = run("flush")
    assert down.exit_code == 75 and down.stdout.strip() == "5 retry"
    smtp_server.start()
    result = run("flush", "--all")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "5 sent"
    assert len(smtp_server.arrivals) == 5


@pytest.mark.slow
def test_flush_without_smtp_host_exits_2(
    run: Run, store: Store, env_for_cli: dict[str, str]
) -> None:
    ticket_id, _ = new_ticket(store)
    item_id = queue(store, ticket_id, "nohost@test.example.com", [ANNA])
    result = run("flush", env=env_for_cli)
    assert result.exit_code == 2
    assert "MAILSUPPORT_SMTP_HOST is not set" in one_error_line(result)
    assert result.stdout == ""
    item = get(store, item_id)
    assert item.status == "queued" and item.attempts == 0


# -- retry -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_retry_a_failed_item_then_flush_delivers_it(
    run: Run, store: Store, smtp_server: SmtpServer
) -> None:
    ticket_id, number = new_ticket(store)
    item_id = queue(store, ticket_id, "retry@test.example.com", [ANNA])
    smtp_server.refuse_rcpt("550 5.1.1 no such user")
    assert run("flush").exit_code == 1
    [failed] = listed(run, "--status", "failed")
    assert failed["id"] == item_id and "550" in failed["last_error"]
    assert smtp_server.count("retry@test.example.com") == 0

    smtp_server.accept()
    retried = run("retry", str(item_id))
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.strip() == (
        f"outbox item {item_id} for ticket #{number} queued again to {ANNA}"
    )
    assert listed(run, "--status", "failed") == []
    [queued] = listed(run, "--status", "queued")
    assert queued["id"] == item_id

    sent = run("flush")
    assert sent.exit_code == 0 and sent.stdout.strip() == "1 sent"
    assert smtp_server.count("retry@test.example.com") == 1

    done = run("retry", str(item_id))
    assert done.exit_code == 2
    assert "was sent to every recipient already" in one_error_line(done)


def test_retry_an_unknown_item_exits_1(run: Run, store: Store) -> None:
    result = run("retry", "99")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert one_error_line(result) == (
        "mailsupport: no outbox item 99 (see `mailsupport outbox list`)"
    )
