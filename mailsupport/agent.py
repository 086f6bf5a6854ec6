"""What agents do to tickets: reply, note, close, reopen, assign, prioritise, tag, merge.

Each action works in the caller's transaction (`desk` runs them by ticket number, each in
one of its own), checks that it applies (a RefusedError when it does not), and records who
did what in the ticket's history. Mail goes through `Outgoing`, so it is queued with the
change and threads back into the ticket.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.automated import is_noreply_address
from mailsupport.compose import Composed
from mailsupport.config import Settings
from mailsupport.errors import NotFoundError, RefusedError, UsageError
from mailsupport.mail import Address
from mailsupport.practice import Practice
from mailsupport.store import CC, MAILED_ROLES, NAME, NO_NOTIFY, REQUESTER, SEEN
from mailsupport.store.models import (
    PRIORITIES,
    Message,
    Ticket,
    TicketEvent,
    TicketTag,
)
from mailsupport.store.tickets import (
    merge_tickets,
    participants,
    record_event,
    set_role,
    ticket_by_number,
)
from mailsupport.team import check_line
from mailsupport.ticketmail import FilePart, Outgoing, parent_of

TAG_MAX = 64
# What a reply may set a ticket to (MAILSUPPORT_REPLY_STATUS, or the agent's choice).
REPLY_STATUSES = ("pending", "open", "closed")


def ticket(session: Session, number: int) -> Ticket:
    """The ticket agents call #number (following merges), or NotFoundError."""
    found = ticket_by_number(session, number)
    if found is None:
        raise NotFoundError(f"no ticket #{number} (see `mailsupport list`)")
    return found


def record(
    session: Session, t: Ticket, action: str, detail: str, agent: str, now: datetime
) -> None:
    assert t.id is not None
    record_event(session, t.id, action, detail, now, actor=agent)
    t.updated_at = max(t.updated_at, now)
    session.add(t)


def _set_status(session: Session, t: Ticket, status: str, agent: str, now: datetime) -> None:
    if t.status == status:
        return
    record(session, t, "status", f"{t.status} -> {status}", agent, now)
    t.status = status
    t.closed_at = now if status == "closed" else None


def last_from_customer(session: Session, t: Ticket) -> Message | None:
    """The customer's latest message: the one a reply answers and quotes."""
    return session.exec(
        select(Message)
        .where(Message.ticket_id == t.id, Message.direction == "in")
        .order_by(col(Message.received_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()


def latest_messages(session: Session, t: Ticket, limit: int) -> list[Message]:
    """The ticket's latest `limit` messages, notes included, newest first."""
    return list(
        session.exec(
            select(Message)
            .where(Message.ticket_id == t.id)
            .order_by(col(Message.received_at).desc(), col(Message.id).desc())
            .limit(limit)
        ).all()
    )


def messages_after(session: Session, t: Ticket, mark: int) -> list[Message]:
    """The ticket's messages stored after message id `mark` (see `newest_message_id`),
    notes included, oldest first: what arrived while an agent was writing."""
    return list(
        session.exec(
            select(Message)
            .where(Message.ticket_id == t.id, col(Message.id) > mark)
            .order_by(col(Message.id))
        ).all()
    )


def newest_message_id(session: Session, t: Ticket) -> int:
    """The id of the ticket's latest stored message (ids only grow); 0 when it has none."""
    found = session.exec(select(sa.func.max(Message.id)).where(Message.ticket_id == t.id)).one()
    return int(found or 0)


def _requester(t: Ticket) -> Address:
    if not t.requester:
        raise RefusedError(f"ticket #{t.number} has no customer address to write to")
    return Address(t.requester_name, t.requester)


@dataclass(frozen=True, slots=True)
class Recipients:
    """Who a reply goes to, and whom the ticket knows but does not mail."""

    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    not_mailed: tuple[Address, ...]  # seen in later mail; an agent adds them with `cc`

    @property
    def keys(self) -> set[str]:
        return {a.key for a in (*self.to, *self.cc)}


def recipients(
    session: Session,
    settings: Settings,
    t: Ticket,
    *,
    to: Sequence[Address] = (),
    cc: Sequence[Address] = (),
) -> Recipients:
    """Who a reply to `t` goes to: the customer and the people copied on the ticket, or, with
    `to`, exactly `to` (and `cc`). Only people an agent or the customer's first message put
    on the ticket are mailed; addresses later mail brought in are listed as not mailed.

    A ticket that holds several customers' conversations (after a merge) has no single
    answer: the agent names the recipients with `to`, or the reply is refused."""
    ours = settings.our_addresses
    people = participants(session, t)
    seen = tuple(Address(p.name, p.address) for p in people if p.role == SEEN)
    if to:
        main = _unique(to, ours)
        copies = _unique(cc, ours | _keys(main))
        mailed = _keys(main) | _keys(copies)
        return Recipients(main, copies, tuple(a for a in seen if a.key not in mailed))
    customers = _unique(
        [
            *([Address(t.requester_name, t.requester)] if t.requester else []),
            *(Address(p.name, p.address) for p in people if p.role == REQUESTER),
        ],
        ours,
    )
    if len(customers) > 1:
        names = ", ".join(a.address for a in customers)
        raise UsageError(
            f"ticket #{t.number} holds the conversations of several customers ({names}) "
            "since a merge: name who gets this reply with --to (repeat it for more)"
        )
    if not customers:
        raise RefusedError(
            f"ticket #{t.number} has no customer address to write to: name one with --to"
        )
    copied = [Address(p.name, p.address) for p in people if p.role == CC]
    copies = _unique([*copied, *cc], ours | _keys(customers))
    return Recipients(customers, copies, seen)


def checked_address(name: str, address: str, what: str) -> Address:
    """An address an agent typed, or UsageError naming `what` (the option) when it is none."""
    local, at, domain = address.rpartition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in address):
        raise UsageError(f"not an email address: {address or name!r} ({what})")
    return Address(name, address)


def _unique(people: Iterable[Address], exclude: Iterable[str]) -> tuple[Address, ...]:
    found: dict[str, Address] = {}
    skip = set(exclude)
    for person in people:
        if person.key not in skip:
            found.setdefault(person.key, person)
    return tuple(found.values())


def _keys(people: Iterable[Address]) -> set[str]:
    return {a.key for a in people}


# ------------------------------------------------------------------------------------------
# Mail
# ------------------------------------------------------------------------------------------


def reply(
    session: Session,
    outgoing: Outgoing,
    t: Ticket,
    text: str,
    *,
    agent: str,
    now: datetime,
    cc: Sequence[Address] = (),
    to: Sequence[Address] = (),
    attachments: Sequence[FilePart] = (),
    status: str | None = None,
    from_address: str = "",
) -> tuple[Composed, int]:
    """Answer the customer and the people copied on the ticket (see `recipients`; `to`
    names the recipients instead). People given in `cc` or `to` are copied on the ticket's
    later replies too. The reply quotes only a message its recipients wrote. The ticket
    becomes `status` (open, pending: waiting for the customer, or closed) when given, else
    what MAILSUPPORT_REPLY_STATUS of its mailbox says (`status_after_reply`). It comes from
    the ticket's mailbox, or from `from_address`, another of our addresses."""
    if status is not None and status not in REPLY_STATUSES:
        raise UsageError(f"a reply leaves a ticket pending, open or closed, not {status!r}")
    if not text.strip():
        raise RefusedError("the reply is empty: nothing sent")
    if t.merged_into_id is not None:  # ticket() follows merges; a direct caller might not
        raise RefusedError(f"ticket #{t.number} was merged; reply to the ticket it joined")
    chosen = recipients(session, outgoing.settings, t, to=to, cc=cc)
    _keep_people(session, t, chosen, now)
    parent = _last_from(session, t, chosen.keys)
    composed, item_id = outgoing.send(
        session,
        "reply",
        t,
        to=list(chosen.to),
        cc=list(chosen.cc),
        parent=parent_of(parent) if parent else None,
        now=now,
        text=text,
        author=agent,
        attachments=attachments,
        language_hint=parent.text if parent else text,
        thread_reason=f"reply by {agent}",
        from_address=from_address,
    )
    if t.first_response_at is None:  # the SLA's first response: a person answered
        t.first_response_at = now
    who = ", ".join(a.address for a in (*chosen.to, *chosen.cc))
    record(session, t, "replied", f"to {who} as <{composed.message_id}>", agent, now)
    after = status or status_after_reply(t, outgoing.settings_of(t).reply_status)
    _set_status(session, t, after, agent, now)
    return composed, item_id


def status_after_reply(t: Ticket, setting: str) -> str:
    """The status a reply leaves `t` in when the agent names none: the setting for a ticket
    in work; a closed or spam ticket keeps its status (an afterthought reopens nothing)."""
    return t.status if t.status in ("closed", "spam") else setting


def _keep_people(session: Session, t: Ticket, chosen: Recipients, now: datetime) -> None:
    """Whom an agent mailed is copied from then on; a ticket without a customer gets the
    first person named with --to as its customer."""
    if not t.requester and chosen.to:
        t.requester, t.requester_name = chosen.to[0].key, chosen.to[0].name
        session.add(t)
        set_role(session, t, chosen.to[0], REQUESTER, now)
    known = {p.address: p.role for p in participants(session, t)}
    for person in (*chosen.to, *chosen.cc):
        if known.get(person.key) not in MAILED_ROLES:
            set_role(session, t, person, CC, now)


def reply_parent(session: Session, t: Ticket, people: Recipients) -> Message | None:
    """The message a reply to `people` answers and quotes (see `_last_from`)."""
    return _last_from(session, t, people.keys)


def _last_from(session: Session, t: Ticket, addresses: set[str]) -> Message | None:
    """The latest message one of `addresses` wrote on the ticket: the one a reply to them
    answers and quotes. Never another customer's, whose words are not theirs to read."""
    if not addresses:
        return None
    return session.exec(
        select(Message)
        .where(
            Message.ticket_id == t.id,
            Message.direction == "in",
            sa.func.lower(Message.from_address).in_(sorted(addresses)),
        )
        .order_by(col(Message.received_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()


def change_cc(
    session: Session, t: Ticket, changes: Sequence[str], *, agent: str, now: datetime
) -> Recipients:
    """`+addr` (or `addr`): mail addr with every reply from now on; `-addr`: stop (the
    address stays on the ticket as seen). The customer cannot be removed."""
    from mailsupport.parsing.addresses import address_pair

    added, removed = [], []
    for change in changes:
        sign, rest = (change[0], change[1:]) if change[:1] in "+-" else ("+", change)
        person = checked_address(*address_pair(rest), "write +addr or -addr")
        if sign == "-":
            if person.key == t.requester:
                raise RefusedError(
                    f"{person.address} is the customer of ticket #{t.number}: not removed"
                )
            if set_role(session, t, person, SEEN, now) in MAILED_ROLES:
                removed.append(person.key)
        elif set_role(session, t, person, CC, now) not in MAILED_ROLES:
            added.append(person.key)
    if added or removed:
        detail = " ".join([*(f"+{a}" for a in added), *(f"-{a}" for a in removed)])
        record(session, t, "cc", detail, agent, now)
    people = participants(session, t)

    def having(role: str) -> tuple[Address, ...]:
        return tuple(Address(p.name, p.address) for p in people if p.role == role)

    return Recipients(having(REQUESTER), having(CC), having(SEEN))


def note(session: Session, t: Ticket, text: str, *, agent: str, now: datetime) -> Message:
    """An internal note: on the ticket for agents, never mailed to anyone."""
    if not text.strip():
        raise RefusedError("the note is empty: nothing added")
    assert t.id is not None
    row = Message(
        ticket_id=t.id,
        message_id=f"note.{uuid.uuid4().hex}@mailsupport.invalid",  # never on the wire
        direction="note",
        from_name=agent,
        subject="(internal note)",
        date=now,
        received_at=now,
        text=text.strip("\n"),
        thread_reason="internal note",
        author=agent,
        created_at=now,
    )
    session.add(row)
    record(session, t, "note", first_line(text), agent, now)
    session.flush()
    return row


def first_line(text: str, limit: int = 80) -> str:
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ------------------------------------------------------------------------------------------
# Status and fields
# ------------------------------------------------------------------------------------------


def close(
    session: Session,
    outgoing: Outgoing,
    t: Ticket,
    *,
    agent: str,
    now: datetime,
    silent: bool = False,
    comment: str = "",
) -> tuple[str, int | None]:
    """Close the ticket; mail the customer the `closed` notice unless `silent`, the notice
    is turned off, or there is nobody or no way to send it. Returns what happened to the
    notice (one line) and its outbox item's id."""
    if t.status == "closed":
        raise RefusedError(f"ticket #{t.number} is closed already")
    spam = t.status == "spam"
    _set_status(session, t, "closed", agent, now)
    notice = "no closing notice (the ticket was spam)" if spam else ""
    notice = notice or _notice_off(outgoing.settings_of(t), t, silent)
    if not notice and _no_notify(session, t):
        notice = "no closing notice (a classification rule said notify = false)"
    if notice:
        return notice, None
    parent = _last_from(session, t, {t.requester})  # the customer's own words only
    composed, item_id = outgoing.send(
        session,
        "closed",
        t,
        to=[_requester(t)],
        parent=parent_of(parent) if parent else None,
        now=now,
        text=comment,
        author=agent,
        language_hint=parent.text if parent else "",
        thread_reason=f"closing notice, closed by {agent}",
    )
    return f"closing notice queued to {t.requester} as <{composed.message_id}>", item_id


def _no_notify(session: Session, t: Ticket) -> bool:
    """A rule's `notify = false` marked the ticket when it was opened."""
    found = select(TicketEvent.id).where(
        TicketEvent.ticket_id == t.id, TicketEvent.action == NO_NOTIFY
    )
    return session.exec(found.limit(1)).first() is not None


def _notice_off(settings: Settings, t: Ticket, silent: bool) -> str:
    if silent:
        return "no closing notice (--silent)"
    if not settings.closed_notice:
        return "no closing notice (MAILSUPPORT_CLOSED_NOTICE is off)"
    if not settings.smtp_host or not settings.support_address:
        return "no closing notice (outgoing mail is not set up)"
    if not t.requester:
        return "no closing notice (the ticket has no customer address)"
    # A notice to a robot is backscatter at best and a mail loop at worst.
    if t.automatic:
        return f"no closing notice (the ticket was opened by automatic mail: {t.automatic})"
    if is_noreply_address(t.requester):
        return f"no closing notice ({t.requester} is a mail-system or no-reply address)"
    return ""


def reopen(session: Session, t: Ticket, *, agent: str, now: datetime) -> None:
    if t.status not in ("closed", "pending"):
        raise RefusedError(f"ticket #{t.number} is {t.status}, not closed or pending")
    _set_status(session, t, "open", agent, now)


def set_pending(session: Session, t: Ticket, *, agent: str, now: datetime) -> None:
    """Wait for the customer: the ticket is pending until they write."""
    if t.status in ("pending", "closed"):
        raise RefusedError(f"ticket #{t.number} is {t.status}, not new or open")
    _set_status(session, t, "pending", agent, now)


def assign(session: Session, t: Ticket, assignee: str | None, *, agent: str, now: datetime) -> None:
    """Give the ticket to `assignee`; None takes it back from whoever has it."""
    assignee = " ".join(assignee.split()) if assignee else None
    if assignee == t.assignee:
        raise RefusedError(
            f"ticket #{t.number} is assigned to {assignee} already"
            if assignee
            else f"ticket #{t.number} is not assigned to anyone"
        )
    before = t.assignee or "nobody"
    record(session, t, "assigned", f"{before} -> {assignee or 'nobody'}", agent, now)
    t.assignee = assignee


def set_priority(
    session: Session,
    t: Ticket,
    level: str,
    *,
    agent: str,
    now: datetime,
    practice: Practice | None = None,
) -> None:
    """Change the priority; the SLA due times follow it when `practice` is given."""
    level = level.strip().lower()
    if level not in PRIORITIES:
        raise UsageError(f"unknown priority {level!r}: use one of {', '.join(PRIORITIES)}")
    if level == t.priority:
        raise RefusedError(f"ticket #{t.number} has priority {level} already")
    record(session, t, "priority", f"{t.priority} -> {level}", agent, now)
    t.priority = level
    if practice is not None and not t.automatic:  # automatic mail is never due
        practice.set_due_times(t)


def escalate(
    session: Session,
    outgoing: Outgoing,
    t: Ticket,
    *,
    agent: str,
    now: datetime,
    to_line: int | None = None,
    reason: str = "",
) -> tuple[str, int | None]:
    """Move the ticket to another line (the next one by default) and tell that line's team
    address when one is set. Returns what happened to the notice and its outbox item's id."""
    line = to_line if to_line is not None else t.line + 1
    check_line(line)
    if line == t.line:
        raise RefusedError(f"ticket #{t.number} is on line {line} already")
    why = " ".join(reason.split())
    what = "escalated" if line > t.line else "returned"
    record(session, t, what, f"line {t.line} -> {line}" + (f": {why}" if why else ""), agent, now)
    t.line = line
    team = outgoing.settings.team_addresses.get(line)
    if not team:
        return f"no notice (no address for line {line} in MAILSUPPORT_LINE_ADDRESSES)", None
    sender = outgoing.settings_of(t)
    if not sender.smtp_host or not sender.support_address:
        return "no notice (outgoing mail is not set up)", None
    item_id = outgoing.team_notice(
        session, t, to=team, subject=f"{what} to line {line}", now=now,
        text=_notice_text(session, t, line, why, agent),
    )  # fmt: skip
    return f"notice queued to {team}", item_id


def _notice_text(session: Session, t: Ticket, line: int, why: str, agent: str) -> str:
    last = last_from_customer(session, t)
    customer = f"{t.requester_name} <{t.requester}>" if t.requester_name else t.requester
    lines = [f'Ticket #{t.number} "{t.subject}" is now on line {line} (moved by {agent}).']
    lines += [f"Reason: {why}"] if why else []
    lines += [
        f"Customer: {customer or 'unknown'}",
        f"Priority: {t.priority}" + (f", type: {t.type}" if t.type else ""),
        f"See it with: mailsupport show {t.number}",
        "",
        "This is an internal notice: work the ticket in mailsupport, do not reply to this mail.",
    ]
    if last is not None:
        lines += ["", "The customer's last message:", "", last.text.strip()]
    return "\n".join(lines)


def parse_tag_changes(changes: Iterable[str]) -> tuple[list[str], list[str]]:
    """`+x` or `x` adds, `-x` removes. Tags are lowercased; letters, digits, `.:/-_`."""
    add: list[str] = []
    remove: list[str] = []
    for change in changes:
        change = change.strip()
        target = remove if change.startswith("-") else add
        tag = change.lstrip("+-").strip().lower()
        if not NAME.fullmatch(tag) or len(tag) > TAG_MAX:
            raise UsageError(
                f"not a tag: {change!r} (letters, digits and . : / - _, up to {TAG_MAX} "
                "characters; +tag adds, -tag removes)"
            )
        target.append(tag)
    if not add and not remove:
        raise UsageError("name tags to change: +tag adds, -tag removes")
    return add, remove


def tags_of(session: Session, t: Ticket) -> list[str]:
    return sorted(session.exec(select(TicketTag.tag).where(TicketTag.ticket_id == t.id)).all())


def change_tags(
    session: Session, t: Ticket, changes: Iterable[str], *, agent: str, now: datetime
) -> list[str]:
    """Apply the changes; returns the ticket's tags after them."""
    add, remove = parse_tag_changes(changes)
    assert t.id is not None
    current = set(tags_of(session, t))
    added = [x for x in dict.fromkeys(add) if x not in current and x not in remove]
    removed = [x for x in dict.fromkeys(remove) if x in current]
    for tag in added:
        session.add(TicketTag(ticket_id=t.id, tag=tag))
    for tag in removed:
        row = session.get(TicketTag, (t.id, tag))
        if row is not None:
            session.delete(row)
    if added or removed:
        detail = " ".join([*(f"+{x}" for x in added), *(f"-{x}" for x in removed)])
        record(session, t, "tags", detail, agent, now)
    session.flush()
    return sorted((current | set(added)) - set(removed))


def merge(session: Session, target: Ticket, source: Ticket, *, agent: str, now: datetime) -> None:
    """Move `source` into `target`: its messages, references (so replies to either land in
    target), participants, tags and history; `source` is closed and points at `target`."""
    if target.id == source.id:
        raise RefusedError(f"ticket #{target.number} cannot be merged into itself")
    assert target.id is not None and source.id is not None
    for tag in tags_of(session, source):
        if session.get(TicketTag, (target.id, tag)) is None:
            session.add(TicketTag(ticket_id=target.id, tag=tag))
        row = session.get(TicketTag, (source.id, tag))
        if row is not None:
            session.delete(row)
    merge_tickets(session, target, [source], f"merged by {agent}", now, actor=agent)
