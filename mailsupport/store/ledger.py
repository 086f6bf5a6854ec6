"""The IMAP folders' ledgers: which UIDs are taken, and which wait to be flagged.

A message is stored and its UID recorded as pending in one transaction (the caller's);
the pending rows are flagged or moved on the server after that commit and then deleted.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NamedTuple

from sqlmodel import Session, col, select

from mailsupport.store.db import Store
from mailsupport.store.models import ImapFolder, ImapPending

log = logging.getLogger(__name__)

Start = tuple[int, int, str]


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
        row = session.exec(
            select(ImapFolder).where(ImapFolder.account == account, ImapFolder.folder == folder)
        ).first()
        created = row is None
        changed = row is not None and row.uidvalidity != uidvalidity
        if row is None:
            row = ImapFolder(account=account, folder=folder, uidvalidity=uidvalidity)
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


def record_taken(session: Session, ledger: ImapFolder, uid: int, quarantined: bool) -> None:
    """In the transaction that stored (or quarantined) the message with `uid`."""
    session.add(
        ImapPending(
            folder_id=ledger.id,  # type: ignore[arg-type]
            uid=uid,
            uidvalidity=ledger.uidvalidity,
            quarantined=quarantined,
        )
    )


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


def finish_pass(store: Store, ledger: ImapFolder, at: datetime, waiting: int) -> None:
    """Record a pass: when, and how much it left for the next one (a success when none)."""
    with store.write() as session:
        row = session.get(ImapFolder, ledger.id)
        assert row is not None
        row.last_poll_at = at
        row.waiting = waiting
        if not waiting:
            row.last_success_at = at
        session.add(row)
