"""What filing a message does to the ticket it opens or joins: the people it brings, the
customer it names, the ticket it follows, the tickets it merges, and the changes of a ticket
it joins. Pipeline._file decides which; these do it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlmodel import Session

from mailsupport.automated import is_automated
from mailsupport.mail import Address, Inbound
from mailsupport.store import CC, REQUESTER, SEEN, claims
from mailsupport.store import tickets as db
from mailsupport.store.models import Ticket
from mailsupport.threads import StrangerPolicy, ThreadDecision
from mailsupport.topicterms import found_at, ticket_terms


def merge_same_customer(
    session: Session,
    ticket: Ticket,
    decision: ThreadDecision,
    now: datetime,
    policy: StrangerPolicy,
) -> ThreadDecision:
    """Merge the other tickets the message shows to be this conversation, but only those
    of the same customer: one message must never make one customer's conversation
    another's. Under STRANGER_REPLIES=join (an open mailing list, where anyone answers
    anyone) the references decide alone, as the policy says."""
    others = [t for t in (claims.ticket(session, i) for i in decision.merge_ids) if t]
    same = [t for t in others if policy == "join" or t.requester == ticket.requester]
    kept = [t for t in others if t not in same]
    if same:
        db.merge_tickets(session, ticket, same, decision.reason, now)
    if not kept:
        return decision
    numbers = ", ".join(f"#{t.number}" for t in kept)
    note = f"; not merged with {numbers}: another customer's ticket"
    return replace(
        decision, merge_ids=tuple(t.id for t in same if t.id), reason=decision.reason + note
    )


def follow(session: Session, ticket: Ticket, decision: ThreadDecision, now: datetime) -> None:
    """Make the new ticket follow the one its sender referred to, on both sides, so the
    agents of the old ticket see it and `show` names it."""
    old = db.follow_merges(session, session.get(Ticket, decision.follows_id))
    if old is None or old.id == ticket.id:
        return
    ticket.follows_id = old.id
    session.add(ticket)
    detail = f"#{ticket.number} refers to it, from a sender who is not a participant"
    db.record_event(session, old.id, "followed", detail, now)  # type: ignore[arg-type]


def customer_of(message: Inbound, outgoing: bool, ours: frozenset[str]) -> Address | None:
    """Who the ticket is for: the sender, or for our own mail its first outside recipient."""
    if not outgoing:
        return message.from_
    return next((a for a in (*message.to, *message.cc) if a.key not in ours), None)


def people_of(
    message: Inbound,
    ticket: Ticket,
    new: bool,
    outgoing: bool,
    *,
    trusted: bool,
    ours: frozenset[str],
) -> list[tuple[Address, str]]:
    """The message's people and their roles on the ticket. Whom the customer's first
    message (or our own mail) names are mailed with replies from then on; whom later mail
    brings in is recorded as seen, mailed once an agent adds them. (The caller adds at
    most MAX_PARTICIPANTS of them.)"""
    chosen = outgoing or (new and trusted)
    sender = [message.from_] if message.from_ is not None and trusted else []
    everyone = [a for a in (*sender, *message.to, *message.cc) if a.key not in ours]
    people: dict[str, Address] = {}
    for person in everyone:
        people.setdefault(person.key, person)
    return [
        (a, REQUESTER if a.key == ticket.requester else CC if chosen else SEEN)
        for a in people.values()
    ]


def join(
    session: Session,
    ticket: Ticket,
    message: Inbound,
    title: str,
    customer: Address | None,
    at: datetime,
    outgoing: bool,
    now: datetime,
) -> None:
    """Update a ticket that a message joins."""
    assert ticket.id is not None
    renamed = at < ticket.created_at
    if renamed:
        # An older message arrived late (a parent after its reply): the earliest message
        # of the conversation names the ticket and its customer.
        ticket.created_at = at
        ticket.subject = title
        if customer is not None:
            ticket.requester, ticket.requester_name = customer.key, customer.name
    first = found_at(ticket.topic_terms)  # when the first incoming message was written
    if not outgoing and (first is None or at < first):  # this one is first now
        ticket.topic_terms = ticket_terms(ticket.subject, message.text, at, message.text_terms)
    elif renamed and ticket.topic_terms is not None:  # the same message, a new subject
        ticket.topic_terms = db.first_topic_terms(session, ticket.id, ticket.subject)
    ticket.updated_at = max(ticket.updated_at, at)
    # A person writing reopens; an out-of-office answer to our closing notice does not.
    reopen = not outgoing and ticket.status in ("pending", "closed")
    if reopen and not is_automated(message):
        if ticket.status == "closed":
            ticket.closed_at = None
            db.record_event(session, ticket.id, "reopened", "the customer wrote again", now)
        ticket.status = "open"
    session.add(ticket)


def closed_long_ago(
    ticket: Ticket | None, message: Inbound, days: int, now: datetime
) -> Ticket | None:
    """The ticket a message would reopen (`ticket`), when it was closed more than `days` ago
    (0 = never too long) and a person wrote: such mail opens a new ticket that follows it."""
    if not days or ticket is None or ticket.status != "closed" or ticket.closed_at is None:
        return None
    if now - ticket.closed_at <= timedelta(days=days) or is_automated(message):
        return None
    return ticket
