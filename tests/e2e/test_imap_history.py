"""Mail that was in the IMAP folder before the first poll is history: what IMAP_START takes
and what `poll --since` / `--all` takes over later is dated by its own Date, gets no due
times and no acknowledgement, and is taken once. New mail stays work."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from mailsupport.store.db import Store
from mailsupport.store.models import Message, Ticket
from tests.support.acks import acks_in
from tests.support.cli import cli
from tests.support.desk import ticket_of
from tests.support.imapservers import ImapServer
from tests.support.mailboxes import flags_by_uid, imap_env, mail, poll
from tests.support.smtpserver import SmtpServer

A_YEAR_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=365)


def incoming_ids(store: Store) -> list[str]:
    with store.read() as session:
        return sorted(session.exec(select(Message.message_id).where(Message.direction == "in")))


def acknowledged(store: Store) -> list[str]:
    return [r for item in acks_in(store) for r in item.recipients]


def assert_history(ticket: Ticket, written: datetime) -> None:
    assert ticket.created_at.replace(tzinfo=UTC) == written  # its own date, not the poll's
    assert ticket.first_response_due is None and ticket.resolution_due is None


def assert_work(ticket: Ticket) -> None:
    assert ticket.created_at.replace(tzinfo=UTC) > A_YEAR_AGO + timedelta(days=300)
    assert ticket.first_response_due is not None and ticket.resolution_due is not None


@pytest.mark.slow
def test_the_backlog_imap_start_takes_is_history_and_new_mail_is_work(
    pymap_server: ImapServer, smtp_env: dict[str, str], store: Store, smtp_server: SmtpServer
) -> None:
    # Copied to the server today (INTERNALDATE now), written a year ago.
    pymap_server.append(mail(1, date=A_YEAR_AGO))
    env = imap_env(smtp_env, pymap_server, imap_start="all")
    first = poll(env)
    assert first.exit_code == 0, first.output
    assert "read 1, new tickets 1" in first.output and "left" not in first.output
    assert_history(ticket_of(store, "m1@customer.example.org"), A_YEAR_AGO)

    pymap_server.append(mail(2, sender="Boris <boris@other.example.org>"))
    second = poll(env)
    assert second.exit_code == 0, second.output
    assert_work(ticket_of(store, "m2@customer.example.org"))
    assert acknowledged(store) == ["boris@other.example.org"]
    assert len(smtp_server.arrivals) == 1


@pytest.mark.slow
def test_the_first_poll_says_what_it_left_and_a_takeover_takes_it_once(
    pymap_server: ImapServer, smtp_env: dict[str, str], store: Store, smtp_server: SmtpServer
) -> None:
    old_day = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    recent_day = datetime(2025, 11, 3, 14, 0, tzinfo=UTC)
    for i in range(1, 3):  # INTERNALDATE and Date agree: delivered on the day written
        pymap_server.append(mail(i, date=old_day), date=old_day)
    for i in range(3, 5):
        pymap_server.append(mail(i, date=recent_day), flags=[b"\\Seen"], date=recent_day)
    env = imap_env(smtp_env, pymap_server)

    first = poll(env).output
    assert first.startswith("poll INBOX: read 0, new tickets 0,"), first
    assert first.strip().endswith(
        "; left 4 older messages: `mailsupport poll --since DATE` or `mailsupport poll --all` "
        "takes them"
    )
    status = json.loads(cli(env, "status", "--json").output)
    assert status["server"] == {"waiting": 0, "history_left": 4}
    assert "older mail left on the server: 4 messages" in cli(env, "status").output

    new_uid = pymap_server.append(mail(5, sender="Boris <boris@other.example.org>"))
    since = cli(env, "poll", "--since", "2025-01-01")
    assert since.exit_code == 0, since.output
    assert "poll INBOX: read 1, new tickets 1," in since.output
    assert "left" not in since.output  # said once, by the first poll
    assert "older mail, as history: read 2, new tickets 2," in since.output
    assert incoming_ids(store) == [f"m{i}@customer.example.org" for i in (3, 4, 5)]
    status = json.loads(cli(env, "status", "--json").output)
    assert status["server"] == {"waiting": 0, "history_left": 2}

    every = cli(env, "poll", "--all")
    assert every.exit_code == 0, every.output
    assert "older mail, as history: read 2, new tickets 2," in every.output
    again = cli(env, "poll", "--all")
    assert "older mail, as history: read 0," in again.output
    assert json.loads(cli(env, "status", "--json").output)["server"]["history_left"] == 0

    assert len(incoming_ids(store)) == 5
    for i, day in ((1, old_day), (2, old_day), (3, recent_day), (4, recent_day)):
        assert_history(ticket_of(store, f"m{i}@customer.example.org"), day)
    assert_work(ticket_of(store, "m5@customer.example.org"))
    assert acknowledged(store) == ["boris@other.example.org"]  # the new mail's, only
    assert all(b"\\Seen" in flags for flags in flags_by_uid(pymap_server).values())
    assert new_uid == max(flags_by_uid(pymap_server))


@pytest.mark.slow
def test_a_takeover_on_the_very_first_poll_takes_the_history_at_once(
    pymap_server: ImapServer, env_for_cli: dict[str, str], store: Store
) -> None:
    for i in range(1, 4):
        pymap_server.append(mail(i, date=A_YEAR_AGO))
    env = imap_env(env_for_cli, pymap_server)
    first = cli(env, "poll", "--all")
    assert first.exit_code == 0, first.output
    assert "left" not in first.output
    assert "older mail, as history: read 3, new tickets 3," in first.output
    for i in range(1, 4):
        assert_history(ticket_of(store, f"m{i}@customer.example.org"), A_YEAR_AGO)
    assert "read 0," in poll(env).output


def test_poll_takes_since_or_all_not_both_and_a_real_date(env_for_cli: dict[str, str]) -> None:
    both = cli(env_for_cli, "poll", "--all", "--since", "2026-01-01")
    assert both.exit_code == 2 and "not both" in both.output
    wrong = cli(env_for_cli, "poll", "--since", "last week")
    assert wrong.exit_code == 2 and "2026-01-31" in wrong.output
