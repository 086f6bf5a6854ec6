"""How the desk is doing, as plain data: polls, mail waiting on the server, the quarantine,
the outbox and the tickets by status. `mailsupport status` prints it; scripts can call it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailsupport.errors import MailSupportError

if TYPE_CHECKING:
    from mailsupport.config import Settings
    from mailsupport.store.db import Store
    from mailsupport.store.models import ImapFolder

OUTBOX_STATES = ("queued", "failed")
TICKET_STATES = ("new", "open", "pending", "closed")


def desk_status(store: Store, settings: Settings, *, ask_server: bool = True) -> dict[str, Any]:
    """The desk's state as JSON-ready data: "folders" (each polled IMAP folder's last poll
    and success, ISO times), "quarantine" (messages, bytes), "outbox" (queued, failed),
    "tickets" (by status, merged ones left out), "sign_in" (each OAuth2 sign-in, when any:
    see oauth.signin.describe) and, when IMAP is set up and `ask_server`,
    "server": how many messages wait in the configured folder, or the error in asking."""
    from sqlmodel import col, func, select

    from mailsupport.store.models import ImapFolder, OutboxItem, QuarantineEntry, RawMessage, Ticket

    with store.read() as session:
        folders = session.exec(select(ImapFolder).order_by(col(ImapFolder.id))).all()
        quarantined, quarantined_bytes = session.exec(
            select(func.count(col(QuarantineEntry.id)), func.coalesce(func.sum(RawMessage.size), 0))
            .select_from(QuarantineEntry)
            .join(RawMessage, col(RawMessage.id) == QuarantineEntry.raw_id)
        ).one()
        outbox = dict(
            session.exec(select(OutboxItem.status, func.count()).group_by(OutboxItem.status)).all()
        )
        by_status = dict(
            session.exec(
                select(Ticket.status, func.count())
                .where(col(Ticket.merged_into_id).is_(None))
                .group_by(Ticket.status)
            ).all()
        )
    report: dict[str, Any] = {
        "folders": [
            {
                "account": f.account,
                "folder": f.folder,
                "last_poll_at": f.last_poll_at.isoformat() if f.last_poll_at else None,
                "last_success_at": f.last_success_at.isoformat() if f.last_success_at else None,
                "waiting": f.waiting,
                "last_uid": f.last_uid,
            }
            for f in folders
        ],
        "quarantine": {"messages": int(quarantined), "bytes": int(quarantined_bytes)},
        "outbox": {s: int(outbox.get(s, 0)) for s in OUTBOX_STATES},
        "tickets": {s: int(by_status.get(s, 0)) for s in TICKET_STATES},
    }
    if "oauth2" in (settings.imap_auth, settings.smtp_auth):
        report["sign_in"] = sign_ins(store, settings)
    if settings.imap_host and ask_server:
        report["server"] = waiting_on_server(settings, folders)
    return report


def sign_ins(store: Store, settings: Settings) -> list[dict[str, Any]]:
    """The OAuth2 sign-ins as `auth status --json` shows them, or one {"error": ...}."""
    from mailsupport.oauth.signin import describe

    try:
        return describe(settings, store)
    except MailSupportError as error:  # wrong OAuth2 settings: say so, show the rest
        return [{"error": str(error)}]


def waiting_on_server(settings: Settings, folders: Sequence[ImapFolder]) -> dict[str, Any]:
    """How many messages in the configured folder are newer than the ledger's last UID:
    {"waiting": N}, with a "note" when the folder was never polled, or {"error": ...}; and
    "history_left": the older mail the first poll left that `poll --all` would take."""
    from mailsupport.imapconn import connect
    from mailsupport.sources.uids import history_search

    mine = next(
        (
            f
            for f in folders
            if f.account == settings.imap_account and f.folder == settings.imap_folder
        ),
        None,
    )
    try:
        client = connect(settings)
    except MailSupportError as error:
        return {"error": str(error)}
    try:
        selected = client.select_folder(settings.imap_folder, readonly=True)
        if mine is None or int(selected[b"UIDVALIDITY"]) != mine.uidvalidity:
            return {"waiting": int(selected[b"EXISTS"]), "note": "folder not polled yet"}
        uids = client.search([b"UID", f"{mine.last_uid + 1}:*".encode()])
        found: dict[str, Any] = {"waiting": len([u for u in uids if u > mine.last_uid])}
        if mine.backlog_search != "UNSEEN":  # unread mail taken is \Seen now: not countable
            older = history_search(mine.backlog_until, mine.backlog_search, "ALL")
            found["history_left"] = len(client.search(older)) if older else 0
        return found
    except Exception as error:  # a status report must not fail on a flaky server
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        with contextlib.suppress(Exception):
            client.logout()
