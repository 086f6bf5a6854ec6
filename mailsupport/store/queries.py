"""Read-side queries: tickets and messages as plain dicts for the CLI, JSON and export.

`list`, `show`, `search` and `export` read plain SQL through a `Reader` (store/reader.py),
on the driver itself: importing SQLAlchemy and SQLModel takes most of a second of a command
that should answer in a fraction of one (docs/benchmarks.md). Module level imports stay
light on purpose: SQLAlchemy, SQLModel and the models only in functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailsupport.store import MAILED_ROLES, PRIORITY_RANK
from mailsupport.store.reader import Reader, Record

# Most urgent first (as models.PRIORITIES, highest last).
_PRIORITY_RANK = PRIORITY_RANK.replace("CASE priority", "CASE t.priority")  # (indexed)
# `list --sort`: each order with its tie-breakers, most recent / most important first.
SORTS: dict[str, tuple[tuple[str, bool], ...]] = {
    "updated": (("t.updated_at", True), ("t.id", True)),
    "created": (("t.created_at", True), ("t.id", True)),
    "priority": ((_PRIORITY_RANK, False), ("t.updated_at", True), ("t.id", True)),
    "number": (("t.number", True),),
}
_TICKET_COLUMNS = (
    "t.id, t.number, t.subject, t.status, t.priority, t.requester, t.requester_name, "
    "t.created_at, t.updated_at, t.closed_at, t.merged_into_id, t.assignee, t.queue, "
    "t.follows_id, f.number AS follows, t.type, t.line, t.first_response_at, "
    "t.first_response_due, t.resolution_due, t.automatic, t.mailbox, t.last_writer"
)
_TICKETS = "tickets t LEFT JOIN tickets f ON f.id = t.follows_id"
_MESSAGE_COLUMNS = (
    'm.id, m.ticket_id, m.message_id, m.direction, m.in_reply_to, m.refs, m."to", m.cc, '
    "m.from_address, m.from_name, m.subject, m.date, m.received_at, m.text, "
    "m.thread_reason, m.ack_decision, m.author, m.raw_id"
)


def _placeholders(prefix: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`:p0, :p1, ...` and their values, for an IN list both backends accept."""
    params = {f"{prefix}{i}": value for i, value in enumerate(values)}
    return ", ".join(":" + key for key in params), params


# -- plain dicts -----------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def format_address(entry: Mapping[str, str]) -> str:
    name, address = entry.get("name", ""), entry.get("address", "")
    return f"{name} <{address}>" if name else address


def ticket_dict(
    ticket: Any, tags: Sequence[str] = (), follows: int | None = None
) -> dict[str, Any]:
    """A ticket (a model object or a Record) as JSON-ready values."""
    return {
        "id": ticket.id,
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "requester": ticket.requester,
        "requester_name": ticket.requester_name,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "closed_at": iso(ticket.closed_at),
        "merged_into": ticket.merged_into_id,
        "assignee": ticket.assignee,
        "queue": ticket.queue,
        "tags": list(tags),
        "follows": follows,  # the number of the ticket this one continues
        "type": ticket.type,
        "line": ticket.line,
        "first_response_at": iso(ticket.first_response_at),
        "first_response_due": iso(ticket.first_response_due),
        "resolution_due": iso(ticket.resolution_due),
        # Opened by automatic mail: its kind (bounce, auto-reply, bulk...); "" for a person.
        "automatic": ticket.automatic,
        # The mailbox the customer wrote to ("" = the default one: see mailboxes.py).
        "mailbox": ticket.mailbox,
        # Who wrote last: "customer" (waiting for us), "us", or "" (nobody yet).
        "last_writer": ticket.last_writer,
    }


def message_dict(
    message: Any, attachments: Sequence[Any], delivery: Any | None = None
) -> dict[str, Any]:
    """A message (a model object or a Record) with its attachments and delivery."""
    sender = format_address({"name": message.from_name, "address": message.from_address})
    return {
        "message_id": message.message_id,
        "direction": message.direction,
        "from": sender,
        "to": [format_address(a) for a in message.to],
        "cc": [format_address(a) for a in message.cc],
        "subject": message.subject,
        "date": iso(message.date or message.received_at),
        "received_at": iso(message.received_at),
        "in_reply_to": message.in_reply_to.split(),
        "references": message.refs.split(),
        "text": message.text,
        "thread_reason": message.thread_reason,
        # The agent who wrote a reply or a note ("" for mail and automatic messages).
        "author": message.author,
        # Incoming mail: whether it was acknowledged, or why not ("" when never considered).
        "ack": message.ack_decision,
        # Our own mail sent through the outbox: how its delivery went (None otherwise).
        "delivery": None if delivery is None else _delivery(delivery),
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "inline": a.inline,
            }
            for a in attachments
        ],
    }


def _delivery(item: Any) -> dict[str, Any]:
    return {
        "outbox_id": item.id,
        "status": item.status,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "sent_at": iso(item.sent_at),
    }


# -- tickets ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketFilter:
    """What `list` narrows down to; each field is one indexed condition."""

    status: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    priority: str | None = None
    queue: str | None = None
    tags: tuple[str, ...] = ()  # all of them
    since: datetime | None = None  # updated at or after
    line: int | None = None
    type: str | None = None
    # SLA: not yet answered or resolved, and due before this time (now: overdue).
    due_before: datetime | None = None
    # In one of these mailboxes ("" stands for tickets filed before there were several).
    mailboxes: tuple[str, ...] = ()
    waiting: bool = False  # the customer wrote last (and it is not closed)
    requester: str | None = None  # the customer's address, lowercased


def ticket_query(
    reader: Reader, where: TicketFilter, sort: str = "updated", reverse: bool = False
) -> tuple[str, dict[str, Any]]:
    """The SQL of `list` (without LIMIT) and its parameters."""
    conditions = ["t.merged_into_id IS NULL"]
    params: dict[str, Any] = {}
    for column in ("status", "priority", "queue", "assignee", "line", "type"):
        value = getattr(where, column)
        if value is not None:
            conditions.append(f"t.{column} = :{column}")
            params[column] = value
    if where.status is None:  # spam only when asked for by name
        conditions.append("t.status <> 'spam'")
    if where.unassigned:
        conditions.append("t.assignee IS NULL")
    if where.waiting:
        conditions.append("t.last_writer = 'customer' AND t.status <> 'closed'")
    if where.requester is not None:
        conditions.append("t.requester = :requester")
        params["requester"] = where.requester
    if where.mailboxes:
        names, values = _placeholders("mailbox", where.mailboxes)
        conditions.append(f"t.mailbox IN ({names})")
        params.update(values)
    for i, tag in enumerate(dict.fromkeys(where.tags)):
        conditions.append(f"t.id IN (SELECT ticket_id FROM ticket_tags WHERE tag = :tag{i})")
        params[f"tag{i}"] = tag
    if where.since is not None:
        conditions.append("t.updated_at >= :since")
        params["since"] = reader.time_param(where.since)
    if where.due_before is not None:
        # Each half uses the index of its due time.
        conditions.append(
            "t.status <> 'closed' AND (t.resolution_due < :due OR "
            "(t.first_response_at IS NULL AND t.first_response_due < :due))"
        )
        params["due"] = reader.time_param(where.due_before)
    order = ", ".join(
        f"{expr} {'DESC' if descending != reverse else 'ASC'}" for expr, descending in SORTS[sort]
    )
    where_sql = " AND ".join(conditions)
    return f"SELECT {_TICKET_COLUMNS} FROM {_TICKETS} WHERE {where_sql} ORDER BY {order}", params


def list_tickets(
    reader: Reader,
    where: TicketFilter = TicketFilter(),  # frozen, so one default is safe to share
    sort: str = "updated",
    reverse: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Tickets that were not merged away, as ticket_dict plus their message count.

    One query finds the page through the index of its filter; the message counts and tags
    are then looked up for that page only, never over all messages."""
    sql, params = ticket_query(reader, where, sort, reverse)
    tickets = reader.all(
        sql + " LIMIT :limit OFFSET :offset", params | {"limit": limit, "offset": offset}
    )
    ids = [t.id for t in tickets]
    counts = _message_counts(reader, ids)
    tags = tags_of(reader, ids)
    return [
        ticket_dict(t, tags.get(t.id, ()), t.follows) | {"messages": counts.get(t.id, 0)}
        for t in tickets
    ]


def _message_counts(reader: Reader, ticket_ids: Sequence[int]) -> dict[int, int]:
    if not ticket_ids:
        return {}
    marks, params = _placeholders("t", ticket_ids)
    rows = reader.all(
        f"SELECT ticket_id, count(*) AS n FROM messages WHERE ticket_id IN ({marks}) "
        "GROUP BY ticket_id",
        params,
    )
    return {r.ticket_id: int(r.n) for r in rows}


def tags_of(reader: Reader, ticket_ids: Sequence[int]) -> dict[int, list[str]]:
    """Each ticket's tags, sorted."""
    if not ticket_ids:
        return {}
    marks, params = _placeholders("t", ticket_ids)
    found: dict[int, list[str]] = defaultdict(list)
    for row in reader.all(
        f"SELECT ticket_id, tag FROM ticket_tags WHERE ticket_id IN ({marks}) ORDER BY tag", params
    ):
        found[row.ticket_id].append(row.tag)
    return found


def ticket_by_number(reader: Reader, number: int) -> Record | None:
    """The ticket with this number, following merges to the ticket that lives on."""
    sql = f"SELECT {_TICKET_COLUMNS} FROM {_TICKETS} WHERE t.{{}} = :key"
    ticket = reader.first(sql.format("number"), {"key": number})
    seen: set[int] = set()
    while ticket is not None and ticket.merged_into_id is not None and ticket.id not in seen:
        seen.add(ticket.id)
        ticket = reader.first(sql.format("id"), {"key": ticket.merged_into_id})
    return ticket


def messages_of(reader: Reader, ticket_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Each ticket's messages in conversation order, as dicts with their attachments."""
    if not ticket_ids:
        return {}
    marks, params = _placeholders("t", ticket_ids)
    messages = reader.all(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.ticket_id IN ({marks}) "
        "ORDER BY m.received_at, m.id",
        params,
    )
    attachments: dict[int, list[Record]] = defaultdict(list)
    deliveries: dict[str, Record] = {}
    if messages:
        # Joined through the messages of these tickets: no list of message ids, however long.
        for part in reader.all(
            "SELECT a.message_pk, a.filename, a.content_type, a.size, a.sha256, a.inline "
            "FROM attachments a JOIN messages m ON m.id = a.message_pk "
            f"WHERE m.ticket_id IN ({marks}) ORDER BY a.id",
            params,
        ):
            attachments[part.message_pk].append(part)
        if any(m.direction == "out" for m in messages):
            for item in reader.all(
                "SELECT o.id, o.message_id, o.status, o.attempts, o.last_error, o.sent_at "
                "FROM outbox o JOIN messages m ON m.message_id = o.message_id "
                f"WHERE m.ticket_id IN ({marks}) AND m.direction = 'out'",
                params,
            ):
                deliveries[item.message_id] = item
    result: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        result[message.ticket_id].append(
            message_dict(
                message, attachments.get(message.id, []), deliveries.get(message.message_id)
            )
        )
    return result


def ticket_detail(reader: Reader, ticket: Record) -> dict[str, Any]:
    """Everything `show` displays about one ticket."""
    detail = ticket_dict(ticket, tags_of(reader, [ticket.id]).get(ticket.id, ()), ticket.follows)
    detail["messages"] = messages_of(reader, [ticket.id]).get(ticket.id, [])
    detail["participants"] = [  # role: requester, cc (both mailed) or seen (not mailed)
        {"address": p.address, "name": p.name, "role": p.role, "mailed": p.role in MAILED_ROLES}
        for p in reader.all(
            "SELECT address, name, role FROM participants WHERE ticket_id = :id "
            "ORDER BY first_seen, address",
            {"id": ticket.id},
        )
    ]
    detail["history"] = [
        {"at": iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail}
        for e in reader.all(
            "SELECT at, actor, action, detail FROM ticket_events WHERE ticket_id = :id "
            "ORDER BY at, id",
            {"id": ticket.id},
        )
    ]
    return detail


def find_message(reader: Reader, ticket: Record, which: str) -> Record | None:
    """One message of the ticket: `which` is its position in the conversation (1 is the
    first, as `show` numbers them) or its Message-ID, with or without angle brackets."""
    which = which.strip()
    columns = "m.message_id, m.direction, m.raw_id"
    if which.isdigit():
        if int(which) < 1:
            return None
        return reader.first(
            f"SELECT {columns} FROM messages m WHERE m.ticket_id = :id "
            "ORDER BY m.received_at, m.id LIMIT 1 OFFSET :skip",
            {"id": ticket.id, "skip": int(which) - 1},
        )
    return reader.first(
        f"SELECT {columns} FROM messages m WHERE m.message_id = :mid AND m.ticket_id = :id",
        {"mid": which.removeprefix("<").removesuffix(">"), "id": ticket.id},
    )


def original_bytes(reader: Reader, message: Record) -> bytes | None:
    """A message's bytes as they arrived or, for ours, as we sent them; None when none are
    kept (internal notes)."""
    if message.raw_id is not None:
        raw = reader.first("SELECT data FROM raw_messages WHERE id = :id", {"id": message.raw_id})
        if raw is not None:
            return bytes(raw.data)
    sent = reader.first(
        "SELECT data FROM outbox WHERE message_id = :mid", {"mid": message.message_id}
    )
    return None if sent is None else bytes(sent.data)


def export_tickets(reader: Reader, page: int = 500) -> Iterator[dict[str, Any]]:
    """Every ticket with its messages, oldest first, a page of tickets per query."""
    last_id = 0
    while True:
        tickets = reader.all(
            f"SELECT {_TICKET_COLUMNS} FROM {_TICKETS} WHERE t.id > :last ORDER BY t.id LIMIT :n",
            {"last": last_id, "n": page},
        )
        if not tickets:
            return
        ids = [t.id for t in tickets]
        messages = messages_of(reader, ids)
        tags = tags_of(reader, ids)
        for ticket in tickets:
            line = ticket_dict(ticket, tags.get(ticket.id, ()), ticket.follows)
            line["messages"] = messages.get(ticket.id, [])
            yield line
        last_id = tickets[-1].id
