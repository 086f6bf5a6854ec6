"""The outbox: outgoing mail is queued in the database, then delivered over SMTP with retries.

`queue` writes the exact bytes to send in the caller's transaction, the one that makes the
ticket change causing the mail (a transactional outbox): the mail exists if and only if the
change does. `deliver_due` sends what is due, separately, and may run in several processes:

1. Claim: one short write transaction marks due rows as ours (`claim_token`, and a lease in
   `claimed_until`). The UPDATE repeats the "free or expired" condition and its rowcount is
   checked, so of two senders racing for a row exactly one wins. A sender that dies keeps
   its rows only until the lease runs out; the next run sends them, with the same bytes and
   so the same Message-ID.
2. Send: one SMTP connection for the batch (aiosmtplib; the event loop lives only inside
   `_Smtp`, so the rest of this module and its callers stay synchronous).
3. Record: one short write transaction per message, and only while the claim is still ours.

Temporary failures (4xx, no connection, timeouts, a dropped connection) are retried with
exponential backoff until SMTP_MAX_AGE after the message was queued; permanent ones (5xx)
fail at once. Both are recorded on the ticket as a `delivery-failed` event. A configuration
problem (no host, login refused, untrusted certificate, MAILSUPPORT_SMTP_SECURITY not what the
port speaks) leaves the mail queued and raises ConfigError: it is ours to fix, not the
recipient's.

Delivery is at least once: a sender that dies after the server accepted a message but before
recording it sends it again after the lease (with the same Message-ID, so mail clients show
one message). SMTP itself offers nothing better.

A copy of every sent message goes to MAILSUPPORT_IMAP_SENT_FOLDER when that is set (and
MAILSUPPORT_IMAP_HOST too), so mail clients on the support mailbox show the desk's answers:
the stored bytes, flagged \\Seen, dated when they were sent, over one IMAP connection per run
(opened at the first message sent, not at all when the setting is empty). The copy is made
right after the message is recorded as sent, and only when it is sent for the first time
(`sent_at` was empty): an `outbox retry` that reaches a recipient refused before adds no
second copy. A copy is a convenience and is never retried: when the IMAP server is down or
refuses, one warning is logged, delivery goes on and its counts are unchanged. So a crash
between recording "sent" and the APPEND, or an IMAP outage during a run, loses those copies
(never mail, and never a copy twice); keeping them for later would need a "copied" column.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import re
import secrets
import ssl
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal

import aiosmtplib
import sqlalchemy as sa
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from mailsupport import tlsprobe
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, NotFoundError, TemporaryError, UsageError
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem, Ticket
from mailsupport.store.queries import iso
from mailsupport.store.tickets import insert_row, record_event

if TYPE_CHECKING:
    from imapclient import IMAPClient

__all__ = [
    "STATUSES",
    "backoff",
    "deliver_due",
    "item_dict",
    "list_items",
    "queue",
    "retry",
]

log = logging.getLogger(__name__)

STATUSES = ("queued", "sent", "failed")
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)
# A sender's claim is renewed before each message when less than this many send budgets
# (see _Smtp.budget) remain, and runs for LEASE_BUDGETS of them: a live sender never loses
# its claim, a dead one's rows come free within about LEASE_BUDGETS * budget.
LEASE_BUDGETS = 3
ERROR_MAX_CHARS = 2000


# ------------------------------------------------------------------------------------------
# Queueing (in the caller's transaction)
# ------------------------------------------------------------------------------------------


def queue(
    session: Session,
    *,
    ticket_id: int,
    kind: str,
    message: EmailMessage | bytes,
    message_id: str,
    mail_from: str,
    recipients: Iterable[str],
    now: datetime,
) -> int:
    """Queue `message` for delivery to the envelope `recipients`, due at once. Returns the
    outbox item's id.

    Writes in the caller's transaction and does not commit. The bytes are fixed here: a
    Bcc header is left out (its recipients belong in the envelope only), lines end in CRLF.
    A message given as bytes (compose's `Composed.data`) is queued exactly as it is.
    """
    message_id = message_id.strip().removeprefix("<").removesuffix(">")
    if _message_id_of(message) != message_id:
        raise ValueError(f"the message's Message-ID header is not <{message_id}>")
    envelope = list(dict.fromkeys(r.strip() for r in recipients if r.strip()))
    if not envelope:
        raise ValueError("an outgoing message needs at least one recipient")
    values = {
        "ticket_id": ticket_id,
        "message_id": message_id,
        "kind": kind,
        "mail_from": mail_from.strip(),
        "recipients": envelope,
        "data": message if isinstance(message, bytes) else _wire_bytes(message),
        "next_attempt_at": now,
        "created_at": now,
        "queued_at": now,
    }
    return insert_row(session, OutboxItem, values)


def _message_id_of(message: EmailMessage | bytes) -> str | None:
    if isinstance(message, bytes):
        head = message.split(b"\r\n\r\n", 1)[0]
        found = re.search(rb"^Message-ID:\s*<([^>\s]+)>", head, re.IGNORECASE | re.MULTILINE)
        return found[1].decode("ascii", "replace") if found else None
    header = message.get("Message-ID")
    if header is None:
        return None
    return str(header).strip().removeprefix("<").removesuffix(">")


def _wire_bytes(message: EmailMessage) -> bytes:
    if "Bcc" in message:
        message = copy.deepcopy(message)
        del message["Bcc"]
    # The SMTP payload is CRLF-terminated; serializing so means what is stored is what is sent.
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


# ------------------------------------------------------------------------------------------
# Operator verbs: list, retry
# ------------------------------------------------------------------------------------------


def list_items(
    session: Session, status: str | None = None, limit: int | None = None, newest: bool = False
) -> list[tuple[OutboxItem, int | None]]:
    """Items with their ticket's number, oldest first (the order they are sent in). With
    `newest`, the limit keeps the most recent items (still listed oldest first)."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown outbox status {status!r}: use one of {', '.join(STATUSES)}")
    order = col(OutboxItem.id).desc() if newest else col(OutboxItem.id)
    query = (
        select(OutboxItem, Ticket.number)
        .join(Ticket, col(Ticket.id) == col(OutboxItem.ticket_id))
        .order_by(order)
        .options(defer(OutboxItem.data))  # type: ignore[arg-type]  # the bytes are not listed
    )
    if status is not None:
        query = query.where(OutboxItem.status == status)
    if limit is not None:
        query = query.limit(limit)
    rows = [(item, number) for item, number in session.exec(query).all()]
    return rows[::-1] if newest else rows


def item_dict(item: OutboxItem, ticket_number: int | None) -> dict[str, Any]:
    """An item for `outbox list --json`; the message bytes are left out."""
    return {
        "id": item.id,
        "ticket": ticket_number,
        "message_id": item.message_id,
        "kind": item.kind,
        "recipients": list(item.recipients),
        "recipient_status": dict(item.recipient_status),
        "status": item.status,
        "attempts": item.attempts,
        "next_attempt_at": iso(item.next_attempt_at) if item.status == "queued" else None,
        "last_error": item.last_error,
        "created_at": iso(item.created_at),
        "sent_at": iso(item.sent_at),
    }


def retry(session: Session, item_id: int, now: datetime) -> OutboxItem:
    """Queue a failed (or waiting) item again, due now, with a fresh SMTP_MAX_AGE.

    Recipients that already got the message do not get it again; those that refused it are
    tried again. A claim by a running sender is respected: it records its own result.
    """
    item = session.get(OutboxItem, item_id, with_for_update=True)
    if item is None:
        raise NotFoundError(f"no outbox item {item_id}")
    if item.status == "sent" and all(v == "sent" for v in item.recipient_status.values()):
        raise UsageError(f"outbox item {item_id} was sent to every recipient already")
    item.recipient_status = {r: v for r, v in item.recipient_status.items() if v == "sent"}
    item.status = "queued"
    item.next_attempt_at = now
    item.queued_at = now
    session.add(item)
    session.flush()
    return item


# ------------------------------------------------------------------------------------------
# Delivery
# ------------------------------------------------------------------------------------------


def backoff(attempts: int, rand: Callable[[], float] = random.random) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 1 minute doubling up to 1 hour, each
    shortened at random by up to half, so mail that failed together does not retry in step."""
    full = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(max(attempts - 1, 0), 16))
    return full * (0.5 + 0.5 * rand())


@dataclass(frozen=True)
class _Claimed:
    id: int
    ticket_id: int
    ticket_number: int | None
    kind: str
    message_id: str
    mail_from: str
    pending: tuple[str, ...]  # recipients without a final answer yet


Verdict = Literal["sent", "temporary", "permanent"]
# recipient -> (verdict, the server's reply or our error)
Results = dict[str, tuple[Verdict, str]]


class _ConnectionDown(Exception):
    """No usable connection to the server: every message left in the batch waits."""


def deliver_due(
    store: Store,
    settings: Settings,
    now: Callable[[], datetime],
    limit: int = 100,
    *,
    rand: Callable[[], float] = random.random,
    only: Sequence[int] | None = None,
) -> Counter[str]:
    """Send up to `limit` due messages (only those with the ids in `only`, when given);
    counts of "sent", "retry" and "failed".

    Raises ConfigError when the settings keep mail from going out (no SMTP host, login
    refused, untrusted certificate, a security mode the port does not speak): what was
    claimed is released, still queued, with the error as its last_error. Database trouble
    raises TemporaryError as everywhere.
    """
    counts: Counter[str] = Counter()
    smtp = _Smtp(settings)
    copies = _SentCopies(settings)
    token = secrets.token_hex(16)
    lease = smtp.budget * LEASE_BUDGETS
    with store.read() as session:
        if not _any_due(session, now()):
            return counts
    if not settings.smtp_host:
        raise ConfigError(
            "MAILSUPPORT_SMTP_HOST is not set: outgoing mail waits in the outbox until it is"
        )
    claimed_at = now()
    claimed = _claim(store, claimed_at, limit, lease, token, only)
    lease_end = claimed_at + lease

    def record(item: _Claimed, results: Results) -> None:
        outcome, first_sent_at = _record(store, settings, item, results, now(), token, rand)
        counts[outcome] += 1
        if first_sent_at is not None:  # committed as sent: only now may a copy exist
            copies.add(store, item, first_sent_at)

    try:
        for position, item in enumerate(claimed):
            if lease_end - now() < smtp.budget * (LEASE_BUDGETS - 1):
                lease_end = _renew(store, now(), lease, token)
            if not item.pending:  # every recipient answered already (e.g. edited by hand)
                record(item, {})
                continue
            data = _load_data(store, item.id)
            try:
                results = smtp.send(item.mail_from, item.pending, data)
            except _ConnectionDown as down:
                # The server is unreachable: one connection attempt per run, not one per
                # message; the whole rest of the batch counts a failed attempt.
                for rest in claimed[position:]:
                    waits: Results = {r: ("temporary", str(down)) for r in rest.pending}
                    record(rest, waits)
                break
            record(item, results)
    except ConfigError as error:
        _release(store, token, str(error))
        raise
    finally:
        smtp.close()
        copies.close()
    return counts


def _due(at: datetime) -> Any:
    return sa.and_(
        col(OutboxItem.status) == "queued",
        col(OutboxItem.next_attempt_at) <= at,
        sa.or_(col(OutboxItem.claimed_until).is_(None), col(OutboxItem.claimed_until) < at),
    )


def _any_due(session: Session, at: datetime) -> bool:
    return session.exec(select(OutboxItem.id).where(_due(at)).limit(1)).first() is not None


def _claim(
    store: Store,
    at: datetime,
    limit: int,
    lease: timedelta,
    token: str,
    only: Sequence[int] | None = None,
) -> list[_Claimed]:
    due = _due(at) if only is None else sa.and_(_due(at), col(OutboxItem.id).in_(only))
    with store.write() as session:
        # SKIP LOCKED lets a second sender on PostgreSQL take other rows instead of waiting
        # for these; SQLite serializes writers anyway and ignores the clause.
        candidates = session.exec(
            select(OutboxItem.id)
            .where(due)
            .order_by(col(OutboxItem.next_attempt_at), col(OutboxItem.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        won = []
        for item_id in candidates:
            # The condition again, inside the UPDATE: only one of two racing senders
            # changes the row; the other sees rowcount 0 and leaves it.
            result = session.execute(
                sa.update(OutboxItem)
                .where(col(OutboxItem.id) == item_id, _due(at))
                .values(claimed_until=at + lease, claim_token=token)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                won.append(item_id)
        if not won:
            return []
        rows = session.exec(
            select(
                OutboxItem.id,
                OutboxItem.ticket_id,
                Ticket.number,
                OutboxItem.kind,
                OutboxItem.message_id,
                OutboxItem.mail_from,
                OutboxItem.recipients,
                OutboxItem.recipient_status,
            )
            .join(Ticket, col(Ticket.id) == col(OutboxItem.ticket_id))
            .where(col(OutboxItem.id).in_(won))
            .order_by(col(OutboxItem.next_attempt_at), col(OutboxItem.id))
        ).all()
    return [
        _Claimed(
            id=row[0],
            ticket_id=row[1],
            ticket_number=row[2],
            kind=row[3],
            message_id=row[4],
            mail_from=row[5],
            pending=tuple(r for r in row[6] if r not in row[7]),
        )
        for row in rows
    ]


def _renew(store: Store, at: datetime, lease: timedelta, token: str) -> datetime:
    with store.write() as session:
        session.execute(
            sa.update(OutboxItem)
            .where(col(OutboxItem.claim_token) == token, col(OutboxItem.status) == "queued")
            .values(claimed_until=at + lease)
            .execution_options(synchronize_session=False)
        )
    return at + lease


def _release(store: Store, token: str, error: str) -> None:
    """Give claimed rows back unchanged but for the error, due as they were."""
    with store.write() as session:
        session.execute(
            sa.update(OutboxItem)
            .where(col(OutboxItem.claim_token) == token, col(OutboxItem.status) == "queued")
            .values(claimed_until=None, claim_token=None, last_error=error[:ERROR_MAX_CHARS])
            .execution_options(synchronize_session=False)
        )


def _load_data(store: Store, item_id: int) -> bytes:
    # One message's bytes at a time: a batch of large messages need not fit in memory.
    with store.read() as session:
        data = session.exec(select(OutboxItem.data).where(OutboxItem.id == item_id)).one()
    return bytes(data)


def _record(
    store: Store,
    settings: Settings,
    claimed: _Claimed,
    results: Results,
    at: datetime,
    token: str,
    rand: Callable[[], float],
) -> tuple[str, datetime | None]:
    """Write the outcome of one attempt: "sent", "retry", "failed" or "lost", and the sent
    time when this attempt made the message sent for the first time (else None)."""
    with store.write() as session:
        item = session.exec(
            select(OutboxItem)
            .where(OutboxItem.id == claimed.id, OutboxItem.claim_token == token)
            .with_for_update()
        ).first()
        if item is None or item.status != "queued":
            # Our lease ran out and another sender took the row over: it records.
            log.warning(
                "outbox item %s <%s>: claim lost before its result was recorded",
                claimed.id, claimed.message_id,
            )  # fmt: skip
            return "lost", None
        status = dict(item.recipient_status)
        refused: dict[str, str] = {}
        waiting: dict[str, str] = {}
        first_sent: datetime | None = None
        for rcpt, (verdict, reply) in results.items():
            if verdict == "sent":
                status[rcpt] = "sent"
            elif verdict == "permanent":
                status[rcpt] = refused[rcpt] = reply
            else:
                waiting[rcpt] = reply
        item.attempts += 1
        item.claimed_until = item.claim_token = None
        deadline = item.queued_at + timedelta(seconds=settings.smtp_max_age)
        if waiting and at >= deadline:
            age = _age(at - item.queued_at)
            for rcpt, reply in waiting.items():
                status[rcpt] = refused[rcpt] = f"gave up after {age}: {reply}"
            waiting = {}
        item.recipient_status = status
        problems = {**refused, **waiting}
        item.last_error = _describe(problems)[:ERROR_MAX_CHARS]
        where = f"ticket #{claimed.ticket_number} {claimed.kind} <{claimed.message_id}>"
        if refused:
            record_event(
                session, item.ticket_id, "delivery-failed",
                f"{claimed.kind} <{claimed.message_id}> not delivered: {_describe(refused)}", at,
            )  # fmt: skip
        if waiting:
            item.next_attempt_at = min(at + backoff(item.attempts, rand), deadline)
            outcome = "retry"
            next_try = item.next_attempt_at.isoformat(timespec="seconds")
            log.info("%s: temporary failure, next try %s: %s", where, next_try, _describe(waiting))
        elif any(v == "sent" for v in status.values()):
            # Already sent once (`outbox retry` then reached a recipient refused before):
            # the copy was made that first time.
            first_sent = at if item.sent_at is None else None
            item.status, item.sent_at, outcome = "sent", at, "sent"
            log.info("%s sent to %s", where, ", ".join(r for r in results if r not in refused))
        else:
            item.status, outcome = "failed", "failed"
            log.warning("%s failed: %s", where, item.last_error)
        session.add(item)
    return outcome, first_sent


def _describe(problems: dict[str, str]) -> str:
    """One line for the ticket and last_error; recipients sharing a reply share the line."""
    by_reply: dict[str, list[str]] = {}
    for rcpt, reply in problems.items():
        by_reply.setdefault(reply, []).append(rcpt)
    return "; ".join(f"{', '.join(rcpts)}: {reply}" for reply, rcpts in by_reply.items())


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


# ------------------------------------------------------------------------------------------
# Copies in the IMAP Sent folder
# ------------------------------------------------------------------------------------------


class _SentCopies:
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

    def add(self, store: Store, item: _Claimed, sent_at: datetime) -> None:
        if not self.active:
            return
        where = f"outbox item {item.id} <{item.message_id}>"
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
            data = _load_data(store, item.id)
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
        from mailsupport.sources import imap

        self._client = imap.connect(self.settings)  # closed by _give_up if what follows fails
        imap.ensure_folder(self._client, self.folder)
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


# ------------------------------------------------------------------------------------------
# SMTP: the one asynchronous corner
# ------------------------------------------------------------------------------------------


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


def describe_delivery(counts: Counter[str]) -> str:
    """One line for a delivery run's counts, as poll prints and the daemon logs it."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def check_smtp(settings: Settings) -> str:
    """Whether outgoing mail could leave now; raises a one-line MailSupportError if not."""
    if not settings.smtp_host:
        raise ConfigError("MAILSUPPORT_SMTP_HOST is not set: name the server that sends our mail")
    smtp = _Smtp(settings)
    try:
        smtp.open()
    except _ConnectionDown as error:
        raise TemporaryError(str(error)) from None
    finally:
        smtp.close()
    login = f" as {settings.smtp_user}" if settings.smtp_user else ""
    return f"connected to {smtp.where} ({settings.smtp_security}){login}"


def _verdict(code: int) -> Verdict:
    # 5xx is final (RFC 5321 4.2.1); 4xx, and anything unexpected, may pass with time.
    return "permanent" if 500 <= code < 600 else "temporary"


class _Smtp:
    """One SMTP connection reused for a batch, behind a synchronous `send`.

    An asyncio.Runner keeps a single event loop (and so the open connection) alive between
    calls, while the database work in between stays plain synchronous code.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.where = f"{settings.smtp_host}:{settings.smtp_port_or_default}"
        # Connect, greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT..., DATA each wait up to
        # SMTP_TIMEOUT; a whole send is capped at a few of them so a trickling server
        # cannot outlast the claim.
        self.budget = timedelta(seconds=4 * settings.smtp_timeout)
        self._runner: asyncio.Runner | None = None
        self._client: aiosmtplib.SMTP | None = None

    def send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> Results:
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(self._send(mail_from, recipients, data))

    def open(self) -> None:
        """Connect, greet, STARTTLS and log in, as a send would (for `doctor`)."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        self._runner.run(self._connection())

    def close(self) -> None:
        if self._runner is None:
            return
        if self._client is not None and self._client.is_connected:
            try:
                self._runner.run(asyncio.wait_for(self._client.quit(), timeout=5))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._client.close()  # a polite QUIT is optional
        self._runner.close()
        self._runner = None

    async def _send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> Results:
        try:
            async with asyncio.timeout(self.budget.total_seconds()):
                client = await self._connection()
                try:
                    refused, _ = await client.sendmail(mail_from, list(recipients), data)
                except aiosmtplib.SMTPRecipientsRefused as every:
                    refused = {e.recipient: aiosmtplib.SMTPResponse(e.code, e.message)
                               for e in every.recipients}  # fmt: skip
        except aiosmtplib.SMTPResponseException as error:
            if isinstance(error, aiosmtplib.SMTPSenderRefused) and error.code == 530:
                # RFC 4954/3207: "authentication (or STARTTLS) required". Ours to fix, and
                # no fault of this message: raised so that the mail stays queued.
                raise ConfigError(
                    f"the SMTP server {self.where} takes no mail from us as configured: "
                    f"{_reply(error.code, error.message)} (check MAILSUPPORT_SMTP_USER, "
                    "MAILSUPPORT_SMTP_PASSWORD and MAILSUPPORT_SMTP_SECURITY)"
                ) from None
            if error.code == 421 and self._client is not None:
                self._client.close()  # "closing the channel": the next message reconnects
            reply = _reply(error.code, error.message)
            return {r: (_verdict(error.code), reply) for r in recipients}
        except ValueError as error:  # an address aiosmtplib will not put on the wire
            return {r: ("permanent", f"invalid address: {error}") for r in recipients}
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # Dropped, timed out or confused mid-transaction: a new connection next time.
            if self._client is not None:
                self._client.close()
            text = _error_text(error) or "no answer within the time limit"
            return {r: ("temporary", f"connection to {self.where} failed: {text}")
                    for r in recipients}  # fmt: skip
        results: Results = {}
        for rcpt in recipients:
            if rcpt in refused:
                response = refused[rcpt]
                results[rcpt] = (_verdict(response.code), _reply(response.code, response.message))
            else:
                results[rcpt] = ("sent", "")
        return results

    async def _connection(self) -> aiosmtplib.SMTP:
        """The open connection, checked with NOOP, or a new one. Connection trouble raises
        _ConnectionDown, configuration trouble ConfigError."""
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.noop()
                return self._client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._client.close()  # the server dropped an idle connection: reconnect
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port_or_default,
            use_tls=s.smtp_security == "ssl",
            # "none" means none: no opportunistic STARTTLS that could fail verification.
            start_tls=s.smtp_security == "starttls",
            validate_certs=True,
            timeout=s.smtp_timeout,
            username=s.smtp_user or None,
            password=s.smtp_password.get_secret_value() if s.smtp_user else None,
        )
        try:
            await self._connect(client)
        except aiosmtplib.SMTPAuthenticationError as error:
            raise ConfigError(
                f"SMTP login to {self.where} as {s.smtp_user} failed: "
                f"{_reply(error.code, error.message)} "
                "(check MAILSUPPORT_SMTP_USER and MAILSUPPORT_SMTP_PASSWORD)"
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            mismatch = await self._tls_mismatch(error)
            raise (mismatch or self._connect_error(error)) from None
        self._client = client
        return client

    async def _connect(self, client: aiosmtplib.SMTP) -> None:
        """client.connect(). A plain-text connection (none, starttls) still not through after
        tlsprobe.patience() may be waiting for a greeting that never comes, from a port that
        speaks TLS: a probe asks while the connection keeps waiting (see tlsprobe)."""
        s = self.settings
        if s.smtp_security == "ssl":  # a plain-text port fails the handshake at once
            await client.connect()
            return
        connecting = asyncio.ensure_future(client.connect())
        try:
            await asyncio.wait({connecting}, timeout=tlsprobe.patience(s.smtp_timeout))
            if not connecting.done() and await asyncio.to_thread(
                tlsprobe.speaks_tls,
                s.smtp_host,
                s.smtp_port_or_default,
                tlsprobe.probe_seconds(s.smtp_timeout),
            ):
                raise tlsprobe.tls_port_error("SMTP", self.where, s.smtp_security)
            await connecting
        finally:
            if not connecting.done():  # given up on, or we are being cancelled
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting  # aiosmtplib closes the half-open connection

    async def _tls_mismatch(self, error: BaseException) -> ConfigError | None:
        """The configuration error behind a failed connection when the port speaks the other
        way than MAILSUPPORT_SMTP_SECURITY says, found by a short probe; else None."""
        s = self.settings
        host, port = s.smtp_host, s.smtp_port_or_default
        seconds = min(tlsprobe.PROBE_SECONDS, s.smtp_timeout)
        if s.smtp_security == "ssl":
            if not tlsprobe.broke_handshake(error):
                return None
            greeting = await asyncio.to_thread(tlsprobe.plain_greeting, host, port, seconds)
            if greeting is None:  # not plain text either: the network's fault after all
                return None
            return tlsprobe.plain_port_error("SMTP", self.where, greeting)
        # Hung up before greeting: a TLS port may do that to a client that says nothing.
        hung_up = isinstance(error, aiosmtplib.SMTPConnectError) and isinstance(
            error.__cause__, aiosmtplib.SMTPServerDisconnected
        )
        if hung_up and await asyncio.to_thread(tlsprobe.speaks_tls, host, port, seconds):
            return tlsprobe.tls_port_error("SMTP", self.where, s.smtp_security)
        return None

    def _connect_error(self, error: BaseException) -> Exception:
        text = _error_text(error)
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return ConfigError(
                    f"the certificate of the SMTP server {self.where} is not trusted: "
                    f"{cause.verify_message} (check MAILSUPPORT_SMTP_HOST, or install the "
                    "server's certificate authority on this host)"
                )
            cause = cause.__cause__ or cause.__context__
        if "STARTTLS extension not supported" in text:
            return ConfigError(
                f"the SMTP server {self.where} does not offer STARTTLS "
                "(check MAILSUPPORT_SMTP_SECURITY and MAILSUPPORT_SMTP_PORT)"
            )
        if "AUTH extension is not supported" in text:
            return ConfigError(
                f"the SMTP server {self.where} offers no login here "
                "(check MAILSUPPORT_SMTP_SECURITY, or leave MAILSUPPORT_SMTP_USER empty)"
            )
        return _ConnectionDown(f"cannot connect to {self.where}: {text or 'timed out'}")


def _error_text(error: BaseException) -> str:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _reply(error.code, error.message)
    return " ".join(str(error).split())
