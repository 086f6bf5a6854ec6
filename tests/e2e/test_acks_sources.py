"""Which sources acknowledge: live mail does; history (an import, the IMAP backlog, the
quarantine) only when asked. And a broken template stops poll and daemon before they take
any mail."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.daemon import Daemon
from mailsupport.errors import ConfigError
from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem
from tests.support.acks import desk_settings
from tests.support.cli import cli
from tests.support.daemons import DaemonThread, wait_until
from tests.support.imapservers import DovecotServer, ImapServer
from tests.support.mailboxes import folder_ledger, imap_env, imap_settings, mail, poll
from tests.support.mailfactory import make_message, mbox_file
from tests.support.smtpserver import SmtpServer


@pytest.fixture
def env(smtp_env: dict[str, str]) -> dict[str, str]:
    return smtp_env


def decisions(store: Store) -> dict[str, str]:
    with store.read() as session:
        rows = session.exec(
            select(Message.message_id, Message.ack_decision).where(Message.direction == "in")
        ).all()
    return dict(rows)


def outbox_recipients(store: Store) -> list[str]:
    with store.read() as session:
        items = session.exec(select(OutboxItem).order_by(col(OutboxItem.id))).all()
    return [r for item in items for r in item.recipients]


@pytest.mark.slow
def test_import_acknowledges_only_with_ack(
    env: dict[str, str], store: Store, tmp_path: Path
) -> None:
    history = mbox_file(tmp_path / "old.mbox", make_message("old@customer.example.org"))
    assert cli(env, "import", str(history)).exit_code == 0
    assert decisions(store) == {
        "old@customer.example.org": "no acknowledgement: imported from files "
        "(`mailsupport import --ack` acknowledges)"
    }
    assert outbox_recipients(store) == []

    fresh = mbox_file(
        tmp_path / "fresh.mbox",
        make_message("new@other.example.org", sender="Boris <boris@other.example.org>"),
    )
    assert cli(env, "import", "--ack", str(fresh)).exit_code == 0
    assert decisions(store)["new@other.example.org"].startswith("acknowledged to boris@")
    assert outbox_recipients(store) == ["boris@other.example.org"]

    shown = cli(env, "show", "1")
    assert "[no acknowledgement: imported from files" in shown.output


def test_quarantine_retry_acknowledges_only_with_ack(
    env: dict[str, str], store: Store, tmp_path: Path
) -> None:
    raw = make_message("late@customer.example.org", body="x" * 3000)
    small = {**env, "MAILSUPPORT_MAX_MESSAGE_BYTES": "1000"}
    result = CliRunner().invoke(app, ["ingest"], env=small, input=raw)
    assert result.output.startswith("quarantined: message is ")
    assert cli(env, "quarantine", "retry", "--all").exit_code == 0
    assert decisions(store)["late@customer.example.org"].startswith(
        "no acknowledgement: taken from the quarantine"
    )
    assert outbox_recipients(store) == []


@pytest.mark.slow
def test_poll_acknowledges_new_mail_but_not_the_backlog_and_sends_it(
    pymap_server: ImapServer, env: dict[str, str], store: Store, smtp_server: SmtpServer
) -> None:
    pymap_server.append(mail(1))  # unread before the first poll: history
    settings_env = imap_env(env, pymap_server, imap_start="unseen")
    first = poll(settings_env)
    assert first.exit_code == 0, first.output
    assert decisions(store)["m1@customer.example.org"].startswith(
        "no acknowledgement: it was in the mailbox before mailsupport started reading it"
    )
    assert smtp_server.arrivals == []

    pymap_server.append(mail(2, sender="Boris <boris@other.example.org>"))
    second = poll(settings_env)
    assert second.exit_code == 0, second.output
    assert "outbox: 1 sent" in second.output
    [arrival] = smtp_server.arrivals
    assert arrival.rcpt_tos == ("boris@other.example.org",)
    ack = email.message_from_bytes(arrival.data, policy=email.policy.default)
    assert ack["In-Reply-To"] == "<m2@customer.example.org>"
    assert ack["Subject"] == "Re: Question 2 [#2]"


def broken_templates(tmp_path: Path) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "ack.ru.txt").write_text("Здравствуйте, {{ customer_name }\n", encoding="utf-8")
    return directory


@pytest.mark.slow
def test_poll_with_a_broken_template_exits_2_and_takes_no_mail(
    pymap_server: ImapServer, env: dict[str, str], store: Store, tmp_path: Path
) -> None:
    assert poll(imap_env(env, pymap_server)).exit_code == 0  # the first poll starts the ledger
    settings_env = imap_env(env, pymap_server, templates_dir=str(broken_templates(tmp_path)))
    pymap_server.append(mail(2))
    result = CliRunner().invoke(app, ["poll"], env=settings_env)
    assert result.exit_code == 2
    assert "ack.ru.txt" in result.output and "acknowledgements need working templates" in (
        result.output
    )
    assert "Traceback" not in result.output
    assert decisions(store) == {}  # the new mail waits on the server until the fix

    # Without acknowledgements the same templates stop nothing.
    off = {**settings_env, "MAILSUPPORT_ACK_LIMIT": "0"}
    assert "new tickets 1" in poll(off).output


def test_daemon_with_a_broken_template_stops_at_startup(
    settings: Settings, store: Store, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    desk = desk_settings(settings, smtp_server, templates_dir=str(broken_templates(tmp_path)))

    def no_connection(_: Settings) -> Any:
        raise AssertionError("the daemon connected although its templates are broken")

    daemon = Daemon(desk, store, lambda: datetime.now(UTC), tasks=[], connector=no_connection)
    with pytest.raises(ConfigError, match=r"ack\.ru\.txt"):
        daemon.run()


@pytest.mark.slow
def test_the_daemon_acknowledges_new_mail_at_once_not_at_the_next_outbox_tick(
    dovecot_server: DovecotServer, settings: Settings, smtp_server: SmtpServer
) -> None:
    desk = imap_settings(desk_settings(settings, smtp_server), dovecot_server)
    store = Store.open(desk.db_url)
    daemon = Daemon(desk, store, lambda: datetime.now(UTC))  # the real outbox task, every 30 s
    with DaemonThread(daemon):
        # Mail that is there before the first pass is history (IMAP_START=new): wait for it.
        wait_until(lambda: folder_ledger(store), "the daemon's first pass over the folder")
        dovecot_server.append(mail(1, sender="Boris <boris@other.example.org>"))
        wait_until(lambda: smtp_server.arrivals, "the acknowledgement arrived", timeout=10)
    [arrival] = smtp_server.arrivals
    assert arrival.rcpt_tos == ("boris@other.example.org",)
    store.engine.dispose()
