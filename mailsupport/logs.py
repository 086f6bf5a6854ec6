"""Log lines without secrets: every command's log and the daemon's go through this.

Light on purpose (no SQLAlchemy): `list` and `show` set up logging too."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote

from mailsupport.config import Settings, database_url_password


class RedactingFormatter(logging.Formatter):
    """Blanks the given secrets out of every formatted line, tracebacks included."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        # Very short "secrets" would blank out ordinary words, and protect nothing anyway.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text


def secrets_of(settings: Settings) -> list[str]:
    """What must never reach a log: the mail passwords, the OAuth2 client secret, the
    Message-ID key (whoever has it can forge our Message-IDs), the database password.
    (OAuth2 tokens are never given to a logger: mailsupport/oauth.)"""
    found = [
        settings.imap_password.get_secret_value(),
        settings.smtp_password.get_secret_value(),
        settings.oauth_client_secret.get_secret_value(),
        settings.secret.get_secret_value(),
    ]
    password = database_url_password(settings.db_url)
    if password:  # as written, and as the driver (and its error messages) decode it
        found += [password, unquote(password)]
    return found


def log_to_stderr(
    settings: Settings,
    level: int | str,
    fmt: str,
    replace: bool = True,
    more_secrets: Iterable[str] = (),
) -> None:
    """One redacting handler on stderr for the root logger, in place of those it has; with
    replace=False only when it has none (as logging.basicConfig would). `more_secrets`
    besides the settings' own: the other mailboxes' passwords."""
    # At DEBUG imapclient copies imaplib's protocol trace to this logger: whole FETCH
    # responses, message bodies included. Never wanted in a log.
    logging.getLogger("imapclient.imaplib").setLevel(logging.INFO)
    # Alembic's INFO lines on a first run (plugin setup, "Context impl SQLiteImpl.", each
    # migration step) are noise even with -v; its warnings stay, and at DEBUG it may speak.
    numeric = (
        level if isinstance(level, int) else logging.getLevelNamesMapping().get(level.upper(), 0)
    )
    quiet = numeric > logging.DEBUG
    logging.getLogger("alembic").setLevel(logging.WARNING if quiet else logging.NOTSET)
    # psycopg warns when a pipeline cannot be ended after the error that ended its block
    # (the connection lost): that error is reported already, in its one line.
    logging.getLogger("psycopg").setLevel(logging.ERROR if quiet else logging.NOTSET)
    root = logging.getLogger()
    if root.handlers and not replace:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, [*secrets_of(settings), *more_secrets]))
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def redact_also(secrets: Iterable[str]) -> None:
    """Blank these out too, in the lines of the root logger's redacting handlers (set up
    before the mailboxes, whose passwords they are, were read)."""
    more = {s for s in secrets if len(s) >= 4}
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if more and isinstance(formatter, RedactingFormatter):
            formatter.secrets = sorted(set(formatter.secrets) | more, key=len, reverse=True)


# -- lines that name their mailbox ------------------------------------------------------------

_current = threading.local()


@contextmanager
def in_mailbox(name: str) -> Iterator[None]:
    """What this thread logs in the block is about mailbox `name` ("" names none)."""
    before = getattr(_current, "mailbox", "")
    _current.mailbox = name
    try:
        yield
    finally:
        _current.mailbox = before


class MailboxPrefix(logging.Filter):
    """Lines logged in a mailbox's thread (in_mailbox) start with `mailbox NAME: `, so that
    the log of a desk with several tells them apart."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(_current, "mailbox", "")
        if name and not getattr(record, "mailbox", ""):
            record.mailbox = name
            record.msg = f"mailbox {name}: {record.msg}"
        return True


def name_mailboxes() -> None:
    """Put MailboxPrefix on the root logger's handlers (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MailboxPrefix) for f in handler.filters):
            handler.addFilter(MailboxPrefix())
