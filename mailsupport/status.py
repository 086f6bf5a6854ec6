"""How the desk is doing, as plain data: each mailbox and its polls, mail waiting on the
server, the quarantine, the outbox and the tickets by status. `mailsupport status` prints
it; scripts can call it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailsupport.errors import MailSupportError

if TYPE_CHECKING:
    from mailsupport.config import Settings
    from mailsupport.mailboxes import Mailbox, Mailboxes
    from mailsupport.store.db import Store
    from mailsupport.store.models import ImapFolder

OUTBOX_STATES = ("queued", "failed")
TICKET_STATES = ("new", "open", "pending", "closed")
ASK_PARALLEL = 8  # servers asked at the same time


def desk_status(
    store: Store,
    settings: Settings,
    *,
    ask_server: bool = True,
    mailboxes: Mailboxes | None = None,
) -> dict[str, Any]:
    """The desk's state as JSON-ready data: "mailboxes" (each mailbox of the desk, see
    mailbox_status), "folders" (each polled IMAP folder's last poll and success, ISO
    times), "quarantine" (messages, bytes), "outbox" (queued, failed), "tickets" (by status,
    merged ones left out), "sign_in" (each OAuth2 sign-in, when any: see
    oauth.signin.describe) and, when IMAP is set up and `ask_server`, "server": how many
    messages wait in the configured folder, or the error in asking. With `ask_server` each
    mailbox's server is asked too, several at a time. `mailboxes` default to the desk's
    (MAILSUPPORT_MAILBOXES_FILE)."""
    from sqlmodel import col, func, select

    from mailsupport.mailboxes import load_mailboxes
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
    boxes = (mailboxes or load_mailboxes(settings)).all
    answers = ask_servers(boxes, folders) if ask_server else {}
    report: dict[str, Any] = {
        "mailboxes": [
            mailbox_status(box, folders, answers.get(_folder_key(box.settings))) for box in boxes
        ],
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
        asked = answers.get(_folder_key(settings))
        report["server"] = asked if asked is not None else waiting_on_server(settings, folders)
    return report


def _folder_key(settings: Settings) -> tuple[str, str]:
    return settings.imap_account, settings.imap_folder


def _ledger(settings: Settings, folders: Sequence[ImapFolder]) -> ImapFolder | None:
    return next((f for f in folders if (f.account, f.folder) == _folder_key(settings)), None)


def _when(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def ask_servers(
    boxes: Sequence[Mailbox], folders: Sequence[ImapFolder]
) -> dict[tuple[str, str], dict[str, Any]]:
    """waiting_on_server for every polled mailbox's folder (each once), ASK_PARALLEL at a
    time: one server that does not answer delays no other. By (account, folder)."""
    todo: dict[tuple[str, str], Settings] = {}
    for box in boxes:  # the first mailbox of each folder, as poll and the daemon take it
        if box.polled:
            todo.setdefault(_folder_key(box.settings), box.settings)
    if not todo:
        return {}
    with ThreadPoolExecutor(min(ASK_PARALLEL, len(todo)), "status") as pool:
        found = pool.map(lambda s: waiting_on_server(s, folders), todo.values())
        return dict(zip(todo, found, strict=True))


def mailbox_status(
    box: Mailbox, folders: Sequence[ImapFolder], server: dict[str, Any] | None
) -> dict[str, Any]:
    """One mailbox: "name", "address", "polled" (it has an IMAP server), "account" and
    "folder" (None when not polled), "last_poll_at" and "last_success_at" (ISO times),
    "waiting" (messages not taken yet: the server's answer when it was asked and answered,
    else the count at the last pass; None when never polled), "last_error" ("" when the
    last attempt worked) and "last_error_at", and "server" (the answer of
    waiting_on_server) when the server was asked."""
    from mailsupport.store.ledger import NEVER_OPENED

    settings = box.settings
    row = _ledger(settings, folders) if box.polled else None
    opened = row is not None and row.uidvalidity != NEVER_OPENED  # else only its error is known
    waiting: int | None = row.waiting if row is not None and opened else None
    if server is not None and "waiting" in server:
        waiting = server["waiting"]
    found: dict[str, Any] = {
        "name": box.name,
        "address": box.address,
        "polled": box.polled,
        "account": settings.imap_account if box.polled else None,
        "folder": settings.imap_folder if box.polled else None,
        "last_poll_at": _when(row.last_poll_at) if row is not None else None,
        "last_success_at": _when(row.last_success_at) if row is not None else None,
        "waiting": waiting,
        "last_error": row.last_error if row is not None else "",
        "last_error_at": _when(row.last_error_at) if row is not None else None,
    }
    if server is not None:
        found["server"] = server
    return found


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

    mine = _ledger(settings, folders)
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
