"""Copies of sent mail in the IMAP Sent folder (MAILSUPPORT_IMAP_SENT_FOLDER), so mail
clients on the support mailbox show the desk's answers. See the outbox package's notes for
when a copy is made and why it is never retried."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from mailsupport.config import Settings
from mailsupport.imapconn import connect, ensure_folder
from mailsupport.outbox.queue import load_data
from mailsupport.store.db import Store

if TYPE_CHECKING:
    from imapclient import IMAPClient

log = logging.getLogger("mailsupport.outbox")


class SentCopies:
    """APPENDs each newly sent message to IMAP_SENT_FOLDER over one connection per run.

    Never raises: delivery is recorded before a copy is attempted, and a copy must neither
    stop the batch nor make anything look unsent. The first connection-level failure logs one
    warning and ends the copies for this run; a refused APPEND skips only that message.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.imap_sent_folder
        self.active = bool(self.folder)
        self._client: IMAPClient | None = None

    def add(self, store: Store, item_id: int, message_id: str, sent_at: datetime) -> None:
        if not self.active:
            return
        where = f"outbox item {item_id} <{message_id}>"
        try:
            client = self._connection()
        except Exception as error:  # whatever it is, delivery goes on
            self._give_up(f"no copies in IMAP folder {self.folder!r} this run: {_text(error)}")
            return
        if client is None:
            return
        # Imported here, like the connection itself: runs without a Sent folder never load it.
        from imaplib import IMAP4

        try:
            data = load_data(store, item_id)
            client.append(self.folder, data, flags=(b"\\Seen",), msg_time=sent_at)
        except IMAP4.abort as error:  # the connection broke: the rest would fail too
            self._give_up(f"{where}: no copy in IMAP folder {self.folder!r}: {_text(error)}")
        except IMAP4.error as error:  # a tagged NO/BAD: this message only (size, quota...)
            log.warning("%s: no copy in IMAP folder %r: %s", where, self.folder, _text(error))
        except Exception as error:  # timeouts, resets; a copy is optional
            self._give_up(f"{where}: no copy in IMAP folder {self.folder!r}: {_text(error)}")
        else:
            log.info("%s: copied to IMAP folder %s", where, self.folder)

    def _connection(self) -> IMAPClient | None:
        if self._client is not None:
            return self._client
        if not self.settings.imap_host:
            self._give_up(
                "MAILSUPPORT_IMAP_SENT_FOLDER is set but MAILSUPPORT_IMAP_HOST is not: "
                "no copies of sent mail are kept"
            )
            return None
        self._client = connect(self.settings)  # closed by _give_up if what follows fails
        ensure_folder(self._client, self.folder)
        return self._client

    def _give_up(self, message: str) -> None:
        log.warning("%s", message)
        self.active = False
        self.close()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # a polite LOGOUT is optional
            with contextlib.suppress(Exception):
                client.shutdown()


def _text(error: BaseException) -> str:
    """One line for a warning; imaplib puts the server's reply in as bytes."""
    first = error.args[0] if error.args else None
    text = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(error)
    return " ".join(text.split()) or type(error).__name__
