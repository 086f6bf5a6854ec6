"""The support mailbox's folder over IMAP, as a source: it finds, fetches and marks messages.

It hands messages over and does nothing else: which UIDs to take is decided in
sources/uids.py, and the driver (mailsupport/poll.py) stores them and keeps the folder's
ledger. The connection itself comes from mailsupport/imapconn.py.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailsupport.batching import BATCH_BYTES
from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.imapconn import ensure_folder, reason, server_errors
from mailsupport.parsing.dates import parse_date
from mailsupport.sources import uids as choose

log = logging.getLogger(__name__)

HEADER_BYTES = 256 * 1024  # enough for any real header block
# A batch's messages are fetched this many at a time while the parse workers take them
# (poll.py): they begin on the first ones while the rest come, where one FETCH of the whole
# batch left them idle until all of it was read, and the poll then waited for their first
# parses (a batch's first window: about 6% of a poll's time, measured).
FETCH_CHUNK = 32


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message as the server gave it."""

    uid: int
    raw: bytes
    internal_date: datetime | None

    def written_at(self) -> datetime | None:
        """When the message was written: its Date, or INTERNALDATE when that is earlier (a
        sender's clock ahead) or there is no readable Date. For history: a mailbox copied
        to the server by APPEND often has INTERNALDATE = the day it was copied."""
        written = _date_header(self.raw)
        if written is None or self.internal_date is None:
            return written or self.internal_date
        return min(written, self.internal_date)


class ImapFolderSource:
    """One folder on one logged-in connection. Calls are mapped by the caller's
    `imapconn.server_errors` (network trouble is temporary)."""

    def __init__(self, settings: Settings, client: IMAPClient) -> None:
        self.settings = settings
        self.client = client
        self.folder = settings.imap_folder
        self._known_folders: set[str] = set()  # folders seen to exist on the server
        with server_errors(settings):  # imapclient returns capabilities as bytes
            self.capabilities = {
                c.decode("ascii", "replace").upper() for c in client.capabilities()
            }

    def origin(self, uid: int) -> str:
        """Where a message came from, as raw messages and the quarantine record it."""
        return f"imap:{self.settings.imap_account}/{self.folder};UID={uid}"

    def open(self) -> tuple[int, int]:
        """Select the folder; its UIDVALIDITY and next UID."""
        try:
            selected = self.client.select_folder(self.folder)
        except imaplib.IMAP4.abort:
            raise  # the connection broke: temporary, mapped by server_errors
        except IMAPClientError as error:
            raise ConfigError(
                f"IMAP folder {self.folder!r} cannot be opened: {reason(error)} "
                "(check MAILSUPPORT_IMAP_FOLDER)"
            ) from None
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = int(selected.get(b"UIDNEXT", 0)) or self._max_uid() + 1
        return uidvalidity, uidnext

    def find(self, last_uid: int, backlog_until: int, backlog_search: str) -> list[int]:
        """The UIDs to take after `last_uid`, in order."""
        found: set[int] = set()
        for criteria in choose.searches(last_uid, backlog_until, backlog_search):
            found.update(self.client.search(criteria))
        return choose.to_take(last_uid, found)

    def search(self, criteria: list[Any]) -> list[int]:
        return list(self.client.search(criteria))

    def batches(self, uids: list[int]) -> Iterator[list[int]]:
        """`uids` in batches of at most IMAP_BATCH messages and about BATCH_BYTES."""
        for chunk in choose.chunks(uids):
            fetched = self.client.fetch(chunk, [b"RFC822.SIZE"])
            sizes = {uid: int(fetched.get(uid, {}).get(b"RFC822.SIZE", 0)) for uid in chunk}
            yield from choose.batches(chunk, sizes, self.settings.imap_batch, BATCH_BYTES)

    def fetch(self, uids: list[int]) -> Iterator[tuple[int, Fetched | None]]:
        """Each UID with its message, None for one that is gone; asked for FETCH_CHUNK at a
        time, as the caller reads on."""
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = uids[start : start + FETCH_CHUNK]
            fetched = self.client.fetch(chunk, [b"BODY.PEEK[]", b"INTERNALDATE"])
            for uid in chunk:
                yield uid, self._message(uid, fetched.pop(uid, None))

    def _message(self, uid: int, data: dict[bytes, Any] | None) -> Fetched | None:
        # Left out, or NIL: Dovecot answers so for a message another session expunged
        # since this one last heard (RFC 2180, 4.1.3).
        if data is None or data.get(b"BODY[]") is None:
            data = self._fetch_again(uid)
        if data is None:
            return None
        return Fetched(uid, bytes(data[b"BODY[]"]), _aware(data.get(b"INTERNALDATE")))

    def _fetch_again(self, uid: int) -> dict[bytes, Any] | None:
        """A UID missing from a batch FETCH: expunged by someone else (nothing to take), or a
        server that left it out (some do, now and then): ask for it alone."""
        if not self.client.search([b"UID", str(uid).encode()]):
            log.info("UID %s of %s was expunged before it could be fetched", uid, self.folder)
            return None
        data = self.client.fetch([uid], [b"BODY.PEEK[]", b"INTERNALDATE"]).get(uid)
        if data is None or data.get(b"BODY[]") is None:
            log.warning(
                "UID %s of %s exists but the server returns no body; skipped", uid, self.folder
            )
            return None
        return data

    def _max_uid(self) -> int:
        uids = self.client.search([b"ALL"])
        return max(uids) if uids else 0

    # -- marking processed on the server --------------------------------------------------------

    def mark(self, uids: Sequence[int], target: str, setting: str) -> None:
        """\\Seen in place, or moved to `target` when one is configured. A refusal (bad folder
        name, quota) is a ConfigError naming `setting`."""
        if not uids:
            return
        try:
            self._mark_or_move(uids, target)
        except imaplib.IMAP4.abort:
            raise
        except IMAPClientError as error:  # a tagged NO: the server refuses, not a network fault
            where = f"folder {target!r}" if target else "flags"
            raise ConfigError(
                f"the IMAP server refuses to store {where} for taken mail: {reason(error)}"
                + (f" (check {setting})" if target else "")
            ) from None

    def _mark_or_move(self, uids: Sequence[int], target: str) -> None:
        if not target:
            self.client.add_flags(uids, [b"\\Seen"], silent=True)
            return
        self._ensure_folder(target)
        if "MOVE" in self.capabilities:
            self.client.move(uids, target)
            return
        self.client.copy(uids, target)
        self.client.add_flags(uids, [b"\\Deleted", b"\\Seen"], silent=True)
        if "UIDPLUS" in self.capabilities:
            self.client.uid_expunge(uids)
        # Without UIDPLUS, an EXPUNGE would also remove messages others marked \Deleted;
        # we leave ours flagged and let the folder's owner expunge.

    def _ensure_folder(self, name: str) -> None:
        if name in self._known_folders:
            return
        ensure_folder(self.client, name)
        self._known_folders.add(name)


def _date_header(raw: bytes) -> datetime | None:
    """The Date header of `raw`, read from the header block alone; None if unreadable."""
    end = raw.find(b"\r\n\r\n")
    head = raw[: end if 0 <= end < HEADER_BYTES else HEADER_BYTES]
    value = BytesHeaderParser(policy=compat32).parsebytes(head).get("Date")
    return parse_date(str(value), None, []) if value is not None else None


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:  # imapclient normalises INTERNALDATE to local time
        return value.astimezone()
    return value
