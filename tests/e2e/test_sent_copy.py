"""Copies of sent mail in an IMAP folder (MAILSUPPORT_IMAP_SENT_FOLDER), against real servers:
aiosmtpd for SMTP, pymap and Dovecot for IMAP, and a real database.

A copy is a convenience: it never changes what counts as sent, and it is made once per
message, when the message is first recorded as sent.
"""

from __future__ import annotations

import email
import email.policy
import logging
import socket
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from imapclient import IMAPClient
from pydantic import SecretStr

import mailsupport.outbox.sentcopies as sent_copies
from mailsupport.config import Settings
from mailsupport.outbox.admin import retry
from mailsupport.outbox.delivery import deliver_due
from mailsupport.store.db import Store
from tests.support.imapservers import ImapServer
from tests.support.outbox import ANNA, T0, at, get, new_ticket, queue
from tests.support.smtpserver import SmtpServer, free_port

SENT = "Sent"


def with_imap(settings: Settings, host: str, port: int, **extra: object) -> Settings:
    return settings.model_copy(
        update={
            "imap_host": host,
            "imap_port": port,
            "imap_user": "support@example.test",
            "imap_password": SecretStr("secret"),
            "imap_security": "none",
            "imap_timeout": 2,
            **extra,
        }
    )


def sent_settings(settings: Settings, server: ImapServer, **extra: object) -> Settings:
    login = {"imap_user": server.user, "imap_password": SecretStr(server.password)}
    return with_imap(
        settings, server.host, server.port, **{**login, "imap_sent_folder": SENT, **extra}
    )


def sent_folder(server: ImapServer) -> list[dict[bytes, object]] | None:
    """What the Sent folder holds (BODY[], FLAGS, INTERNALDATE by UID order), or None when
    the folder does not exist."""
    with server.client() as client:
        if not client.folder_exists(SENT):
            return None
        client.normalise_times = False  # aware datetimes, comparable with T0
        client.select_folder(SENT, readonly=True)
        fetched = client.fetch(client.search(["ALL"]), [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
        return [fetched[uid] for uid in sorted(fetched)]


def message_id(data: object) -> str:
    assert isinstance(data, bytes)
    return str(email.message_from_bytes(data, policy=email.policy.default)["Message-ID"])


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The IMAP connections deliver_due opens (the real connect, only counted)."""
    made: list[str] = []
    real = sent_copies.connect

    def counting(settings: Settings) -> IMAPClient:
        made.append(settings.imap_host)
        return real(settings)

    monkeypatch.setattr(sent_copies, "connect", counting)
    return made


def outbox_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mailsupport.outbox" and r.levelno >= logging.WARNING
    ]


# -- copies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["missing", "existing"])
def test_sent_mail_is_copied_byte_for_byte_seen_and_dated_when_sent(
    folder: str,
    imap_server: ImapServer,
    store: Store,
    smtp_settings: Settings,
    smtp_server: SmtpServer,
    connections: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    if folder == "existing":
        imap_server.create_folder(SENT)
    else:
        assert sent_folder(imap_server) is None
    ticket_id = new_ticket(store)
    ids = [queue(store, ticket_id, f"copy{n}@x.example") for n in range(3)]
    settings = sent_settings(smtp_settings, imap_server)

    assert deliver_due(store, settings, at(T0)) == Counter(sent=3)

    copies = sent_folder(imap_server)
    assert copies is not None
    assert [c[b"BODY[]"] for c in copies] == [get(store, i).data for i in ids]
    assert [message_id(c[b"BODY[]"]) for c in copies] == [f"<copy{n}@x.example>" for n in range(3)]
    assert [smtp_server.arrivals[n].data for n in range(3)] == [c[b"BODY[]"] for c in copies]
    assert all(b"\\Seen" in c[b"FLAGS"] for c in copies)  # type: ignore[operator]
    assert all(c[b"INTERNALDATE"] == T0 for c in copies)
    assert len(connections) == 1  # one IMAP connection for the whole run
    assert outbox_warnings(caplog) == []

    # A run with nothing due makes no connection and no copy.
    assert deliver_due(store, settings, at(T0 + timedelta(hours=1))) == Counter()
    assert len(connections) == 1
    assert len(sent_folder(imap_server) or []) == 3


def test_failed_and_waiting_mail_is_not_copied(
    imap_server: ImapServer, store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    queue(store, ticket_id, "refused@example.com", ["gone@example.org"])
    queue(store, ticket_id, "grey@example.com", ["grey@example.org"])
    settings = sent_settings(smtp_settings, imap_server)
    smtp_server.refuse_each(
        {"gone@example.org": "550 5.1.1 No such user", "grey@example.org": "451 4.7.1 Later"}
    )
    assert deliver_due(store, settings, at(T0)) == Counter(failed=1, retry=1)
    assert sent_folder(imap_server) is None  # nothing was sent: not even a connection

    ok_id = queue(store, new_ticket(store), "ok@example.com")  # not behind the waiting one
    assert deliver_due(store, settings, at(T0 + timedelta(minutes=1))) == Counter(sent=1, retry=1)
    copies = sent_folder(imap_server) or []
    assert [message_id(c[b"BODY[]"]) for c in copies] == ["<ok@example.com>"]
    assert copies[0][b"BODY[]"] == get(store, ok_id).data


def test_a_message_is_copied_once_when_it_first_counts_as_sent(
    imap_server: ImapServer, store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    busy, gone = "busy@example.org", "gone@example.org"
    item_id = queue(store, ticket_id, "once@example.com", [ANNA, busy, gone])
    settings = sent_settings(smtp_settings, imap_server)

    # Anna has it, busy waits: still queued, so no copy yet.
    smtp_server.refuse_each({busy: "450 4.2.1 Mailbox busy", gone: "550 5.1.1 No such user"})
    assert deliver_due(store, settings, at(T0)) == Counter(retry=1)
    assert sent_folder(imap_server) is None

    # Busy takes it: sent now, copied now, dated now.
    smtp_server.refuse_each({gone: "550 5.1.1 No such user"})
    later = T0 + timedelta(hours=1)
    assert deliver_due(store, settings, at(later)) == Counter(sent=1)
    [copy] = sent_folder(imap_server) or []
    assert copy[b"INTERNALDATE"] == later

    # `outbox retry` for the refused recipient sends again, but the folder has its copy.
    smtp_server.accept()
    with store.write() as session:
        retry(session, item_id, later + timedelta(days=1))
    assert deliver_due(store, settings, at(later + timedelta(days=1))) == Counter(sent=1)
    assert get(store, item_id).recipient_status[gone] == "sent"
    assert len(sent_folder(imap_server) or []) == 1


# -- the IMAP server is a convenience -----------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A port that accepts TCP connections and never says a word (a hung server)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield "127.0.0.1", sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("trouble", ["refused", "silent", "bad-login"])
def test_imap_trouble_warns_once_and_delivery_counts_stand(
    trouble: str,
    pymap_server: ImapServer,
    silent_server: tuple[str, int],
    store: Store,
    smtp_settings: Settings,
    smtp_server: SmtpServer,
    connections: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticket_id = new_ticket(store)
    ids = [queue(store, ticket_id, f"down{n}@example.com") for n in range(3)]
    settings: Settings
    if trouble == "refused":  # nothing listens there
        settings = with_imap(smtp_settings, "127.0.0.1", free_port(), imap_sent_folder=SENT)
    elif trouble == "silent":  # no greeting within IMAP_TIMEOUT
        settings = with_imap(smtp_settings, *silent_server, imap_sent_folder=SENT, imap_timeout=1)
    else:
        settings = sent_settings(smtp_settings, pymap_server, imap_password=SecretStr("wrong"))

    assert deliver_due(store, settings, at(T0)) == Counter(sent=3)

    assert [get(store, i).status for i in ids] == ["sent"] * 3
    assert smtp_server.count("down0@example.com") == 1
    [warning] = outbox_warnings(caplog)  # one line for the run, not one per message
    assert f"no copies in IMAP folder {SENT!r} this run" in warning
    assert "\n" not in warning
    assert len(connections) == 1  # and one attempt, not one per message
    assert sent_folder(pymap_server) is None
    # Nothing is resent to make up for the lost copies.
    assert deliver_due(store, settings, at(T0 + timedelta(hours=1))) == Counter()


def test_a_sent_folder_without_an_imap_host_warns_and_sends(
    store: Store,
    smtp_settings: Settings,
    connections: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue(store, new_ticket(store), "nohost@example.com")
    settings = smtp_settings.model_copy(update={"imap_sent_folder": SENT})
    assert deliver_due(store, settings, at(T0)) == Counter(sent=1)
    [warning] = outbox_warnings(caplog)
    assert "MAILSUPPORT_IMAP_HOST is not" in warning
    assert connections == []


def test_no_sent_folder_means_no_imap_connection(
    store: Store,
    smtp_settings: Settings,
    connections: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # IMAP is configured (for polling), on a port that would notice a visit; copies are off.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        settings = with_imap(smtp_settings, "127.0.0.1", listener.getsockname()[1])
        assert settings.imap_sent_folder == ""
        queue(store, new_ticket(store), "quiet@example.com")
        assert deliver_due(store, settings, at(T0)) == Counter(sent=1)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    assert connections == []
    assert outbox_warnings(caplog) == []
