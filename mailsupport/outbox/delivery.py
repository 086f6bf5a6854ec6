"""Delivering the outbox: claim what is due, send it over SMTP, record each result.

See the package's notes for the claim, lease, retry and order rules. `flush` is what `poll`,
the daemon and `outbox flush` call; `deliver_due` for one ticket is what `ingest` and the
agents' commands call after their transactions commit.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from mailsupport.config import Settings
from mailsupport.errors import ConfigError, MailSupportError
from mailsupport.outbox.admin import count_due
from mailsupport.outbox.queue import UNORDERED_KINDS, load_data, unclaimed
from mailsupport.outbox.senders import Senders
from mailsupport.outbox.smtp import ConnectionDown, Results
from mailsupport.store import direct
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem, Ticket
from mailsupport.store.tickets import record_event

log = logging.getLogger("mailsupport.outbox")

BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)
# A sender's claim is renewed before each message when less than this many send budgets
# (see SmtpConnection.budget) remain, and runs for LEASE_BUDGETS of them: a live sender never
# loses its claim, a dead one's rows come free within about LEASE_BUDGETS * budget.
LEASE_BUDGETS = 3
# A flush with at least this many items due first has PostgreSQL count the outbox again.
# Its statistics lag behind a poll that just queued thousands of acknowledgements, and the
# planner, expecting few due items, then read all of them and sorted them for each round's
# first 100 (20 s for a flush of 47,000); counted, it walks the ids from the last round's.
ANALYZE_DUE = 1000
ERROR_MAX_CHARS = 2000


def describe_delivery(counts: Counter[str]) -> str:
    """One line for a delivery run's counts, as poll prints and the daemon logs it."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


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
    mailbox: str = ""  # whose SMTP server sends it (senders.py)


def deliver_due(
    store: Store,
    settings: Settings,
    now: Callable[[], datetime],
    limit: int = 100,
    *,
    rand: Callable[[], float] = random.random,
    tickets: Sequence[int] | None = None,
    deadline: datetime | None = None,
    outcomes: dict[int, str] | None = None,
    down: dict[str, str] | None = None,
    after: int = 0,
) -> Counter[str]:
    """Send up to `limit` due messages (only those of the tickets numbered in `tickets`,
    when given); counts of "sent", "retry", "failed", "lost" and "held".

    Mail to one ticket leaves in the order it was queued (see `_claim`). A message whose
    earlier one on the ticket was not sent in this run (it waits for a retry) is "held":
    given back unattempted, behind it. So is what is left when `deadline` passes: no message
    is begun after it. `outcomes`, when given, receives each claimed item's outcome by id.
    `down` (mailbox -> why) names the servers found unreachable: their items count a failed
    attempt without a connection tried; given, it is shared with the caller's other runs.
    `after`: only items with a greater id (a flush's rounds go on where the last one ended).

    Raises ConfigError when the settings keep mail from going out (no SMTP host, login
    refused, untrusted certificate, a security mode the port does not speak): what was
    claimed is released, still queued, with the error as its last_error. Database trouble
    raises TemporaryError as everywhere.
    """
    counts: Counter[str] = Counter()
    senders = Senders(settings)
    token = secrets.token_hex(16)
    lease = senders.budget * LEASE_BUDGETS
    with store.read() as session:
        if not _any_due(session, now()):
            return counts
    if not senders.any_smtp:
        raise ConfigError(
            "MAILSUPPORT_SMTP_HOST is not set: outgoing mail waits in the outbox until it is"
        )
    claimed_at = now()
    claimed = _claim(store, claimed_at, limit, lease, token, tickets, after)
    lease_end = claimed_at + lease
    # Tickets whose earlier message was not sent in this run: their later ones wait.
    behind: set[int] = set()

    def note(item: _Claimed, outcome: str) -> None:
        counts[outcome] += 1
        if outcomes is not None:
            outcomes[item.id] = outcome
        if outcome in ("retry", "lost", "held"):
            behind.add(item.ticket_id)

    def hold(item: _Claimed, why: str | None) -> None:
        _release(store, token, why, item.id)
        note(item, "held")

    def record(*attempts: tuple[_Claimed, Results]) -> None:
        written = _record(store, settings, attempts, now(), token, rand)
        for (item, _), (outcome, first_sent_at) in zip(attempts, written, strict=True):
            note(item, outcome)
            if first_sent_at is not None:  # committed as sent: only now may a copy exist
                senders.copies(item.mailbox).add(store, item.id, item.message_id, first_sent_at)

    # Mailboxes whose SMTP server is unreachable in this run -> why.
    down = {} if down is None else down
    # Attempts that failed with their server down, written together (an outage with
    # thousands of queued acknowledgements is one transaction a claim, not one an item)
    # before the next item is looked at, so the order of outcomes stays the same.
    failing: list[tuple[_Claimed, Results]] = []

    def record_failing() -> None:
        if failing:
            record(*failing)
            failing.clear()

    try:
        for item in claimed:
            mailbox = senders.name(item.mailbox)
            if mailbox in down and item.pending:  # one connection attempt per server and run
                failing.append((item, {r: ("temporary", down[mailbox]) for r in item.pending}))
                continue
            record_failing()
            if item.ticket_id in behind:
                hold(item, "waits until the ticket's earlier mail is sent")
                continue
            if deadline is not None and now() >= deadline:
                hold(item, None)
                continue
            if lease_end - now() < senders.budget * (LEASE_BUDGETS - 1):
                lease_end = _renew(store, now(), lease, token)
            if not item.pending:  # every recipient answered already (e.g. edited by hand)
                record((item, {}))
                continue
            if not senders.settings(mailbox).smtp_host:
                hold(item, f"mailbox {mailbox!r} has no SMTP server (smtp_host)")
                continue
            data = load_data(store, item.id)
            try:
                results = senders.smtp(mailbox).send(item.mail_from, item.pending, data)
            except ConnectionDown as error:
                # The rest of this mailbox's items count a failed attempt too.
                down[mailbox] = str(error)
                record((item, {r: ("temporary", str(error)) for r in item.pending}))
                continue
            record((item, results))
        record_failing()
    except ConfigError as error:
        _release(store, token, str(error))
        raise
    finally:
        senders.close()
    return counts


def _due(at: datetime, item: Any = OutboxItem, *, status_unindexed: bool = False) -> Any:
    """`item` (OutboxItem, or an alias of it) is queued, due at `at` and held by no sender.
    `status_unindexed`: the status compared as an expression, which keeps SQLite off the
    index on status and due time (see _candidates)."""
    status = col(item.status) + "" if status_unindexed else col(item.status)
    return sa.and_(
        status == "queued",
        col(item.next_attempt_at) <= at,
        unclaimed(item, at),
    )


def _any_due(session: Session, at: datetime) -> bool:
    return session.exec(select(OutboxItem.id).where(_due(at)).limit(1)).first() is not None


def _not_behind(at: datetime) -> Any:
    """No earlier queued item of the same ticket is out of reach at `at` (waiting for a
    retry, or claimed by another sender): only then may an item be a candidate. Mail to
    agents keeps no such order (UNORDERED_KINDS)."""
    earlier = aliased(OutboxItem)
    return sa.or_(
        col(OutboxItem.kind).in_(UNORDERED_KINDS),
        ~sa.exists().where(
            col(earlier.ticket_id) == col(OutboxItem.ticket_id),
            col(earlier.id) < col(OutboxItem.id),
            col(earlier.status) == "queued",
            col(earlier.kind).not_in(UNORDERED_KINDS),
            sa.not_(sa.and_(col(earlier.next_attempt_at) <= at, unclaimed(earlier, at))),
        ),
    )


def _claim_statement(at: datetime, lease: timedelta, token: str) -> Any:
    """Claim the items whose ids are bound as "ids", in one statement, keeping each ticket's
    order: an item is taken only when every earlier queued item of its ticket is among the
    ids and due too, so taken by the same statement (its own earlier ones in turn are
    earlier than this item as well). The conditions are checked inside the UPDATE, so only
    one of two racing senders changes a row; its answer is the ids it took."""
    earlier = aliased(OutboxItem)
    ids = sa.bindparam("ids", expanding=True)
    in_order = sa.or_(
        col(OutboxItem.kind).in_(UNORDERED_KINDS),
        ~sa.exists().where(
            col(earlier.ticket_id) == col(OutboxItem.ticket_id),
            col(earlier.id) < col(OutboxItem.id),
            col(earlier.status) == "queued",
            col(earlier.kind).not_in(UNORDERED_KINDS),
            sa.not_(sa.and_(col(earlier.id).in_(ids), _due(at, earlier))),
        ),
    )
    return (
        sa.update(OutboxItem)
        .where(col(OutboxItem.id).in_(ids), _due(at), in_order)
        .values(claimed_until=at + lease, claim_token=token)
        .returning(col(OutboxItem.id))
        .execution_options(synchronize_session=False)
    )


def _candidates(
    at: datetime,
    limit: int,
    tickets: Sequence[int] | None = None,
    after: int = 0,
    dialect: str = "",
) -> Any:
    """The query of the items a claim may take (ids and tickets), oldest first, from the
    first id after `after`; `dialect`: the database's, for the way it is read."""
    # Walk the ids from `after`: SQLite otherwise reads every due item by the index on
    # status and due time and sorts them all for the first 100, each claim again (a flush
    # of 46,718 items: 17 s). Not on PostgreSQL, which then misjudges how many rows match.
    walk = tickets is None and dialect == "sqlite"
    due = sa.and_(_due(at, status_unindexed=walk), _not_behind(at), col(OutboxItem.id) > after)
    if tickets is not None:
        numbered = select(Ticket.id).where(col(Ticket.number).in_(tickets))
        due = sa.and_(due, col(OutboxItem.ticket_id).in_(numbered))
    # SKIP LOCKED lets a second sender on PostgreSQL take other rows instead of waiting for
    # these; SQLite serializes writers anyway and ignores the clause. In id order, so that
    # an item's earlier ones on its ticket are candidates before it.
    return (
        select(OutboxItem.id, OutboxItem.ticket_id)
        .where(due)
        .order_by(col(OutboxItem.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def _claim(
    store: Store,
    at: datetime,
    limit: int,
    lease: timedelta,
    token: str,
    tickets: Sequence[int] | None = None,
    after: int = 0,
) -> list[_Claimed]:
    """Claim up to `limit` due items, oldest first, keeping each ticket's order: an item is
    claimed only together with every earlier queued item of its ticket, so a later one never
    leaves while an earlier one waits. Failed and sent items do not hold anything back."""
    with store.write() as session:
        dialect = session.get_bind().dialect.name
        candidates = session.exec(_candidates(at, limit, tickets, after, dialect)).all()
        if not candidates:
            return []
        # One statement for all of them: one a candidate cost a round trip and the
        # server's work of a statement each (thousands in a poll that acknowledges).
        claim = _claim_statement(at, lease, token)
        won = list(session.execute(claim, {"ids": [item for item, _ in candidates]}).scalars())
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
                OutboxItem.mailbox,
            )
            .join(Ticket, col(Ticket.id) == col(OutboxItem.ticket_id))
            .where(col(OutboxItem.id).in_(won))
            .order_by(col(OutboxItem.id))
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
            mailbox=row[8],
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


def _release(store: Store, token: str, error: str | None, item_id: int | None = None) -> None:
    """Give claimed rows back (all of them, or the one with `item_id`), due as they were and
    unchanged but for the error when one is given."""
    values: dict[str, Any] = {"claimed_until": None, "claim_token": None}
    if error is not None:
        values["last_error"] = error[:ERROR_MAX_CHARS]
    ours = sa.and_(col(OutboxItem.claim_token) == token, col(OutboxItem.status) == "queued")
    if item_id is not None:
        ours = sa.and_(ours, col(OutboxItem.id) == item_id)
    with store.write() as session:
        session.execute(
            sa.update(OutboxItem)
            .where(ours)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def _record(
    store: Store,
    settings: Settings,
    attempts: Sequence[tuple[_Claimed, Results]],
    at: datetime,
    token: str,
    rand: Callable[[], float],
) -> list[tuple[str, datetime | None]]:
    """Write the outcomes of attempts in one transaction: for each, "sent", "retry",
    "failed" or "lost", and the sent time when the attempt made the message sent for the
    first time (else None). By statements, one for all of them each way: an outage writes
    up to a claim's worth, and the ORM's objects cost more than the writing."""
    with store.write() as session:
        ids = [claimed.id for claimed, _ in attempts]
        ours = {
            row.id: row
            for row in session.exec(
                select(*(col(getattr(OutboxItem, name)) for name in _READ))
                .where(col(OutboxItem.id).in_(ids), OutboxItem.claim_token == token)
                .with_for_update()
            )
        }
        written: list[tuple[str, datetime | None]] = []
        changes: list[tuple[int, dict[str, Any]]] = []
        for claimed, results in attempts:
            row = ours.get(claimed.id)
            outcome, first_sent, values = _record_one(
                session, settings, claimed, row, results, at, rand
            )
            written.append((outcome, first_sent))
            if values:
                changes.append((claimed.id, values))
        direct.set_many_by_id(session, OutboxItem, changes)
        return written


# The columns recording an attempt reads of its item. It writes the same columns for every
# item (those it does not change as they were), so that one statement writes them all.
_READ = ("id", "ticket_id", "status", "attempts", "recipient_status", "queued_at", "sent_at",
         "next_attempt_at")  # fmt: skip


def _record_one(
    session: Session,
    settings: Settings,
    claimed: _Claimed,
    item: Any,
    results: Results,
    at: datetime,
    rand: Callable[[], float],
) -> tuple[str, datetime | None, dict[str, Any]]:
    """One attempt's outcome: what to write to its row (nothing when lost), its "delivery-
    failed" event written now. `item`: its row's _READ columns, locked, when it is still
    claimed by this run."""
    if item is None or item.status != "queued":
        # Our lease ran out and another sender took the row over: it records.
        log.warning(
            "outbox item %s <%s>: claim lost before its result was recorded",
            claimed.id, claimed.message_id,
        )  # fmt: skip
        return "lost", None, {}
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
    attempts = item.attempts + 1
    deadline = item.queued_at + timedelta(seconds=settings.smtp_max_age)
    if waiting and at >= deadline:
        age = _age(at - item.queued_at)
        for rcpt, reply in waiting.items():
            status[rcpt] = refused[rcpt] = f"gave up after {age}: {reply}"
        waiting = {}
    last_error = _describe({**refused, **waiting})[:ERROR_MAX_CHARS]
    values = {
        "attempts": attempts,
        "claimed_until": None,
        "claim_token": None,
        "recipient_status": status,
        "last_error": last_error,
        "next_attempt_at": item.next_attempt_at,
        "status": item.status,
        "sent_at": item.sent_at,
    }
    where = f"ticket #{claimed.ticket_number} {claimed.kind} <{claimed.message_id}>"
    if refused:
        record_event(
            session, item.ticket_id, "delivery-failed",
            f"{claimed.kind} <{claimed.message_id}> not delivered: {_describe(refused)}", at,
        )  # fmt: skip
    if waiting:
        values["next_attempt_at"] = min(at + backoff(attempts, rand), deadline)
        outcome = "retry"
        next_try = values["next_attempt_at"].isoformat(timespec="seconds")
        log.info("%s: temporary failure, next try %s: %s", where, next_try, _describe(waiting))
    elif any(v == "sent" for v in status.values()):
        # Already sent once (`outbox retry` then reached a recipient refused before):
        # the copy was made that first time.
        first_sent = at if item.sent_at is None else None
        values["status"], values["sent_at"], outcome = "sent", at, "sent"
        log.info("%s sent to %s", where, ", ".join(r for r in results if r not in refused))
    else:
        values["status"], outcome = "failed", "failed"
        log.warning("%s failed: %s", where, last_error)
    return outcome, first_sent, values


def _describe(problems: dict[str, str]) -> str:
    """One line for the ticket and last_error; recipients sharing a reply share the line."""
    by_reply: dict[str, list[str]] = {}
    for rcpt, reply in problems.items():
        by_reply.setdefault(reply, []).append(rcpt)
    return "; ".join(f"{', '.join(rcpts)}: {reply}" for reply, rcpts in by_reply.items())


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def flush(
    store: Store, settings: Settings, now: Callable[[], datetime], batch: int = 100
) -> Counter[str]:
    """Send everything due now (what `mailsupport outbox flush` does), in rounds of `batch`
    short claims so that a running daemon can share the work. Never more items than were due
    at the start, so mail that fails and comes due again cannot keep the loop going. A server
    found unreachable is tried once a flush, not once a round: thousands of acknowledgements
    queued behind a server that never answers would otherwise wait SMTP_TIMEOUT a round.
    Each round reads on after the last item the round before took: the items before it
    were dealt with, or wait behind one that was.
    """
    due = count_due(store, now())
    if due >= ANALYZE_DUE and store.engine.dialect.name == "postgresql":
        _analyze(store)
    counts: Counter[str] = Counter()
    down: dict[str, str] = {}
    after = 0
    while sum(counts.values()) < due:
        outcomes: dict[int, str] = {}
        done = deliver_due(store, settings, now, batch, down=down, outcomes=outcomes, after=after)
        counts += done
        if sum(done.values()) < batch:  # (a full round has outcomes: `after` moves on)
            break
        after = max(outcomes)
    return counts


def _analyze(store: Store) -> None:
    """ANALYZE the outbox; a database user who may not is left to autovacuum."""
    try:
        with store.write() as session:
            session.execute(sa.text("ANALYZE outbox"))
    except (MailSupportError, exc.DBAPIError) as error:
        log.info("outbox statistics not refreshed: %s", error)
