"""A desk's IMAP mailbox in tests: the settings that point at a test server, a poll, and
what the server holds afterwards."""

from __future__ import annotations

from pydantic import SecretStr
from sqlmodel import select
from typer.testing import Result

from mailsupport.config import Settings
from mailsupport.store.db import Store
from mailsupport.store.models import ImapFolder, Message
from tests.support.cli import cli
from tests.support.imapservers import ImapServer
from tests.support.mailfactory import make_message


def imap_env(env: dict[str, str], server: ImapServer, **extra: str) -> dict[str, str]:
    """The CLI's environment `env` with the mailbox on `server` (plain IMAP, batches of 7);
    `extra` as more MAILSUPPORT_* settings."""
    return {
        **env,
        "MAILSUPPORT_IMAP_HOST": server.host,
        "MAILSUPPORT_IMAP_PORT": str(server.port),
        "MAILSUPPORT_IMAP_USER": server.user,
        "MAILSUPPORT_IMAP_PASSWORD": server.password,
        "MAILSUPPORT_IMAP_SECURITY": "none",
        "MAILSUPPORT_IMAP_BATCH": "7",
        **{f"MAILSUPPORT_{k.upper()}": v for k, v in extra.items()},
    }


def imap_settings(settings: Settings, server: ImapServer, **extra: object) -> Settings:
    """`settings` with the mailbox on `server`, as imap_env() says it."""
    return settings.model_copy(
        update={
            "imap_host": server.host,
            "imap_port": server.port,
            "imap_user": server.user,
            "imap_password": SecretStr(server.password),
            "imap_security": "none",
            "imap_batch": 7,
            **extra,
        }
    )


def poll(env: dict[str, str]) -> Result:
    """`mailsupport poll` once."""
    return cli(env, "poll")


def mid(i: int) -> str:
    """The Message-ID of mail(i)."""
    return f"m{i}@customer.example.org"


def mail(i: int, **kwargs: object) -> bytes:
    """A message with CRLF line ends, as IMAP servers store and return it."""
    raw = make_message(mid(i), subject=f"Question {i}", **kwargs)  # type: ignore[arg-type]
    return raw.replace(b"\n", b"\r\n")


def stored_ids(store: Store) -> list[str]:
    with store.read() as session:
        return sorted(session.exec(select(Message.message_id)).all())


def flags_by_uid(server: ImapServer, folder: str = "INBOX") -> dict[int, set[bytes]]:
    with server.client() as client:
        client.select_folder(folder, readonly=True)
        return {uid: set(f) for uid, f in client.get_flags(client.search(["ALL"])).items()}


def folder_ledger(store: Store) -> ImapFolder | None:
    """What the store records of the polled folder (UIDVALIDITY, last UID); None before a poll."""
    with store.read() as session:
        return session.exec(select(ImapFolder)).first()
