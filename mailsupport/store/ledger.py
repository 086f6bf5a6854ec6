"""The IMAP folders' ledgers: which UIDs are taken, and which wait to be flagged.

A message is stored and its UID recorded as pending in one transaction (the caller's);
the pending rows are flagged or moved on the server after that commit and then deleted.
Each folder also keeps why its last attempt failed, for `status`, until a pass succeeds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.store import direct
from mailsupport.store.db import Store
from mailsupport.store.models import ImapFolder, ImapPending

log = logging.getLogger(__name__)

Start = tuple[int, int, str]
# No real folder has UIDVALIDITY 0 (RFC 3501: a non-zero number): it marks the row of a
# folder whose first attempt failed before it was ever opened, kept for its error alone.
NEVER_OPENED = 0
ERROR_CHARS = 1000  # a server's answer can be long: enough of it to tell what went wrong


class Opened(NamedTuple):
    ledger: ImapFolder  # detached
    created: bool  # the first poll of this folder
    renewed: bool  # UIDVALIDITY changed: the ledger started again


def open_ledger(
    store: Store,
    account: str,
    folder: str,
    uidvalidity: int,
    first: Start,
    renewed: Start,
    start_name: str,
) -> Opened:
    """This folder's ledger row. A new ledger starts at `first` (IMAP_START `start_name`);
    one whose UIDVALIDITY changed starts again at `renewed`. Starts are (last_uid,
    backlog_until, backlog_search), see sources/uids.py."""
    with store.write() as session:
        row = _row(session, account, folder)
        created = row.uidvalidity == NEVER_OPENED
        changed = not created and row.uidvalidity != uidvalidity
        if created:
            row.uidvalidity = uidvalidity
            _start(row, first)
            log.info("first poll of %s %s: IMAP_START=%s", account, folder, start_name)
        elif changed:
            # The mailbox was recreated or migrated: the old UIDs mean nothing now. Take
            # only what is unread; Message-IDs catch anything stored before.
            log.warning(
                "UIDVALIDITY of %s %s changed from %s to %s: taking only unread mail",
                account, folder, row.uidvalidity, uidvalidity,
            )  # fmt: skip
            row.uidvalidity = uidvalidity
            _start(row, renewed)
            session.execute(
                ImapPending.__table__.delete().where(  # type: ignore[attr-defined]
                    ImapPending.folder_id == row.id
                )
            )
        session.add(row)
        session.flush()
        session.expunge(row)
        return Opened(row, created, changed)


def _start(row: ImapFolder, begin: Start) -> None:
    row.last_uid, row.backlog_until, row.backlog_search = begin


def record_taken(session: Session, ledger: ImapFolder, taken: Sequence[tuple[int, bool]]) -> None:
    """In the transaction that stored (or quarantined) them: the messages of these UIDs
    (uid, quarantined) are dealt with and wait to be flagged. One statement for them all."""
    rows = [
        {"folder_id": ledger.id, "uid": uid, "uidvalidity": ledger.uidvalidity,
         "quarantined": quarantined}
        for uid, quarantined in taken
    ]  # fmt: skip
    direct.execute_many(session, _insert_pending(), rows)


@functools.cache
def _insert_pending() -> sa.Insert:
    return sa.insert(ImapPending.__table__)  # type: ignore[attr-defined]


def advance(session: Session, ledger: ImapFolder, taken: int) -> None:
    """Every UID up to `taken` is dealt with (same transaction as the messages)."""
    row = session.get(ImapFolder, ledger.id)
    assert row is not None
    row.last_uid = max(row.last_uid, taken)
    session.add(row)


def record_history(session: Session, ledger: ImapFolder, taken: str) -> None:
    """A takeover of the history is done (same transaction as its last messages): the
    ledger's backlog_search covers it now, and no pass looks at the history again."""
    row = session.get(ImapFolder, ledger.id)
    assert row is not None
    row.backlog_search = taken
    row.last_uid = max(row.last_uid, row.backlog_until)
    session.add(row)


def pending(store: Store, ledger: ImapFolder) -> list[ImapPending]:
    """Stored, not yet flagged or moved on the server."""
    with store.read() as session:
        return list(
            session.exec(
                select(ImapPending).where(
                    ImapPending.folder_id == ledger.id,
                    ImapPending.uidvalidity == ledger.uidvalidity,
                )
            ).all()
        )


def forget_pending(store: Store, ledger: ImapFolder, uids: list[int]) -> None:
    """These UIDs are flagged or moved now."""
    with store.write() as session:
        session.execute(
            ImapPending.__table__.delete().where(  # type: ignore[attr-defined]
                col(ImapPending.folder_id) == ledger.id,
                col(ImapPending.uid).in_(uids),
            )
        )


def finish_pass(
    store: Store, ledger: ImapFolder, at: datetime, waiting: int, error: str = ""
) -> None:
    """Record a pass: when, and how much it left for the next one (a success when none).
    It clears the folder's last error, or records `error`: the pass took the mail, but the
    server refused to flag or move it."""
    with store.write() as session:
        row = session.get(ImapFolder, ledger.id)
        assert row is not None
        row.last_poll_at = at
        row.waiting = waiting
        if not waiting:
            row.last_success_at = at
        row.last_error = error[:ERROR_CHARS]
        row.last_error_at = at if error else None
        session.add(row)


def record_error(store: Store, account: str, folder: str, error: str, at: datetime) -> None:
    """Why an attempt on this folder failed (no sign-in, the server away, a pass broken
    off), kept until a pass succeeds. A folder never opened gets a row for it, which its
    first successful pass takes as new (NEVER_OPENED)."""
    with store.write() as session:
        row = _row(session, account, folder)
        row.last_error = error[:ERROR_CHARS]
        row.last_error_at = at
        session.add(row)


def _row(session: Session, account: str, folder: str) -> ImapFolder:
    """The folder's ledger row; a new one, never opened (NEVER_OPENED), when it has none."""
    row = session.exec(
        select(ImapFolder).where(ImapFolder.account == account, ImapFolder.folder == folder)
    ).first()
    return row or ImapFolder(account=account, folder=folder, uidvalidity=NEVER_OPENED)
